"""Requests as the functions receive them, and the data they need, against the live stack."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.common import Live
    from ucoauth.adapters.services import Services

REDIRECT = "http://localhost:3000/oauth/callback"


def seed_installation(services: Services, live: Live, merchant_id: str, *, expires_in: int) -> None:
    """An installation whose tokens the sandbox really issued (expires_in=60 makes it due now)."""
    from ucoauth.adapters.crypto import TokenSet
    from ucoauth.adapters.ultracart import TokenResponse
    from ucoauth.core.issued import token_fields

    pair = live.sandbox.issue_tokens(merchant_id, expires_in=expires_in)
    answer = TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=expires_in,
        merchant_id=merchant_id,
    )
    fields = token_fields(services, merchant_id, TokenSet(pair.access_token, pair.refresh_token), answer)
    services.installations.save_installation(merchant_id, fields, now=services.now())


def _event(name: str, **replace: str) -> dict[str, Any]:
    from tests.support.lambdas import load_event

    return load_event(name, **replace)


def install_event() -> dict[str, Any]:
    return _event("install.json")


def callback_event(code: str, state: str, nonce: str) -> dict[str, Any]:
    return _event("callback-success.json", code=code, state=state, nonce=nonce)


def prepared_callback(services: Services, live: Live, merchant_id: str) -> dict[str, Any]:
    """A callback whose state is stored (as /install would have) and whose code UltraCart issued."""
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    services.states.put(
        state, browser_nonce=nonce, now=services.now(), ttl_seconds=services.settings.state_ttl_seconds
    )
    return callback_event(live.sandbox.issue_code(merchant_id, REDIRECT), state, nonce)


def tokens_event(merchant_id: str) -> dict[str, Any]:
    event = _event("tokens-get.json")
    event["rawPath"] = f"/tokens/{merchant_id}"
    event["requestContext"]["http"]["path"] = f"/tokens/{merchant_id}"
    event["pathParameters"] = {"merchant_id": merchant_id}
    return event


def webhook_event(secret: str, merchant_id: str) -> dict[str, Any]:
    """A Standard Webhooks uninstall signed with the stack's secret, fresh id and timestamp."""
    from standardwebhooks.webhooks import Webhook

    now = datetime.now(UTC)
    body = json.dumps(
        {"type": "app.uninstalled", "timestamp": now.isoformat(), "data": {"merchant_id": merchant_id}}
    )
    message_id = f"msg_{uuid.uuid4().hex}"
    event = _event("webhook-uninstall.json")
    event["body"] = body
    event["headers"].update(
        {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, now, body),
        }
    )
    return event


def refresh_event(merchant_id: str) -> dict[str, Any]:
    event = _event("sqs-refresh.json")
    event["Records"][0]["body"] = json.dumps({"merchant_id": merchant_id})
    return event


def revoke_event(merchant_id: str) -> dict[str, Any]:
    event = _event("sqs-revoke-webhook.json")
    body = json.loads(event["Records"][0]["body"])
    body["detail"]["merchant_id"] = merchant_id
    # After the installation, so it is not a late uninstall.
    body["time"] = datetime.fromtimestamp(time.time() + 1, tz=UTC).isoformat()
    event["Records"][0]["body"] = json.dumps(body)
    return event


def admin_show_event(merchant_id: str) -> dict[str, Any]:
    event = _event("admin-installations-show.json")
    event["rawPath"] = f"/admin/installations/{merchant_id}"
    event["requestContext"]["http"]["path"] = f"/admin/installations/{merchant_id}"
    event["pathParameters"] = {"merchant_id": merchant_id}
    return event


def device_start_event() -> dict[str, Any]:
    """``POST /device/authorizations`` without a body (the stack's default scope)."""
    return _event("device-start.json")


def started_device_authorization(services: Services) -> str:
    """The id of a device authorization UltraCart issued and the device flow stored (pending, its
    first poll queued), as a ``POST /device/authorizations`` leaves it (``services`` of a device
    function: its settings have the device section)."""
    from ucoauth.base.timing import Deadline
    from ucoauth.usecases.device import start_device_authorization

    deadline = Deadline(services.clock() + 30, services.clock)
    return start_device_authorization(services, scope=None, deadline=deadline).authorization_id


def device_poll_event(authorization_id: str, seq: int) -> dict[str, Any]:
    """The device queue's message for poll ``seq`` of ``authorization_id``."""
    from ucoauth.usecases.device import poll_message

    event = _event("sqs-device-poll.json")
    event["Records"][0]["body"] = poll_message(authorization_id, seq)
    return event


def schedule_event() -> dict[str, Any]:
    return _event("schedule-refresh.json")


def one_request(services: Services, live: Live, logical_id: str, tag: str) -> dict[str, Any]:
    """Seed what one typical request of ``logical_id`` needs and return that request's event."""
    merchant_id = f"MEM{tag}"
    if logical_id == "OAuthBrowserFunction":
        return prepared_callback(services, live, merchant_id)
    if logical_id == "TokenApiFunction":
        seed_installation(services, live, merchant_id, expires_in=3600)
        return tokens_event(merchant_id)
    if logical_id == "UninstallWebhookFunction":
        return webhook_event(live.resources.webhook_secret_value, merchant_id)
    if logical_id == "RefreshPlannerFunction":
        for index in range(10):
            seed_installation(services, live, f"{merchant_id}P{index}", expires_in=60)
        return schedule_event()
    if logical_id == "RefreshWorkerFunction":
        seed_installation(services, live, merchant_id, expires_in=60)
        return refresh_event(merchant_id)
    if logical_id == "RevokeWorkerFunction":
        seed_installation(services, live, merchant_id, expires_in=3600)
        return revoke_event(merchant_id)
    if logical_id == "AdminApiFunction":
        seed_installation(services, live, merchant_id, expires_in=3600)
        return admin_show_event(merchant_id)
    if logical_id == "DeviceFlowFunction":
        return device_start_event()
    if logical_id == "DeviceWorkerFunction":
        # Started as the device flow function would (its settings have the device section).
        from ucoauth.adapters.services import Services
        from ucoauth.base.settings import Settings

        device = Services.from_settings(Settings.from_env(live.function_env("DeviceFlowFunction")))
        return device_poll_event(started_device_authorization(device), 0)
    raise KeyError(logical_id)
