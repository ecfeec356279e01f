"""Invoke the template's handlers the way the local stack does, with the shared ``events/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devstack.iam import acting_as
from devstack.invoke import Invoker, LambdaContext, fill_event, template_invoker
from devstack.resources import load_template

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
_invoker: Invoker | None = None


def load_event(name: str, **values: str) -> dict[str, Any]:
    """An event from ``events/``, with ``code``, ``state``, ``nonce`` or ``receipt`` set."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return fill_event(event, values)


def invoke(logical_id: str, event: dict[str, Any]) -> Any:
    """Run one handler (code dir and Handler read from template.yaml) with a fresh context."""
    return _the_invoker().invoke(logical_id, event)


def _the_invoker() -> Invoker:
    global _invoker
    if _invoker is None:
        _invoker = template_invoker(load_template())
    return _invoker


def call_handler(logical_id: str, event: dict[str, Any], *, timeout_seconds: float | None = None) -> Any:
    """Run one handler directly (no invoker lock: callable from inside another invocation), with a
    context whose remaining time is ``timeout_seconds`` (default: the template's Timeout)."""
    invoker = _the_invoker()
    context: LambdaContext = invoker.context(logical_id)
    if timeout_seconds is not None:
        context.timeout_seconds = timeout_seconds
    with acting_as(logical_id):  # its clients sign with its role, where roles are enforced
        return invoker.loader.handler(logical_id)(event, context)


def follow_to_installed(response: dict[str, Any]) -> dict[str, Any]:
    """What a browser shows after a callback: a 303 to ``/installed`` is followed with its receipt
    cookie (GET /installed through the handler); any other answer is returned as it is."""
    if response.get("statusCode") != 303:
        return response
    assert response["headers"]["Location"].endswith("/installed"), response["headers"]
    receipts = [c for c in response.get("cookies", []) if c.startswith("__Host-ucoauth_receipt=")]
    assert len(receipts) == 1, response.get("cookies")
    receipt = receipts[0].split(";")[0].split("=", 1)[1]
    page: dict[str, Any] = invoke("OAuthBrowserFunction", load_event("installed.json", receipt=receipt))
    return page


def sqs_event(message: dict[str, Any], receive_count: int = 1) -> dict[str, Any]:
    """The revoke worker's SQS event carrying ``message``, delivered ``receive_count`` times."""
    event = load_event("sqs-revoke-webhook.json")
    event["Records"][0]["body"] = json.dumps(message)
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    return event


def signed_webhook_event(
    secret: str, merchant_id: str = "DEMO1", *, sent_at: float | None = None
) -> dict[str, Any]:
    """``events/webhook-uninstall.json`` for ``merchant_id``, signed now with ``secret`` under a fresh
    webhook id (Standard Webhooks); ``sent_at`` (epoch seconds) is the body's uninstall time."""
    import uuid
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    when = datetime.fromtimestamp(sent_at, tz=UTC) if sent_at is not None else datetime.now(UTC)
    body = json.dumps(
        {
            "type": "app.uninstalled",
            "timestamp": when.isoformat().replace("+00:00", "Z"),
            "data": {"merchant_id": merchant_id},
        }
    )
    msg_id = f"msg_{uuid.uuid4().hex}"
    at = datetime.now(UTC)
    event = load_event("webhook-uninstall.json")
    event["body"] = body
    event["headers"]["webhook-id"] = msg_id
    event["headers"]["webhook-timestamp"] = str(int(at.timestamp()))
    event["headers"]["webhook-signature"] = Webhook(secret).sign(msg_id, at, body)
    return event
