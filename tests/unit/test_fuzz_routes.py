"""Fuzzing every route with hypothesis: no 5xx, no unhandled exception, nothing stored when rejected.

The number of examples per route comes from ``FUZZ_EXAMPLES`` (CI runs a reduced size;
``make reliability`` runs more and reports the count in docs/RELIABILITY.md).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import string
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from devstack.resources import LocalResources
from tests.support.lambdas import invoke, load_event
from ucoauth.adapters.services import Services

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("FUZZ_DERANDOMIZE", "1") == "1",
)
TRIED: dict[str, int] = {}

query_chars = st.sampled_from(
    [*string.printable, "%", "%00", "%ff", "%e2%82", "&", "=", "+", "\u00e9", "\ud83d"]
)
raw_query = st.lists(query_chars, max_size=80).map("".join) | st.builds(
    lambda k, v: f"{k}={v}",
    st.sampled_from(["code", "state", "error", "error_description", "x"]),
    st.text(max_size=600),
)
header_values = st.text(max_size=200)
cookies = st.lists(st.text(max_size=120), max_size=4)


@functools.cache
def client(service: str) -> Any:
    """One client per service for the module (moto answers it whenever a mock is active)."""
    return boto3.client(service, region_name="us-east-1")  # type: ignore[call-overload]


def stored(aws: LocalResources) -> int:
    return len(client("dynamodb").scan(TableName=aws.table_name)["Items"])


def queued(aws: LocalResources) -> int:
    sqs = client("sqs")
    attrs = sqs.get_queue_attributes(
        QueueUrl=aws.revoke_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def count(route: str) -> None:
    TRIED[route] = TRIED.get(route, 0) + 1


@FUZZ
@given(query=raw_query, jar=cookies, agent=header_values)
def test_fuzz_callback(
    services: Services, aws: LocalResources, query: str, jar: list[str], agent: str
) -> None:
    count("GET /oauth/callback")
    event = load_event("callback-unknown-state.json")
    event["rawQueryString"] = query
    event["cookies"] = jar
    event["headers"]["user-agent"] = agent
    before = stored(aws)
    response = invoke("OAuthBrowserFunction", event)
    # 502/503: UltraCart itself reported error=server_error or temporarily_unavailable.
    assert response["statusCode"] in (200, 400, 502, 503), response["statusCode"]
    assert response["headers"]["Content-Security-Policy"].startswith("default-src 'none'")
    assert "<script" not in response["body"].lower()
    assert stored(aws) == before


@FUZZ
@given(query=raw_query, jar=cookies)
def test_fuzz_installed(services: Services, aws: LocalResources, query: str, jar: list[str]) -> None:
    count("GET /installed")
    event = load_event("installed.json", receipt="r" * 43)
    event["rawQueryString"] = query
    event["cookies"] = [*jar, *(f"__Host-ucoauth_receipt={value}" for value in jar[:1])]
    response = invoke("OAuthBrowserFunction", event)
    # Without a receipt this browser got from a completed install: the neutral page, never an account.
    assert response["statusCode"] == 200, response["statusCode"]
    assert "This page has expired" in response["body"]
    assert response["headers"]["Content-Security-Policy"].startswith("default-src 'none'")
    assert "<script" not in response["body"].lower()
    assert stored(aws) == 0


BROWSER_ROUTES = {"/install", "/oauth/callback", "/installed"}
path_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=120)


@FUZZ
@given(
    path=path_text,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
    query=raw_query,
)
def test_fuzz_default_route(
    services: Services, aws: LocalResources, path: str, method: str, query: str
) -> None:
    count("$default (any other method and path)")
    raw_path = "/" + path
    event = load_event("unknown-path.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = raw_path
    event["requestContext"]["http"]["method"] = method
    event["rawQueryString"] = query
    before = stored(aws)
    response = invoke("OAuthBrowserFunction", event)
    if method == "GET" and raw_path.rstrip("/") in BROWSER_ROUTES:
        return  # API Gateway sends these to their own routes, never to $default
    assert response["statusCode"] == 404, (raw_path, response["statusCode"])
    assert response["headers"]["Content-Type"].startswith("text/html")
    assert response["headers"]["Content-Security-Policy"].startswith("default-src 'none'")
    assert "<script" not in response["body"].lower()
    assert stored(aws) == before


@FUZZ
@given(query=raw_query, jar=cookies)
def test_fuzz_install(services: Services, aws: LocalResources, query: str, jar: list[str]) -> None:
    count("GET /install")
    event = load_event("install.json")
    event["rawQueryString"] = query
    event["cookies"] = jar
    response = invoke("OAuthBrowserFunction", event)
    if "session" in query:  # an install link's query: it is checked (a page when it is no link)
        assert response["statusCode"] in (302, 400), response
        return
    assert response["statusCode"] == 302
    assert response["headers"]["Location"].startswith(
        services.settings.ultracart_base_url + "/oauth/authorize?"
    )


session_values = (
    st.text(max_size=120)
    | st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=40, max_size=46)
    | st.lists(query_chars, max_size=60).map("".join)
)


@FUZZ
@given(value=session_values, extra=st.sampled_from(["", "&x=1", "&session=other", "&code=1&state=2"]))
def test_fuzz_install_session(services: Services, aws: LocalResources, value: str, extra: str) -> None:
    count("GET /install?session=")
    before = stored(aws)
    event = load_event("install.json")
    event["rawQueryString"] = f"session={value}{extra}"
    response = invoke("OAuthBrowserFunction", event)
    # No session is issued in this test: every one is unknown or damaged, a page, never a redirect.
    assert response["statusCode"] == 400, response
    assert "Location" not in response["headers"]
    assert response["headers"]["Content-Type"].startswith("text/html")
    assert "<script" not in response["body"].lower()
    assert stored(aws) == before


install_session_bodies = (
    st.binary(max_size=3000).map(lambda b: b.decode("utf-8", "replace"))
    | st.dictionaries(
        st.sampled_from(["app_account_id", "return_url", "metadata", "x", ""]),
        st.text(max_size=300)
        | st.integers()
        | st.none()
        | st.dictionaries(st.text(max_size=70), st.text(max_size=300) | st.integers(), max_size=12),
    ).map(json.dumps)
    | st.builds(
        lambda account, metadata: json.dumps({"app_account_id": account, "metadata": metadata}),
        st.text(alphabet=string.ascii_letters + "._:@-/ ", max_size=140),
        st.dictionaries(st.text(max_size=70), st.text(max_size=270), max_size=11),
    )
)


@FUZZ
@given(body=install_session_bodies, query=st.sampled_from(["", "x=1"]))
def test_fuzz_install_sessions(services: Services, aws: LocalResources, body: str, query: str) -> None:
    count("POST /install-sessions")
    before = stored(aws)
    event = load_event("install-sessions-create.json")
    event["body"] = body
    event["rawQueryString"] = query
    response = invoke("TokenApiFunction", event)
    assert response["statusCode"] in (201, 400), response
    if response["statusCode"] == 201:
        assert set(json.loads(response["body"])) == {"session_id", "install_url", "expires_at"}
        assert stored(aws) == before + 1
    else:
        assert json.loads(response["body"]) == {"error": "invalid_parameter"}
        assert stored(aws) == before  # nothing stored for a rejected request


@FUZZ
@given(merchant_id=st.text(max_size=300))
def test_fuzz_token_api(services: Services, aws: LocalResources, merchant_id: str) -> None:
    count("GET /tokens/{merchant_id}")
    event = load_event("tokens-get.json")
    event["rawPath"] = f"/tokens/{merchant_id}"
    event["pathParameters"] = {"merchant_id": merchant_id}
    response = invoke("TokenApiFunction", event)
    assert response["statusCode"] in (400, 404), response
    assert json.loads(response["body"])["error"] in ("invalid_merchant_id", "not_installed", "not_found")
    assert stored(aws) == 0


webhook_headers = st.dictionaries(
    st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "x-other"]),
    st.text(max_size=120),
)


@FUZZ
@given(body=st.binary(max_size=10_000), headers=webhook_headers, b64=st.booleans())
def test_fuzz_webhook_unsigned(
    services: Services, aws: LocalResources, body: bytes, headers: dict[str, str], b64: bool
) -> None:
    count("POST /webhooks/uninstall (unsigned)")
    event = load_event("webhook-uninstall.json")
    event["headers"] = {"content-type": "application/json", **headers}
    if b64:
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        event["body"] = body.decode("utf-8", "replace")
    response = invoke("UninstallWebhookFunction", event)
    assert response["statusCode"] in (400, 401, 413), response
    assert stored(aws) == 0
    assert queued(aws) == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["app.uninstalled", "app.installed", ""]) | st.text(max_size=20),
        "timestamp": st.sampled_from(["2026-11-27T20:00:00Z", "yesterday", ""]) | st.text(max_size=30),
        "data": st.fixed_dictionaries({}, optional={"merchant_id": st.text(max_size=70) | json_values})
        | json_values,
    },
)


@FUZZ
@given(payload=payloads)
def test_fuzz_webhook_signed_payloads(
    services: Services, aws: LocalResources, payload: dict[str, Any]
) -> None:
    count("POST /webhooks/uninstall (signed)")
    body = json.dumps(payload)
    now = datetime.now(UTC)
    msg_id = f"msg_{TRIED['POST /webhooks/uninstall (signed)']}_{now.timestamp()}"
    event = load_event("webhook-uninstall.json")
    event["body"] = body
    event["headers"].update(
        {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(aws.webhook_secret_value).sign(msg_id, now, body),
        }
    )
    before_items, before_queue = stored(aws), queued(aws)
    response = invoke("UninstallWebhookFunction", event)
    assert response["statusCode"] in (202, 400), response
    if response["statusCode"] == 400:
        assert (stored(aws), queued(aws)) == (before_items, before_queue)
    else:
        assert queued(aws) == before_queue + 1


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Any:
    yield
    path = os.environ.get("FUZZ_REPORT")
    if path:
        with open(path, "a") as handle:
            for route, tried in sorted(TRIED.items()):
                handle.write(json.dumps({"route": route, "inputs": tried}) + "\n")


device_bodies = (
    st.binary(max_size=2000).map(lambda b: b.decode("utf-8", "replace"))
    | st.dictionaries(st.sampled_from(["scope", "x", ""]), st.text(max_size=300) | st.integers()).map(
        json.dumps
    )
    | st.builds(lambda scope: json.dumps({"scope": scope}), st.text(max_size=300))
)


@FUZZ
@given(body=device_bodies, query=st.sampled_from(["", "scope=crm", "x=1"]))
def test_fuzz_device_start(services: Services, aws: LocalResources, body: str, query: str) -> None:
    count("POST /device/authorizations")
    before = stored(aws)
    event = load_event("device-start.json")
    event["body"] = body
    event["rawQueryString"] = query
    if query:
        key, value = query.split("=")
        event["queryStringParameters"] = {key: value}
    response = invoke("DeviceFlowFunction", event)
    assert response["statusCode"] in (201, 400, 413), response
    if response["statusCode"] == 201:
        assert set(json.loads(response["body"])) >= {"authorization_id", "user_code", "interval"}
    else:
        assert json.loads(response["body"])["error"] in ("invalid_request", "request_too_large")
        assert stored(aws) == before  # nothing stored for a rejected request


@FUZZ
@given(authorization_id=st.text(max_size=300))
def test_fuzz_device_status(services: Services, aws: LocalResources, authorization_id: str) -> None:
    count("GET /device/authorizations/{authorization_id}")
    event = load_event("device-status.json")
    event["rawPath"] = f"/device/authorizations/{authorization_id}"
    event["pathParameters"] = {"authorization_id": authorization_id}
    response = invoke("DeviceFlowFunction", event)
    assert response["statusCode"] in (400, 404), response
    assert json.loads(response["body"])["error"] in ("invalid_authorization_id", "not_found")
    assert stored(aws) == 0
