"""UltraCart refusing the app's own credentials, over real HTTP: moto's server and the UltraCart
sandbox, the functions invoked through their handlers and fed from their real queues.

The judge is the sandbox's live grants: a merchant's grant is never given up because the *app*
was refused (a rotated or mistyped client secret), no revoke counts as confirmed while it is,
and a rotation of the secret in Secrets Manager is picked up by warm functions (no redeploy).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack.resources import LocalResources
from tests.support.installs import seed_installation, stored_tokens
from tests.support.lambdas import invoke, load_event
from tests.support.observer import observed_events
from tests.support.roles import harness_boto3_session
from ucoauth.adapters.installations.model import ACTIVE, UNINSTALLED
from ucoauth.adapters.services import Services
from ucsandbox import Sandbox

pytestmark = [pytest.mark.integration, pytest.mark.client_secret("first-secret")]

REAUTH_EVENT = "Reauthorization Required"
REMOVED_EVENT = "Installation Removed"


@pytest.fixture
def client_secret(aws_server: LocalResources) -> str:
    """The app's UltraCart client secret in Secrets Manager (moto's server), the stack deployed
    with it (the marker below); returns its ARN."""
    return aws_server.parameters["UltraCartClientSecretArn"]


@pytest.fixture
def live_env(live_env: dict[str, str], client_secret: str) -> dict[str, str]:
    """The functions read the client secret from Secrets Manager; no pacing in the way."""
    return {**live_env, "ULTRACART_CLIENT_SECRET_ARN": client_secret, "REFRESH_PACE_LIMIT": "1000"}


@pytest.fixture(autouse=True)
def resent_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A message re-sent for later is visible at once; the delay it asked for is modelled by
    # moving the package's clock.
    monkeypatch.setattr("ucoauth.adapters.queues._MAX_DELAY", 0)


class Clock:
    """The package's clock: real time plus what the test let pass."""

    def __init__(self, services: Services) -> None:
        self.offset = 0.0
        services.clock = self

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(live: Services) -> Clock:
    return Clock(live)


def rotate_in_secrets_manager(aws: LocalResources, arn: str, value: str) -> None:
    secrets = harness_boto3_session(aws.region).client("secretsmanager", endpoint_url=aws.endpoint_url)
    secrets.put_secret_value(SecretId=arn, SecretString=value)


# -- the queues, fed to the workers as Lambda's event source mapping does --------------------------


def sqs(aws: LocalResources) -> Any:
    return harness_boto3_session(aws.region).client("sqs", endpoint_url=aws.endpoint_url)


def deliver(aws: LocalResources, queue_url: str, function: str) -> int:
    """One invocation of ``function`` with what is visible on its queue; successes are deleted,
    failures made visible again. Returns how many records were delivered."""
    client = sqs(aws)
    messages = client.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
    ).get("Messages", [])
    if not messages:
        return 0
    template = load_event("sqs-refresh.json")["Records"][0]
    records = [
        {
            **template,
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": {**template["attributes"], "ApproximateReceiveCount": "1"},
        }
        for m in messages
    ]
    failed = {f["itemIdentifier"] for f in invoke(function, {"Records": records})["batchItemFailures"]}
    for message in messages:
        if message["MessageId"] in failed:
            client.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        else:
            client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return len(messages)


def pending(aws: LocalResources, queue_url: str) -> int:
    attributes = sqs(aws).get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def run_planner_and_workers(aws: LocalResources) -> int:
    """The scheduled refresh: one planner run, then the refresh worker until its queue is empty."""
    planned: int = invoke("RefreshPlannerFunction", load_event("schedule-refresh.json"))["planned"]
    for _ in range(5):
        if not deliver(aws, aws.refresh_queue_url, "RefreshWorkerFunction"):
            break
    return planned


def queue_uninstall(aws: LocalResources, merchant_id: str) -> None:
    when = datetime.fromtimestamp(time.time() + 1, tz=UTC).isoformat().replace("+00:00", "Z")
    body = {
        "id": f"webhook:msg_{merchant_id}",
        "source": "webhook",
        "detail-type": "App Uninstalled",
        "time": when,
        "detail": {"merchant_id": merchant_id},
    }
    sqs(aws).send_message(QueueUrl=aws.revoke_queue_url, MessageBody=json.dumps(body))


def token_api(merchant_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    event = load_event("tokens-get.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/tokens/{merchant_id}"
    event["pathParameters"] = {"merchant_id": merchant_id}
    response = invoke("TokenApiFunction", event)
    return int(response["statusCode"]), json.loads(response["body"]), response["headers"]


def events_of(aws: LocalResources, seen: list[dict[str, Any]], detail_type: str, merchant_id: str) -> int:
    seen.extend(observed_events(aws))
    return sum(
        1 for e in seen if e["detail-type"] == detail_type and e["detail"]["merchant_id"] == merchant_id
    )


def held_or_revoked(live: Services, sandbox: Sandbox, merchant_id: str) -> str:
    """Every grant UltraCart honours for the merchant is the one the stack holds (active), or none
    is left (uninstalled). Anything else is named."""
    grants = sandbox.live_grants(merchant_id)
    installation = live.installations.get(merchant_id)
    if installation is None:
        return "no installation" + (", a grant live" if grants.any else "")
    if installation.status == UNINSTALLED:
        return "revoked" if not grants.any else "uninstalled, but a grant is live"
    if installation.status != ACTIVE:
        return f"{installation.status}, live refresh tokens: {len(grants.refresh_tokens)}"
    stored = stored_tokens(live, merchant_id).refresh_token
    return (
        "held" if grants.refresh_tokens == [stored] else f"active, live grants {len(grants.refresh_tokens)}"
    )


# -- (a) a wrong client secret during scheduled refreshes -------------------------------------------

MERCHANTS = ["APP1", "APP2", "APP3"]


def test_a_wrong_client_secret_during_scheduled_refreshes_keeps_every_merchant(
    live: Services,
    sandbox: Sandbox,
    aws_server: LocalResources,
    client_secret: str,
    clock: Clock,
) -> None:
    # Given merchants due for a refresh, and UltraCart expecting another secret than the stored one
    seeded = {m: seed_installation(live, sandbox, m, expires_in=60)[1] for m in MERCHANTS}
    before = {m: live.installations.get(m) for m in MERCHANTS}
    sandbox.set_client_secret("the-right-secret")
    seen: list[dict[str, Any]] = []
    observed_events(aws_server)

    # When the planner and the workers run
    assert run_planner_and_workers(aws_server) == len(MERCHANTS)

    # Then UltraCart refused the app on every call, and no merchant's state changed
    token_calls = sandbox.requests("token")
    assert len(token_calls) >= len(MERCHANTS)
    assert {r.status for r in token_calls} == {401}
    for merchant in MERCHANTS:
        after, was = live.installations.get(merchant), before[merchant]
        assert after is not None and was is not None
        assert (after.status, after.version, after.due_at) == (ACTIVE, was.version, was.due_at)
        assert held_or_revoked(live, sandbox, merchant) == "held"
        # The token API never answers 409: the stored token while it is valid ...
        status, body, _ = token_api(merchant)
        assert status == 200 and sandbox.token_is_valid(body["access_token"])
    assert pending(aws_server, aws_server.refresh_queue_url) == 0  # acknowledged, nothing dead-lettered
    assert pending(aws_server, aws_server.refresh_dlq_url) == 0
    # ... and 503 with Retry-After once it expired
    clock.advance(120)
    for merchant in MERCHANTS:
        status, body, headers = token_api(merchant)
        assert (status, body) == (503, {"error": "upstream_unavailable"})
        assert int(headers["Retry-After"]) >= 1
        assert events_of(aws_server, seen, REAUTH_EVENT, merchant) == 0

    # When the operator stores the right secret (no redeploy: the same warm functions)
    rotate_in_secrets_manager(aws_server, client_secret, "the-right-secret")
    assert run_planner_and_workers(aws_server) == len(MERCHANTS)

    # Then every merchant is refreshed and holds its grant
    for merchant in MERCHANTS:
        assert held_or_revoked(live, sandbox, merchant) == "held"
        assert stored_tokens(live, merchant).refresh_token != seeded[merchant]  # refreshed
        status, body, _ = token_api(merchant)
        assert status == 200 and sandbox.token_is_valid(body["access_token"])
        assert events_of(aws_server, seen, REAUTH_EVENT, merchant) == 0


# -- (b) a wrong client secret during an uninstall --------------------------------------------------


def test_a_wrong_client_secret_during_an_uninstall_confirms_nothing_then_completes(
    live: Services,
    sandbox: Sandbox,
    aws_server: LocalResources,
    client_secret: str,
    clock: Clock,
) -> None:
    # Given installed merchants who uninstall while UltraCart refuses the app's secret
    for merchant in MERCHANTS:
        seed_installation(live, sandbox, merchant, expires_in=3600)
        queue_uninstall(aws_server, merchant)
    sandbox.set_client_secret("the-right-secret")
    seen: list[dict[str, Any]] = []

    # When the revoke worker tries again and again, for longer than the revoke period
    for _ in range(3):
        assert deliver(aws_server, aws_server.revoke_queue_url, "RevokeWorkerFunction") == len(MERCHANTS)
        clock.advance(live.settings.revoke_retry_seconds)

    # Then nothing is confirmed or shredded, every grant is still live, and the uninstall is queued
    assert {r.status for r in sandbox.requests("revoke")} == {401}
    for merchant in MERCHANTS:
        installation = live.installations.get(merchant)
        assert installation is not None and installation.status == "uninstalling"
        assert installation.tokens_ciphertext is not None and not installation.revoke_confirmed
        assert sandbox.live_grants(merchant).any
        assert events_of(aws_server, seen, REMOVED_EVENT, merchant) == 0
        assert token_api(merchant)[0] == 404  # no longer served: the merchant uninstalled
    assert pending(aws_server, aws_server.revoke_queue_url) == len(MERCHANTS)
    assert pending(aws_server, aws_server.revoke_dlq_url) == 0

    # When the right secret is stored
    rotate_in_secrets_manager(aws_server, client_secret, "the-right-secret")
    deliver(aws_server, aws_server.revoke_queue_url, "RevokeWorkerFunction")

    # Then every uninstall completes with a confirmed revoke, and no grant is left
    for merchant in MERCHANTS:
        installation = live.installations.get(merchant)
        assert installation is not None and installation.status == UNINSTALLED
        assert installation.revoke_confirmed is True and installation.tokens_ciphertext is None
        assert held_or_revoked(live, sandbox, merchant) == "revoked"
        assert events_of(aws_server, seen, REMOVED_EVENT, merchant) == 1
    assert pending(aws_server, aws_server.revoke_queue_url) == 0


# -- (c) the secret rotated while refreshes and uninstalls run -------------------------------------


def test_rotating_the_client_secret_during_refreshes_and_uninstalls_loses_no_grant(
    live: Services,
    sandbox: Sandbox,
    aws_server: LocalResources,
    client_secret: str,
    clock: Clock,
) -> None:
    refreshed = ["ROT1", "ROT2", "ROT3"]
    uninstalled = ["UNI1", "UNI2", "UNI3"]
    sandbox.set_client_secret("first-secret")  # what Secrets Manager holds
    for merchant in refreshed:
        seed_installation(live, sandbox, merchant, expires_in=60)
    for merchant in uninstalled:
        seed_installation(live, sandbox, merchant, expires_in=7 * 86_400)  # not due in this test

    # The stack works with the first secret: refreshes, and one uninstall
    assert run_planner_and_workers(aws_server) == len(refreshed)
    queue_uninstall(aws_server, "UNI1")
    deliver(aws_server, aws_server.revoke_queue_url, "RevokeWorkerFunction")
    assert held_or_revoked(live, sandbox, "UNI1") == "revoked"

    # The secret is rotated at UltraCart first: the stack's is refused while it is not yet stored
    sandbox.set_client_secret("second-secret")
    clock.advance(3600)  # the refreshed tokens are due again
    queue_uninstall(aws_server, "UNI2")
    assert run_planner_and_workers(aws_server) == len(refreshed)
    deliver(aws_server, aws_server.revoke_queue_url, "RevokeWorkerFunction")
    assert {r.status for r in sandbox.requests("token")[-len(refreshed) :]} == {401}
    for merchant in refreshed:
        assert held_or_revoked(live, sandbox, merchant) == "held"
    uni2 = live.installations.get("UNI2")
    assert uni2 is not None and uni2.status == "uninstalling" and sandbox.live_grants("UNI2").any

    # Then the new secret is stored in Secrets Manager; the warm functions pick it up on the next
    # refusal and send the refused call once more
    rotate_in_secrets_manager(aws_server, client_secret, "second-secret")
    queue_uninstall(aws_server, "UNI3")
    assert run_planner_and_workers(aws_server) == len(refreshed)
    for _ in range(3):
        if not deliver(aws_server, aws_server.revoke_queue_url, "RevokeWorkerFunction"):
            break
    sent = [r.form.get("client_secret") for r in sandbox.requests() if r.endpoint in ("token", "revoke")]
    assert sent[-1] == "second-secret"

    # Every grant is held or revoked, as UltraCart sees it
    ends = {m: held_or_revoked(live, sandbox, m) for m in refreshed + uninstalled}
    assert ends == {**dict.fromkeys(refreshed, "held"), **dict.fromkeys(uninstalled, "revoked")}
    for merchant in refreshed:
        installation = live.installations.get(merchant)
        assert installation is not None and installation.access_expires_at is not None
        assert installation.access_expires_at > live.now()  # refreshed with the second secret
