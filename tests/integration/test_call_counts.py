"""Calls per operation (deterministic counts; the budget in issue "Benchmarks" is a CI assertion).

AWS calls are counted with botocore event hooks on the package's own clients, UltraCart calls
with the sandbox's request log; everything runs over real HTTP (moto's server, the sandbox).

The operations that call UltraCart are counted in each budget scope (``UltraCartBudgetScope``).
In the ``merchant`` scope each call costs one write (its unit of the budget): the budgets of
issue "Benchmarks". Where UltraCart's concurrency limit covers the whole application
(``application``, the default, and ``both``), the write that takes the unit also takes the line
(one call at a time), and giving the line back after the call is one more write per call;
``both`` counts a call on a known merchant's behalf in the merchant's windows too, one more.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from standardwebhooks.webhooks import Webhook

from devstack.resources import LocalResources
from tests.support.calls import AwsCallCounter
from tests.support.installs import seed_installation
from tests.support.lambdas import follow_to_installed, invoke, load_event
from ucoauth.adapters.services import Services
from ucoauth.usecases.tokens import clear_token_cache, get_access_token
from ucsandbox import Sandbox

pytestmark = pytest.mark.integration
REDIRECT = "http://localhost:3000/oauth/callback"
SCOPES = ["application", "merchant", "both"]
# Writes per UltraCart call beyond its unit of the budget: the line given back; and in ``both``,
# for a call on a known merchant's behalf, the unit in the merchant's windows.
LINE = {"application": 1, "merchant": 0, "both": 1}
MERCHANT_UNIT = {"application": 0, "merchant": 0, "both": 1}
InScope = Callable[..., Services]


def install_via_handlers(sandbox: Sandbox, merchant_id: str) -> dict[str, object]:
    start = invoke("OAuthBrowserFunction", load_event("install.json"))
    state = parse_qs(urlsplit(start["headers"]["Location"]).query)["state"][0]
    nonce = start["cookies"][0].split(";")[0].split("=", 1)[1]
    code = sandbox.issue_code(merchant_id, REDIRECT)
    return invoke(  # type: ignore[no-any-return]
        "OAuthBrowserFunction", load_event("callback-success.json", code=code, state=state, nonce=nonce)
    )


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize(("include_merchant_id", "uc_calls"), [(True, 1), (False, 2)])
def test_callback_costs_5_aws_calls_plus_one_budget_unit_per_ultracart_call(
    live_in_scope: InScope, sandbox: Sandbox, include_merchant_id: bool, uc_calls: int, scope: str
) -> None:
    live_in_scope(scope)
    # The code exchange and /oauth/me come before UltraCart said whose authorization it is:
    # they count in the application's windows in every scope.
    per_call = 1 + LINE[scope]
    sandbox.configure(include_merchant_id=include_merchant_id)
    counter = AwsCallCounter()
    start = invoke("OAuthBrowserFunction", load_event("install.json"))
    assert counter.calls == ["dynamodb.PutItem"]
    state = parse_qs(urlsplit(start["headers"]["Location"]).query)["state"][0]
    nonce = start["cookies"][0].split(";")[0].split("=", 1)[1]
    counter.reset()
    sandbox.clear_requests()
    code = sandbox.issue_code("COUNT1", REDIRECT)
    response = invoke(
        "OAuthBrowserFunction", load_event("callback-success.json", code=code, state=state, nonce=nonce)
    )
    assert response["statusCode"] == 303
    assert counter.count <= 5 + per_call * uc_calls, counter.calls
    assert counter.by_operation() == {
        "dynamodb.DeleteItem": 1,  # the state
        "kms.GenerateDataKey": 1,  # the data key the new tokens are sealed with
        # the installation, and one unit of the UltraCart budget per UltraCart call (+ the line)
        "dynamodb.UpdateItem": 1 + per_call * uc_calls,
        "events.PutEvents": 1,
        "dynamodb.PutItem": 1,  # the success receipt behind the clean /installed URL
    }
    assert len(sandbox.requests()) == uc_calls
    # The success page at /installed (and every reload of it): one read, no UltraCart call.
    counter.reset()
    sandbox.clear_requests()
    assert follow_to_installed(response)["statusCode"] == 200
    assert counter.by_operation() == {"dynamodb.GetItem": 1}
    assert sandbox.requests() == []


@pytest.mark.parametrize("scope", SCOPES)
def test_a_callback_through_an_install_session_costs_one_aws_call_more(
    live_in_scope: InScope, sandbox: Sandbox, scope: str
) -> None:
    live_in_scope(scope)
    per_call = 1 + LINE[scope]
    counter = AwsCallCounter()
    create = load_event("install-sessions-create.json")
    created = invoke("TokenApiFunction", create)
    assert created["statusCode"] == 201
    assert counter.by_operation() == {"dynamodb.PutItem": 1}  # the session
    session = parse_qs(urlsplit(json.loads(created["body"])["install_url"]).query)["session"][0]
    counter.reset()
    event = load_event("install.json")
    event["rawQueryString"] = f"session={session}"
    start = invoke("OAuthBrowserFunction", event)
    assert start["statusCode"] == 302
    assert counter.by_operation() == {"dynamodb.GetItem": 1, "dynamodb.PutItem": 1}  # session, state
    state = parse_qs(urlsplit(start["headers"]["Location"]).query)["state"][0]
    nonce = start["cookies"][0].split(";")[0].split("=", 1)[1]
    counter.reset()
    sandbox.clear_requests()
    code = sandbox.issue_code("COUNT9", REDIRECT)
    response = invoke(
        "OAuthBrowserFunction", load_event("callback-success.json", code=code, state=state, nonce=nonce)
    )
    assert response["statusCode"] == 303
    # The callback without a session, plus the one conditional write that marks the session used.
    assert counter.count == 5 + 1 + per_call, counter.calls
    assert counter.by_operation() == {
        "dynamodb.DeleteItem": 1,  # the state (it carries the session's link: no read of it)
        "kms.GenerateDataKey": 1,  # the data key the new tokens are sealed with
        # the session marked used, the installation (linked in that same write), the budget
        "dynamodb.UpdateItem": 2 + per_call,
        "events.PutEvents": 1,
        "dynamodb.PutItem": 1,  # the success receipt
    }
    assert len(sandbox.requests()) == 1


def test_a_deny_costs_one_read_of_its_state_and_no_ultracart_call(live: Services, sandbox: Sandbox) -> None:
    start = invoke("OAuthBrowserFunction", load_event("install.json"))
    state = parse_qs(urlsplit(start["headers"]["Location"]).query)["state"][0]
    nonce = start["cookies"][0].split(";")[0].split("=", 1)[1]
    counter = AwsCallCounter()
    sandbox.clear_requests()
    event = load_event("callback-success.json", code="unused", state=state, nonce=nonce)
    event["rawQueryString"] = f"error=access_denied&state={state}"
    response = invoke("OAuthBrowserFunction", event)
    assert response["statusCode"] == 200
    assert counter.by_operation() == {"dynamodb.GetItem": 1}  # was the state issued to this tab?
    assert sandbox.requests() == []


@pytest.mark.parametrize("scope", SCOPES)
def test_refresh_costs_at_most_6_aws_calls_and_1_ultracart_call(
    live_in_scope: InScope, sandbox: Sandbox, scope: str
) -> None:
    live = live_in_scope(scope)
    extra = LINE[scope] + MERCHANT_UNIT[scope]
    seed_installation(live, sandbox, "COUNT2", expires_in=60)
    counter = AwsCallCounter()
    sandbox.clear_requests()
    event = load_event("sqs-refresh.json")
    event["Records"][0]["body"] = json.dumps({"merchant_id": "COUNT2"})
    assert invoke("RefreshWorkerFunction", event) == {"batchItemFailures": []}
    assert counter.count <= 6 + extra, counter.calls
    # lease, pace, budget (+ the line given back, + the merchant's unit), token write
    assert counter.by_operation() == {
        "dynamodb.UpdateItem": 4 + extra,
        "kms.Decrypt": 1,
        "kms.GenerateDataKey": 1,
    }
    assert [r.grant_type for r in sandbox.requests()] == ["refresh_token"]


def test_token_access_costs_2_aws_calls_cold_1_warm_and_0_from_the_cache(
    live: Services, sandbox: Sandbox
) -> None:
    seed_installation(live, sandbox, "COUNT3", expires_in=3600)
    counter = AwsCallCounter()
    sandbox.clear_requests()
    event = load_event("tokens-get.json")
    event["rawPath"] = "/tokens/COUNT3"
    event["pathParameters"] = {"merchant_id": "COUNT3"}
    assert invoke("TokenApiFunction", event)["statusCode"] == 200
    # The first read in this container opens the data key with KMS...
    assert counter.by_operation() == {"dynamodb.GetItem": 1, "kms.Decrypt": 1}
    counter.reset()
    # ...a warm read finds it in memory: one DynamoDB read, nothing else.
    for _ in range(3):
        assert invoke("TokenApiFunction", event)["statusCode"] == 200
    assert counter.by_operation() == {"dynamodb.GetItem": 3}
    clear_token_cache()
    get_access_token("COUNT3")
    counter.reset()
    get_access_token("COUNT3")
    assert counter.count == 0
    assert sandbox.requests() == []


def test_a_warm_webhook_costs_3_aws_calls(live: Services, aws_server: LocalResources) -> None:
    def signed_event() -> dict[str, object]:
        body = json.dumps(
            {
                "type": "app.uninstalled",
                "timestamp": datetime.now(UTC).isoformat(),
                "data": {"merchant_id": "X1"},
            }
        )
        msg_id = f"msg_{uuid.uuid4().hex}"
        event = load_event("webhook-uninstall.json")
        event["body"] = body
        now = datetime.now(UTC)
        event["headers"].update(
            {
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(aws_server.webhook_secret_value).sign(msg_id, now, body),
            }
        )
        return event

    counter = AwsCallCounter()
    assert invoke("UninstallWebhookFunction", signed_event())["statusCode"] == 202  # cold: reads the secret
    assert "secretsmanager.GetSecretValue" in counter.calls
    counter.reset()
    assert invoke("UninstallWebhookFunction", signed_event())["statusCode"] == 202
    # seen? (GetItem), queue the uninstall, then record the id: queued before it is recorded
    assert counter.calls == ["dynamodb.GetItem", "sqs.SendMessage", "dynamodb.PutItem"]


@pytest.mark.parametrize("scope", SCOPES)
def test_revoke_costs_at_most_6_aws_calls_and_2_ultracart_calls(
    live_in_scope: InScope, sandbox: Sandbox, scope: str
) -> None:
    live = live_in_scope(scope)
    extra = 2 * (LINE[scope] + MERCHANT_UNIT[scope])
    seed_installation(live, sandbox, "COUNT5", expires_in=3600)
    counter = AwsCallCounter()
    sandbox.clear_requests()
    event = load_event("sqs-revoke-webhook.json")
    body = json.loads(event["Records"][0]["body"])
    body["detail"]["merchant_id"] = "COUNT5"
    body["time"] = datetime.fromtimestamp(time.time() + 1, tz=UTC).isoformat()
    event["Records"][0]["body"] = json.dumps(body)
    assert invoke("RevokeWorkerFunction", event) == {"batchItemFailures": []}
    assert counter.count <= 6 + extra, counter.calls
    # lease, one budget unit per revoke (2) (+ for each: the line given back, the merchant's unit), shred
    assert counter.by_operation() == {
        "dynamodb.UpdateItem": 4 + extra,
        "kms.Decrypt": 1,
        "events.PutEvents": 1,
    }
    assert [r.endpoint for r in sandbox.requests()] == ["revoke", "revoke"]


def _tokens_event(merchant_id: str) -> dict[str, object]:
    event = load_event("tokens-get.json")
    event["rawPath"] = f"/tokens/{merchant_id}"
    event["pathParameters"] = {"merchant_id": merchant_id}
    return event


def test_the_first_read_of_a_token_lifetime_costs_one_write_and_later_reads_none(
    live: Services, sandbox: Sandbox
) -> None:
    seed_installation(live, sandbox, "COUNT9", expires_in=60)  # due now
    assert invoke("RefreshWorkerFunction", _refresh_event("COUNT9")) == {"batchItemFailures": []}
    counter = AwsCallCounter()  # a new lifetime, nobody has read it yet
    assert invoke("TokenApiFunction", _tokens_event("COUNT9"))["statusCode"] == 200
    # Its read, its decrypt, and the conditional write that records the lifetime's use.
    assert counter.by_operation() == {"dynamodb.GetItem": 1, "kms.Decrypt": 1, "dynamodb.UpdateItem": 1}
    counter.reset()
    for _ in range(3):
        assert invoke("TokenApiFunction", _tokens_event("COUNT9"))["statusCode"] == 200
    assert counter.by_operation() == {"dynamodb.GetItem": 3}  # the data key is cached
    assert [r.grant_type for r in sandbox.requests("token")] == ["refresh_token"]


def test_a_planner_run_that_finds_nothing_due_costs_one_query_per_shard_and_two_reads(
    live: Services, sandbox: Sandbox
) -> None:
    invoke("RefreshPlannerFunction", load_event("schedule-refresh.json"))  # the first run marks the shards
    counter = AwsCallCounter()
    invoke("RefreshPlannerFunction", load_event("schedule-refresh.json"))
    # Run every minute: the budget's item, the shard mark, one DueIndex query per shard.
    assert counter.by_operation() == {"dynamodb.GetItem": 2, "dynamodb.Query": live.settings.due_shards}


def _refresh_event(merchant_id: str) -> dict[str, object]:
    event = load_event("sqs-refresh.json")
    event["Records"][0]["body"] = json.dumps({"merchant_id": merchant_id})
    return event
