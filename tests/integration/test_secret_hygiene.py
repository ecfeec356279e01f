"""Secret hygiene: the whole story at DEBUG, then every output is scanned for every secret.

Install (browser handlers), refresh (worker, once failing), token access (handler), uninstall
(signed webhook + revoke worker), the admin API's answers. Scanned: every log line and EMF metric
the functions printed, every published event, every HTML page and API body, every DynamoDB item,
every exception text.
Secrets: the OAuth code, state and cookie nonce, every access and refresh token UltraCart issued,
the client secret and the webhook secret. Expected hits: zero.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from standardwebhooks.webhooks import Webhook

import ucoauth
from devstack.resources import LocalResources
from tests.support.installs import stored_tokens
from tests.support.lambdas import follow_to_installed, invoke, load_event
from tests.support.observer import observed_events
from tests.support.roles import harness_boto3_session
from ucoauth.adapters.services import Services, set_services
from ucoauth.base.observability import logger
from ucoauth.base.settings import Settings
from ucsandbox import Sandbox

CLIENT_SECRET = "client-secret-Zq81Lm4Xw9Rt2Vb7"
pytestmark = [pytest.mark.integration, pytest.mark.client_secret(CLIENT_SECRET)]
REDIRECT = "http://localhost:3000/oauth/callback"
LOG_BUFFER = io.StringIO()


@pytest.fixture
def story(aws_server: LocalResources, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Services, Sandbox]]:
    """The stack with a client secret configured (in Secrets Manager) and DEBUG logging."""
    arn = aws_server.parameters["UltraCartClientSecretArn"]  # deployed with it (the marker below)
    with Sandbox(client_secret=CLIENT_SECRET) as sandbox:
        env = aws_server.every_function_environment(
            overrides={
                "ULTRACART_BASE_URL": sandbox.base_url,
                "ULTRACART_CLIENT_ID": sandbox.client_id,
                "ULTRACART_CLIENT_SECRET_ARN": arn,
                "OAUTH_REDIRECT_URI": REDIRECT,
                "POWERTOOLS_LOG_LEVEL": "DEBUG",
            },
        )
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        ucoauth.reset()
        services = Services.from_settings(Settings.from_env({**env, "AWS_REGION": aws_server.region}))
        set_services(services)
        level = logger.log_level
        logger.setLevel("DEBUG")
        handler = logger.registered_handler
        stream = handler.setStream(LOG_BUFFER)  # type: ignore[attr-defined]
        try:
            yield services, sandbox
        finally:
            handler.setStream(stream)  # type: ignore[attr-defined]
            logger.setLevel(level)
            ucoauth.reset()


def admin_event(name: str, merchant_id: str) -> dict[str, Any]:
    event = load_event(name)
    event["rawPath"] = event["rawPath"].replace("/DEMO1", f"/{merchant_id}")
    if "merchant_id" in (event.get("pathParameters") or {}):
        event["pathParameters"]["merchant_id"] = merchant_id
    return event


def test_no_secret_reaches_any_output(
    story: tuple[Services, Sandbox],
    aws_server: LocalResources,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services, sandbox = story
    outputs: list[str] = []
    secrets: set[str] = {CLIENT_SECRET, aws_server.webhook_secret_value}

    # install
    start = invoke("OAuthBrowserFunction", load_event("install.json"))
    state = parse_qs(urlsplit(start["headers"]["Location"]).query)["state"][0]
    nonce = start["cookies"][0].split(";")[0].split("=", 1)[1]
    code = sandbox.issue_code("HYG1", REDIRECT)
    secrets |= {state, nonce, code}
    redirect = invoke(
        "OAuthBrowserFunction", load_event("callback-success.json", code=code, state=state, nonce=nonce)
    )
    assert redirect["statusCode"] == 303
    # The receipt nonce is a bearer secret of its own: only its cookie may carry it.
    receipt_cookie = next(c for c in redirect["cookies"] if c.startswith("__Host-ucoauth_receipt="))
    receipt = receipt_cookie.split(";")[0].split("=", 1)[1]
    secrets.add(receipt)
    outputs.append(
        json.dumps({**redirect, "cookies": [c for c in redirect["cookies"] if c != receipt_cookie]})
    )
    page = follow_to_installed(redirect)
    assert page["statusCode"] == 200 and "HYG1" in page["body"]
    outputs.append(json.dumps(page))
    replay = invoke(
        "OAuthBrowserFunction", load_event("callback-success.json", code=code, state=state, nonce=nonce)
    )
    assert replay["statusCode"] == 400
    outputs.append(json.dumps(replay))
    reload = invoke(
        "OAuthBrowserFunction", load_event("callback-reload.json", code=code, state=state, receipt=receipt)
    )
    assert reload["statusCode"] == 303
    outputs.append(json.dumps(reload))
    first = stored_tokens(services, "HYG1")
    secrets |= {first.access_token, first.refresh_token or ""}

    # refresh: once failing (exception path), then for real
    item = services.installations.get("HYG1")
    assert item is not None
    ddb = harness_boto3_session(aws_server.region).client("dynamodb", endpoint_url=aws_server.endpoint_url)
    ddb.update_item(
        TableName=aws_server.table_name,
        Key={"pk": {"S": "MERCHANT#HYG1"}, "sk": {"S": "INSTALLATION"}},
        UpdateExpression="SET due_at = :d",
        ExpressionAttributeValues={":d": {"N": str(int(time.time()) - 1)}},
    )
    event = load_event("sqs-refresh.json")
    event["Records"][0]["body"] = json.dumps({"merchant_id": "HYG1"})
    sandbox.add_fault("token", status=500, uc_rest_error=f"upstream echoed {first.refresh_token}")
    failed = invoke("RefreshWorkerFunction", event)
    assert len(failed["batchItemFailures"]) == 1
    assert invoke("RefreshWorkerFunction", event) == {"batchItemFailures": []}
    second = stored_tokens(services, "HYG1")
    secrets |= {second.access_token, second.refresh_token or ""}

    # token access
    tokens_event = load_event("tokens-get.json")
    tokens_event["rawPath"] = "/tokens/HYG1"
    tokens_event["pathParameters"] = {"merchant_id": "HYG1"}
    served = invoke("TokenApiFunction", tokens_event)
    assert served["statusCode"] == 200
    assert json.loads(served["body"])["access_token"] == second.access_token  # the one place it belongs

    # the operators' admin API: every answer is scanned; refresh now rotates the tokens again
    for name in (
        "admin-installations-list.json",
        "admin-installations-show.json",
        "admin-stats.json",
        "admin-installations-refresh.json",
        "admin-dead-letters-redrive.json",
    ):
        answer = invoke("AdminApiFunction", admin_event(name, "HYG1"))
        assert answer["statusCode"] in (200, 202), (name, answer)
        outputs.append(json.dumps(answer))
    second = stored_tokens(services, "HYG1")
    secrets |= {second.access_token, second.refresh_token or ""}

    # uninstall: signed webhook, then the revoke worker
    body = json.dumps(
        {
            "type": "app.uninstalled",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {"merchant_id": "HYG1"},
        }
    )
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    hook = load_event("webhook-uninstall.json")
    hook["body"] = body
    hook["headers"].update(
        {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(aws_server.webhook_secret_value).sign(msg_id, now, body),
        }
    )
    accepted = invoke("UninstallWebhookFunction", hook)
    assert accepted["statusCode"] == 202
    outputs.append(json.dumps(accepted))
    sqs = harness_boto3_session(aws_server.region).client("sqs", endpoint_url=aws_server.endpoint_url)
    messages = sqs.receive_message(QueueUrl=aws_server.revoke_queue_url, MaxNumberOfMessages=10)["Messages"]
    revoke_event = load_event("sqs-revoke-webhook.json")
    revoke_event["Records"][0]["body"] = messages[0]["Body"]
    outputs.append(messages[0]["Body"])
    assert invoke("RevokeWorkerFunction", revoke_event) == {"batchItemFailures": []}
    shown = invoke("AdminApiFunction", admin_event("admin-installations-show.json", "HYG1"))
    assert json.loads(shown["body"])["status"] == "uninstalled"
    outputs.append(json.dumps(shown))
    revoked = {r.form["token"] for r in sandbox.requests("revoke")}
    assert revoked == {second.access_token, second.refresh_token}

    # a device authorization (RFC 8628): its device code and user code are credentials too
    started = invoke("DeviceFlowFunction", load_event("device-start.json"))
    assert started["statusCode"] == 201
    device = json.loads(started["body"])  # the user code's one place: the answer to the caller
    poll_event = load_event("sqs-device-poll.json")
    poll_event["Records"][0]["body"] = json.dumps({"authorization_id": device["authorization_id"], "seq": 0})
    assert invoke("DeviceWorkerFunction", poll_event) == {"batchItemFailures": []}  # pending
    (first_poll,) = [r for r in sandbox.requests("token") if r.form.get("device_code")]
    device_code = first_poll.form["device_code"]
    secrets |= {device_code, device["user_code"], device["user_code"].replace("-", "")}
    # UltraCart failing with the device code echoed in its error header: the exception path
    sandbox.add_fault("token", status=500, uc_rest_error=f"upstream echoed {device_code}")
    sandbox.advance_time(6)
    poll_event["Records"][0]["body"] = json.dumps({"authorization_id": device["authorization_id"], "seq": 1})
    assert invoke("DeviceWorkerFunction", poll_event) == {"batchItemFailures": []}  # retried later
    sandbox.device(device["user_code"], "approve", merchant_id="HYG2")
    sandbox.advance_time(11)
    poll_event["Records"][0]["body"] = json.dumps({"authorization_id": device["authorization_id"], "seq": 2})
    assert invoke("DeviceWorkerFunction", poll_event) == {"batchItemFailures": []}
    status_event = load_event("device-status.json")
    status_event["rawPath"] = f"/device/authorizations/{device['authorization_id']}"
    status_event["pathParameters"] = {"authorization_id": device["authorization_id"]}
    shown_device = invoke("DeviceFlowFunction", status_event)
    assert json.loads(shown_device["body"]) == {"status": "installed", "merchant_id": "HYG2"}
    outputs.append(json.dumps(shown_device))
    third = stored_tokens(services, "HYG2")
    secrets |= {third.access_token, third.refresh_token or ""}

    # collect every output
    captured = capfd.readouterr()
    logs = LOG_BUFFER.getvalue()
    outputs += [captured.out, captured.err, logs]
    outputs += [json.dumps(e) for e in observed_events(aws_server)]
    outputs.append(repr(ddb.scan(TableName=aws_server.table_name)["Items"]))
    assert '"level":"INFO"' in logs  # the logs were captured
    assert '"level":"WARNING"' in logs
    assert "TokenRefreshFailed" in captured.out  # and the EMF metrics

    secrets.discard("")
    leaks = {
        secret[:6] + "...": [i for i, text in enumerate(outputs) if secret in text] for secret in secrets
    }
    assert {k: v for k, v in leaks.items() if v} == {}, "secrets found in outputs"
    assert len(secrets) >= 14
