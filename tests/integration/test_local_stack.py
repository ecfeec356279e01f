"""The local stack end to end over real HTTP: install, token API, scheduled refresh, uninstall.

One stack for the module (moto, template.yaml's resources, the UltraCart sandbox, the gateway,
all on free ports); each test uses its own merchant.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from standardwebhooks.webhooks import Webhook

from devstack import events as devstack_events
from devstack import invoke as devstack_invoke
from devstack import sign_webhook
from devstack.invoke import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY
from devstack.runner import Runner
from devstack.stack import LocalStack
from tests.support.browser_flow import (
    STATE_COOKIE,
    TIMEOUT,
    decide,
    install,
    set_cookies,
    start_install,
)

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("devstack_local_stack")]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # environ={}: always the sandbox, whatever ULTRACART_BASE_URL the shell exports.
    with LocalStack(environ={}) as started:
        yield started


@pytest.fixture
def sandbox(stack: LocalStack) -> Iterator[Any]:
    """The stack's sandbox with default behaviour again after the test."""
    assert stack.sandbox is not None
    yield stack.sandbox
    stack.sandbox.configure(expires_in="3600")
    stack.sandbox.clear_faults()


# -- helpers -----------------------------------------------------------------------------------


def signed_get(url: str) -> requests.Response:
    request = AWSRequest(method="GET", url=url)
    credentials = Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY)
    SigV4Auth(credentials, "execute-api", "us-east-1").add_auth(request)
    return requests.get(url, headers=dict(request.headers.items()), timeout=TIMEOUT)


def get_token(stack: LocalStack, merchant_id: str) -> requests.Response:
    return signed_get(f"{stack.gateway_url}/tokens/{merchant_id}")


def installation_item(stack: LocalStack, merchant_id: str) -> dict[str, Any]:
    item = stack.client("dynamodb").get_item(
        TableName=stack.resources.table_name,
        Key={"pk": {"S": f"MERCHANT#{merchant_id}"}, "sk": {"S": "INSTALLATION"}},
        ConsistentRead=True,
    )["Item"]
    assert isinstance(item, dict)
    return item


def webhook_secret(stack: LocalStack) -> str:
    """The secret the template created, read from the local Secrets Manager."""
    answer = stack.client("secretsmanager").get_secret_value(SecretId=stack.resources.webhook_secret_arn)
    return str(answer["SecretString"])


# -- install -----------------------------------------------------------------------------------


def test_install_redirects_to_the_sandbox_with_a_state_bound_to_a_host_cookie(stack: LocalStack) -> None:
    started = start_install(stack)
    target = urlsplit(started.authorize_url)
    assert stack.sandbox is not None
    assert started.authorize_url.startswith(f"{stack.sandbox.base_url}/oauth/authorize?")
    query = {key: values[0] for key, values in parse_qs(target.query).items()}
    assert set(query) == {"response_type", "client_id", "redirect_uri", "state"}
    assert query["response_type"] == "code"
    assert query["client_id"] == stack.sandbox.client_id
    assert query["redirect_uri"] == f"http://localhost:{stack.gateway.port}/oauth/callback"
    assert len(query["state"]) >= 22  # 128 bits or more

    attributes = [part.strip() for part in started.cookie_header.split(";")]
    assert attributes[0].startswith(f"{STATE_COOKIE}=")
    assert len(attributes[0]) > len(STATE_COOKIE) + 20
    assert {"HttpOnly", "Secure", "SameSite=Lax", "Path=/"} <= set(attributes)
    assert not any(a.lower().startswith("domain=") for a in attributes)


def test_install_callback_and_token_api(stack: LocalStack, sandbox: Any) -> None:
    page = install(stack, "LS1")
    assert "Your UltraCart app is installed" in page.text
    assert "LS1" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    cleared = next(c for c in set_cookies(page.history[0]) if c.startswith(f"{STATE_COOKIE}="))
    assert cleared.startswith(f"{STATE_COOKIE}=;") and "Max-Age=0" in cleared

    token = get_token(stack, "LS1")
    assert token.status_code == 200, token.text
    body = token.json()
    assert set(body) == {
        "merchant_id",
        "access_token",
        "token_type",
        "expires_at",
        "scope",
        "version",
        "app_account_id",
    }
    assert body["app_account_id"] is None  # installed without an install link
    assert body["merchant_id"] == "LS1"
    assert body["version"] == int(installation_item(stack, "LS1")["version"]["N"])
    assert body["token_type"] == "bearer"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", body["expires_at"])
    assert sandbox.token_is_valid(body["access_token"])
    calls = [r for r in sandbox.requests("token") if r.merchant_id == "LS1"]
    assert [(r.grant_type, r.status) for r in calls] == [("authorization_code", 200)]


def test_token_api_requires_a_signature_and_knows_unknown_merchants(stack: LocalStack) -> None:
    unsigned = requests.get(f"{stack.gateway_url}/tokens/LS1", timeout=TIMEOUT)
    assert unsigned.status_code == 403
    assert unsigned.json() == {"message": "Forbidden"}
    unknown = get_token(stack, "NOBODY")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not_installed"}


def test_declined_consent_shows_the_cancelled_page(stack: LocalStack) -> None:
    started = start_install(stack)
    callback = decide(stack, started, "LS2", "deny")
    assert "error=access_denied" in callback
    response = requests.get(callback, headers={"Cookie": started.cookie}, timeout=TIMEOUT)
    assert response.status_code == 200
    assert "Installation of Your UltraCart app cancelled" in response.text
    assert get_token(stack, "LS2").status_code == 404


def test_callback_without_the_cookie_is_refused(stack: LocalStack) -> None:
    started = start_install(stack)
    callback = decide(stack, started, "LS3", "approve")
    response = requests.get(callback, timeout=TIMEOUT)
    assert response.status_code == 400
    assert "timed out" in response.text
    assert get_token(stack, "LS3").status_code == 404


# -- refresh on the schedule -------------------------------------------------------------------


def test_runner_refreshes_a_short_lived_token_without_the_token_api(stack: LocalStack, sandbox: Any) -> None:
    sandbox.configure(expires_in="60")
    install(stack, "LS4")
    before = installation_item(stack, "LS4")
    assert int(before["token_lifetime"]["N"]) == 60

    results = stack.runner.run_planner_once()
    assert results[0]["planned"] >= 1
    assert stack.runner.drain_once("RefreshQueue", wait_seconds=0) >= 1

    after = installation_item(stack, "LS4")
    assert int(after["version"]["N"]) > int(before["version"]["N"])
    assert after["tokens"]["B"] != before["tokens"]["B"]
    grants = [(r.grant_type, r.status) for r in sandbox.requests("token") if r.merchant_id == "LS4"]
    assert grants == [("authorization_code", 200), ("refresh_token", 200)]
    # The refreshed token is what the token API serves now.
    token = get_token(stack, "LS4").json()
    assert sandbox.token_is_valid(token["access_token"])


def _queue_counts(stack: LocalStack, queue_url: str) -> tuple[int, int]:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


@pytest.mark.parametrize("outcome", ["partial_failure", "exception", "malformed_failures"])
def test_queue_drain_deletes_like_an_event_source_mapping(stack: LocalStack, outcome: str) -> None:
    """Everything but the reported failures is deleted; nothing when the handler raises."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def worker(logical_id: str, event: dict[str, Any]) -> Any:
        seen.append((logical_id, event))
        second = event["Records"][1]["messageId"]
        if outcome == "exception":
            raise RuntimeError("worker failed")
        if outcome == "malformed_failures":
            return {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}
        return {"batchItemFailures": [{"itemIdentifier": second}]}

    runner = Runner(stack.resources, worker, event_source_client=stack.event_source_client)
    queue_url = stack.resources.refresh_queue_url
    sqs = stack.client("sqs")
    for index in range(3):
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"merchant_id": f"Q{index}"}))
    try:
        assert runner.drain_once("RefreshQueue", wait_seconds=0) == 3
        logical_id, event = seen[0]
        assert logical_id == "RefreshWorkerFunction"
        record = event["Records"][0]
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"] == stack.resources.attributes["RefreshQueue.Arn"]
        assert record["awsRegion"] == "us-east-1"
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
        assert [json.loads(r["body"])["merchant_id"] for r in event["Records"]] == ["Q0", "Q1", "Q2"]
        assert all(r["receiptHandle"] and r["messageId"] for r in event["Records"])
        left = {"partial_failure": 1, "exception": 3, "malformed_failures": 3}[outcome]
        assert _queue_counts(stack, queue_url) == (0, left)
    finally:
        # Clean up with the handles the worker got (PurgeQueue is allowed once a minute).
        for _, delivered in seen:
            for record in delivered["Records"]:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])
        assert _queue_counts(stack, queue_url) == (0, 0)


def test_planner_gets_a_scheduler_event(stack: LocalStack) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    runner = Runner(stack.resources, lambda logical_id, event: seen.append((logical_id, event)))
    runner.run_planner_once()
    ((logical_id, event),) = seen
    assert logical_id == "RefreshPlannerFunction"
    assert event["source"] == "aws.scheduler"
    assert event["detail-type"] == "Scheduled Event"
    assert event["account"] == stack.resources.account_id


# -- uninstall ---------------------------------------------------------------------------------


def test_signed_webhook_uninstalls_and_revokes_at_ultracart(stack: LocalStack, sandbox: Any) -> None:
    install(stack, "LS5")
    access_token = get_token(stack, "LS5").json()["access_token"]

    signed = sign_webhook.sign_uninstall(webhook_secret(stack), "LS5")
    # The library the senders use verifies what the helper made.
    Webhook(webhook_secret(stack)).verify(signed.body, signed.headers)
    url = f"{stack.gateway_url}/webhooks/uninstall"
    response = requests.post(url, data=signed.body.encode(), headers=signed.headers, timeout=TIMEOUT)
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "queued"}
    again = requests.post(url, data=signed.body.encode(), headers=signed.headers, timeout=TIMEOUT)
    assert again.status_code == 202
    assert again.json() == {"status": "duplicate"}

    assert stack.runner.drain_until_empty(timeout=10) >= 1
    gone = get_token(stack, "LS5")
    assert gone.status_code == 404
    assert gone.json() == {"error": "not_installed"}
    revokes = [r for r in sandbox.requests("revoke") if r.merchant_id == "LS5"]
    assert [r.status for r in revokes] == [200, 200]
    revoked = {r.form["token"] for r in revokes}
    assert access_token in revoked
    assert not sandbox.token_is_valid(access_token)
    assert not any(sandbox.refresh_token_is_valid(token) for token in revoked)


def post_uninstall(stack: LocalStack, merchant_id: str, *, stamped: datetime) -> None:
    signed = sign_webhook.sign_uninstall(webhook_secret(stack), merchant_id, uninstalled_at=stamped)
    url = f"{stack.gateway_url}/webhooks/uninstall"
    response = requests.post(url, data=signed.body.encode(), headers=signed.headers, timeout=TIMEOUT)
    assert response.status_code == 202, response.text
    assert stack.runner.drain_until_empty(timeout=10) >= 1


def test_an_uninstall_stamped_after_the_state_but_before_our_write_uninstalls(
    stack: LocalStack, sandbox: Any
) -> None:
    # The state is issued at T; the merchant takes a while on the consent page; our write lands
    # later. UltraCart stamps the uninstall T + 1: before our write, after the install began.
    started = start_install(stack)
    state_issued = datetime.now(UTC)
    time.sleep(2.5)
    callback = decide(stack, started, "LS8", "approve")
    response = requests.get(
        callback, headers={"Cookie": started.cookie}, allow_redirects=False, timeout=TIMEOUT
    )
    assert response.status_code == 303, response.text
    stamped = state_issued + timedelta(seconds=1)
    assert stamped.timestamp() < int(installation_item(stack, "LS8")["installed_at"]["N"])
    assert get_token(stack, "LS8").status_code == 200

    post_uninstall(stack, "LS8", stamped=stamped)
    gone = get_token(stack, "LS8")
    assert gone.status_code == 404, gone.text
    assert [r.status for r in sandbox.requests("revoke") if r.merchant_id == "LS8"] == [200, 200]


def test_an_earlier_installations_uninstall_arriving_late_leaves_the_reinstall_alone(
    stack: LocalStack, sandbox: Any
) -> None:
    install(stack, "LS9")
    install(stack, "LS9")  # the reinstall
    assert installation_item(stack, "LS9")["generation"]["N"] == "2"
    # Stamped well before the reinstall began (beyond the clock-skew allowance)
    post_uninstall(stack, "LS9", stamped=datetime.now(UTC) - timedelta(minutes=10))
    assert get_token(stack, "LS9").status_code == 200
    assert installation_item(stack, "LS9")["status"]["S"] == "active"


def test_unsigned_webhook_is_refused(stack: LocalStack) -> None:
    signed = sign_webhook.sign_uninstall("d2hzZWNyZXR3aHNlY3JldHdoc2VjcmV0", "LS1")
    response = requests.post(
        f"{stack.gateway_url}/webhooks/uninstall",
        data=signed.body.encode(),
        headers=signed.headers,
        timeout=TIMEOUT,
    )
    assert response.status_code == 401


# -- the developer tools (make invoke, sign_webhook) -------------------------------------------


def test_invoke_and_sign_webhook_tools(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    stack.write_state(state)
    install(stack, "DEMO1")
    capsys.readouterr()  # the handlers' own logs and metrics so far

    assert (
        devstack_invoke.main(
            ["TokenApiFunction", str(ROOT / "events" / "tokens-get.json"), "--state", str(state)]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["statusCode"] == 200
    assert json.loads(result["body"])["merchant_id"] == "DEMO1"

    assert sign_webhook.main(["DEMO1", "--state", str(state)]) == 0
    command = capsys.readouterr().out.strip()
    assert command.startswith(f"curl -sS -i -X POST {stack.gateway_url}/webhooks/uninstall ")
    sent = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert sent.stdout.startswith("HTTP/1.1 202")
    stack.runner.drain_until_empty(timeout=10)
    assert get_token(stack, "DEMO1").status_code == 404


def test_make_events_writes_live_events_the_stack_accepts(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the running stack / When make events writes its live events
    state = tmp_path / "state.json"
    stack.write_state(state)
    assert devstack_events.main(["--state", str(state), "--out", str(tmp_path)]) == 0
    capsys.readouterr()

    # Then the callback completes an install, and the webhook is accepted, each as written
    def run(function: str, name: str) -> dict[str, Any]:
        assert devstack_invoke.main([function, str(tmp_path / name), "--state", str(state)]) == 0
        answer: dict[str, Any] = json.loads(capsys.readouterr().out)
        return answer

    assert run("OAuthBrowserFunction", "callback-success.json")["statusCode"] == 303
    assert run("UninstallWebhookFunction", "webhook-uninstall.json")["statusCode"] == 202
    stack.runner.drain_until_empty(timeout=10)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["TokenApiFunction"]["TABLE_NAME"] == stack.environment["TABLE_NAME"]
    assert env["TokenApiFunction"]["AWS_ENDPOINT_URL"].startswith("http://host.docker.internal:")


def test_invoke_tool_explains_a_stopped_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = devstack_invoke.main(
        ["TokenApiFunction", "events/tokens-get.json", "--state", str(tmp_path / "none.json")]
    )
    assert code == 2
    assert "make dev" in capsys.readouterr().err


def test_a_reinstall_revokes_the_grant_it_replaces_and_an_uninstall_leaves_none(
    stack: LocalStack, sandbox: Any
) -> None:
    install(stack, "LS9")
    first = get_token(stack, "LS9").json()["access_token"]
    install(stack, "LS9")  # the merchant installs again: UltraCart issues a second grant
    second = get_token(stack, "LS9").json()["access_token"]
    assert second != first
    stack.runner.drain_until_empty(timeout=10)
    # The replaced grant is revoked at UltraCart: only the stored one is live.
    live = sandbox.live_grants("LS9")
    assert live.access_tokens == [second]
    assert len(live.refresh_tokens) == 1

    signed = sign_webhook.sign_uninstall(webhook_secret(stack), "LS9")
    url = f"{stack.gateway_url}/webhooks/uninstall"
    response = requests.post(url, data=signed.body.encode(), headers=signed.headers, timeout=TIMEOUT)
    assert response.status_code == 202, response.text
    stack.runner.drain_until_empty(timeout=10)
    assert not sandbox.live_grants("LS9").any  # nothing UltraCart honours outlives the uninstall


# -- every role enforced -------------------------------------------------------------------------


def test_an_uninstall_of_a_damaged_row_completes_under_the_revoke_workers_own_role(
    stack: LocalStack, sandbox: Any
) -> None:
    # Given an installation whose stored ciphertext is damaged (KMS rejects it; the key works)
    install(stack, "LS9")
    stack.client("dynamodb").update_item(
        TableName=stack.resources.table_name,
        Key={"pk": {"S": "MERCHANT#LS9"}, "sk": {"S": "INSTALLATION"}},
        UpdateExpression="SET tokens = :damaged",
        ExpressionAttributeValues={":damaged": {"B": b"not a KMS ciphertext"}},
    )
    # When the merchant uninstalls, and the revoke worker runs under its own role
    signed = sign_webhook.sign_uninstall(webhook_secret(stack), "LS9")
    url = f"{stack.gateway_url}/webhooks/uninstall"
    assert (
        requests.post(url, data=signed.body.encode(), headers=signed.headers, timeout=TIMEOUT).status_code
        == 202
    )
    stack.runner.drain_until_empty(timeout=10)
    # Then the uninstall completes: no ciphertext kept, a tombstone, no KMS right missing
    item = installation_item(stack, "LS9")
    assert item["status"]["S"] == "uninstalled"
    assert "tokens" not in item
    assert get_token(stack, "LS9").json() == {"error": "not_installed"}
    assert stack.take_violations() == []
