"""The app's services' side of the token API over real HTTP: the demands (``min_valid_seconds``,
``newer_than``), the ``ultracart-oauth-client`` distribution against the local gateway, and the
official UltraCart SDK wired to it against the sandbox.

One local stack for the module (moto, the template's resources, the sandbox, the gateway); each
test installs its own merchant through the browser flow.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devstack.invoke import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY
from devstack.stack import LocalStack
from tests.support.browser_flow import TIMEOUT, install
from tests.support.token_client import (
    local_session,
    orders_calls,
    refreshes,
    shorten_stored_expiry,
    token_client,
    venv_with_client,
)
from ucoauth_client import (
    InvalidRequest,
    NotInstalled,
    RateLimited,
    ReauthorizationRequired,
    TokenClient,
    Unavailable,
)

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("devstack_token_client")]


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
    stack.sandbox.configure(expires_in="3600", concurrency_scope="merchant")
    stack.sandbox.clear_faults()


def signed_get(url: str) -> requests.Response:
    request = AWSRequest(method="GET", url=url)
    credentials = Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY)
    SigV4Auth(credentials, "execute-api", "us-east-1").add_auth(request)
    return requests.get(url, headers=dict(request.headers.items()), timeout=TIMEOUT)


def get_token(stack: LocalStack, merchant_id: str, query: str = "") -> requests.Response:
    return signed_get(f"{stack.gateway_url}/tokens/{merchant_id}" + (f"?{query}" if query else ""))


# -- the token API's demands, over the gateway -----------------------------------------------------


def test_min_valid_seconds_over_the_gateway(stack: LocalStack, sandbox: Any) -> None:
    install(stack, "TC1")
    shorten_stored_expiry(stack, "TC1", 600)  # 50 minutes later, for the stack
    sandbox.clear_requests()
    first = get_token(stack, "TC1").json()
    assert isinstance(first["version"], int)

    assert get_token(stack, "TC1", "min_valid_seconds=500").json() == first
    assert refreshes(stack, "TC1") == 0

    longer = get_token(stack, "TC1", "min_valid_seconds=1000").json()

    assert refreshes(stack, "TC1") == 1
    assert longer["access_token"] != first["access_token"] and longer["version"] > first["version"]
    assert sandbox.token_is_valid(longer["access_token"])
    assert get_token(stack, "TC1", "min_valid_seconds=3300").json() == longer
    assert refreshes(stack, "TC1") == 1

    bad = get_token(stack, "TC1", "min_valid_seconds=3301")
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid_parameter"})
    assert refreshes(stack, "TC1") == 1


def test_newer_than_over_the_gateway_refreshes_once(stack: LocalStack, sandbox: Any) -> None:
    install(stack, "TC2")
    refused = get_token(stack, "TC2").json()
    sandbox.clear_requests()

    fresh = get_token(stack, "TC2", f"newer_than={refused['version']}").json()
    again = get_token(stack, "TC2", f"newer_than={refused['version']}").json()

    assert fresh["access_token"] != refused["access_token"] and fresh["version"] > refused["version"]
    assert again == fresh
    assert refreshes(stack, "TC2") == 1
    assert sandbox.token_is_valid(fresh["access_token"])


def test_a_burst_of_newer_than_from_eight_callers_costs_one_refresh(stack: LocalStack, sandbox: Any) -> None:
    install(stack, "TC3")
    refused = get_token(stack, "TC3").json()
    sandbox.clear_requests()
    start = threading.Barrier(8)
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def ask() -> None:
        start.wait()
        response = get_token(stack, "TC3", f"newer_than={refused['version']}")
        with lock:
            answers.append({"status": response.status_code, **response.json()})

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [a["status"] for a in answers] == [200] * 8
    assert {a["access_token"] for a in answers} != {refused["access_token"]}
    assert len({a["access_token"] for a in answers}) == 1
    assert refreshes(stack, "TC3") == 1


# -- the client ------------------------------------------------------------------------------------


def test_the_client_gets_a_token_and_a_cached_hit_sends_nothing(stack: LocalStack, sandbox: Any) -> None:
    install(stack, "TC4")
    client, opener = token_client(stack)

    token = client.get("TC4", min_valid_seconds=120)

    assert sandbox.token_is_valid(token.access_token)
    assert token.merchant_id == "TC4" and token.token_type == "bearer" and token.version >= 1
    assert token.expires_at is not None and token.expires_at.tzinfo is not None
    assert token.access_token not in repr(token)
    assert opener.sent == ["/tokens/TC4?min_valid_seconds=180"]  # asks for its margin too
    assert client.get("TC4", min_valid_seconds=120) is token
    assert client.get("TC4") is token
    assert len(opener.sent) == 1


def test_concurrent_gets_for_one_merchant_send_one_request(stack: LocalStack, sandbox: Any) -> None:
    install(stack, "TC5")
    client, opener = token_client(stack)
    got: list[str] = []
    start = threading.Barrier(6)

    def ask() -> None:
        start.wait()
        got.append(client.get("TC5").access_token)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(got) == 6 and len(set(got)) == 1
    assert len(opener.sent) == 1


def test_the_client_maps_answers_to_typed_errors(stack: LocalStack, sandbox: Any) -> None:
    client, opener = token_client(stack)
    with pytest.raises(NotInstalled):
        client.get("NOBODY")
    with pytest.raises(InvalidRequest) as bad:
        client.get("NOBODY", min_valid_seconds=3301)
    assert bad.value.error == "invalid_parameter"
    with pytest.raises(InvalidRequest):
        client.get("NOBODY", min_valid_seconds=-1)
    assert opener.sent == [
        "/tokens/NOBODY?min_valid_seconds=60",
        "/tokens/NOBODY?min_valid_seconds=3301",
        "/tokens/NOBODY?min_valid_seconds=-1",
    ]
    with pytest.raises(InvalidRequest):
        client.get("bad id/..")
    assert len(opener.sent) == 3  # refused before sending

    install(stack, "TC6")
    shorten_stored_expiry(stack, "TC6", 600)
    sandbox.remove_app("TC6")  # the merchant removed the app in UltraCart
    with pytest.raises(ReauthorizationRequired):
        client.get("TC6", min_valid_seconds=1000)  # forces the refresh UltraCart refuses
    with pytest.raises(ReauthorizationRequired):
        client.get("TC6")


def test_unavailable_is_retried_once_after_retry_after_then_raised(stack: LocalStack, sandbox: Any) -> None:
    install(stack, "TC7")
    slept: list[float] = []
    client, opener = token_client(stack, sleep=slept.append)
    refused = client.get("TC7")
    sandbox.add_fault("token", status=503, grant_type="refresh_token", times=2)

    with pytest.raises(Unavailable) as failed:
        client.get("TC7", newer_than=refused.version)

    assert failed.value.retry_after is not None and failed.value.retry_after >= 1
    assert len(opener.sent) == 3  # the first get, then the request and its one retry
    assert len(slept) == 1 and failed.value.retry_after <= slept[0] <= client.max_retry_wait
    assert refreshes(stack, "TC7") == 2

    sandbox.add_fault("token", status=503, grant_type="refresh_token", times=1)
    fresh = client.get("TC7", newer_than=refused.version)  # the retry succeeds
    assert fresh.version > refused.version and len(opener.sent) == 5


def test_an_unreachable_stack_is_unavailable(stack: LocalStack) -> None:
    slept: list[float] = []
    client = TokenClient(
        url="http://127.0.0.1:9", session=local_session(), region="us-east-1", timeout=2, sleep=slept.append
    )
    with pytest.raises(Unavailable):
        client.get("DEMO1")
    assert len(slept) == 1


def test_the_client_finds_the_api_in_the_stacks_outputs(stack: LocalStack, sandbox: Any) -> None:
    install(stack, "TC8")
    template = {
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"ApiUrl": {"Value": stack.gateway_url}},
    }
    cloudformation = stack.client("cloudformation")
    cloudformation.create_stack(StackName="consumer-test", TemplateBody=json.dumps(template))

    client = TokenClient(stack_name="consumer-test", session=local_session(stack))
    assert client.get("TC8").merchant_id == "TC8"
    assert client.url == stack.gateway_url


def test_the_distribution_installs_with_pip_into_a_fresh_venv(tmp_path: Path) -> None:
    python = venv_with_client(tmp_path)
    probe = (
        "import importlib.metadata as m, pathlib, ucoauth_client;"
        "print(ucoauth_client.__file__);"
        "print(sorted(m.requires('ultracart-oauth-client')));"
        "print(m.metadata('ultracart-oauth-client')['Requires-Python']);"
        "print((pathlib.Path(ucoauth_client.__file__).parent / 'py.typed').exists());"
        "from ucoauth_client import TokenClient, TokenClientError, NotInstalled;"
        "print(issubclass(NotInstalled, TokenClientError))"
    )
    out = subprocess.run(
        [str(python), "-c", probe], check=True, capture_output=True, text=True, timeout=120
    ).stdout.splitlines()
    assert out[0].startswith(str(tmp_path / "venv"))  # the installed copy, not the source tree
    assert out[1] == "['botocore', 'ultracart-rest-sdk; extra == \"sdk\"']"
    assert out[2] == ">=3.10"
    assert out[3:] == ["True", "True"]


# -- the official SDK, wired -----------------------------------------------------------------------


def test_an_sdk_call_after_ultracart_refuses_the_token_refreshes_once_and_succeeds(
    stack: LocalStack, sandbox: Any
) -> None:
    from ultracart.api.order_api import OrderApi

    install(stack, "TC9")
    client, _ = token_client(stack)
    orders = OrderApi(client.ultracart_api_client("TC9", host=sandbox.base_url))

    first = orders.get_orders(limit=10)
    assert first.success is True and first.orders[0].merchant_id == "TC9"
    sent = sandbox.requests("orders")[-1]
    assert sent.header("X-UltraCart-Api-Version") == "2017-03-01"
    assert sent.header("Authorization") == f"Bearer {client.get('TC9').access_token}"

    sandbox.clear_requests()
    assert sandbox.expire_access_tokens("TC9") >= 1
    second = orders.get_orders(limit=10)

    assert second.orders[0].merchant_id == "TC9"
    assert orders_calls(stack) == [401, 200]
    assert refreshes(stack, "TC9") == 1


def test_eight_threads_refused_at_once_cost_one_refresh(stack: LocalStack, sandbox: Any) -> None:
    from ultracart.api.order_api import OrderApi

    install(stack, "TC10")
    # UltraCart answers 429 to concurrent calls of one merchant; this test is about refreshes.
    sandbox.configure(concurrency_scope=None)
    clients = [token_client(stack)[0] for _ in range(8)]  # eight processes' worth of clients
    apis = [OrderApi(c.ultracart_api_client("TC10", host=sandbox.base_url)) for c in clients]
    for api in apis:
        api.get_orders()
    sandbox.clear_requests()
    sandbox.expire_access_tokens("TC10")
    start = threading.Barrier(8)
    results: list[str] = []

    def call(api: OrderApi) -> None:
        start.wait()
        results.append(api.get_orders().orders[0].merchant_id)

    threads = [threading.Thread(target=call, args=(api,)) for api in apis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert results == ["TC10"] * 8
    statuses = orders_calls(stack)
    assert statuses.count(401) == 8 and statuses.count(200) == 8
    assert refreshes(stack, "TC10") == 1


def test_a_429_from_ultracart_is_rate_limited(stack: LocalStack, sandbox: Any) -> None:
    from ultracart.api.order_api import OrderApi

    install(stack, "TC11")
    client, _ = token_client(stack)
    orders = OrderApi(client.ultracart_api_client("TC11", host=sandbox.base_url))
    sandbox.add_fault("orders", status=429)
    with pytest.raises(RateLimited):
        orders.get_orders()
    assert orders.get_orders().success is True
