"""The local HttpApi gateway over real HTTP: payload 2.0 events, responses, routing and SigV4.

The routes are template.yaml's; the handlers are stubs that record the event they get.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import botocore.auth
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devstack.gateway import Gateway
from devstack.resources import http_routes, load_template

pytestmark = pytest.mark.integration

ACCESS_KEY = "AKIDLOCALGATEWAYTEST"
SECRET_KEY = "local-gateway-test-secret"
REGION = "us-east-1"
TIMEOUT = 5
ROUTES = http_routes(load_template())

Responder = Callable[[str, dict[str, Any]], Any]


def _ok(logical_id: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"ok": true}'}


@dataclass
class Stub:
    """Records every invocation and answers with ``responder``."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    responder: Responder = _ok

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        self.calls.append((logical_id, event))
        return self.responder(logical_id, event)

    @property
    def event(self) -> dict[str, Any]:
        assert len(self.calls) == 1, self.calls
        return self.calls[0][1]


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[Gateway, Stub]]:
    """One gateway for the module; each test gets its stub fresh."""
    recorder = Stub()
    with Gateway(ROUTES, recorder.invoke, credentials={ACCESS_KEY: SECRET_KEY}, region=REGION) as started:
        yield started, recorder


@pytest.fixture
def stub(running: tuple[Gateway, Stub]) -> Stub:
    recorder = running[1]
    recorder.calls.clear()
    recorder.responder = _ok
    return recorder


@pytest.fixture
def gateway(running: tuple[Gateway, Stub], stub: Stub) -> Gateway:
    return running[0]


def base(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.port}"


def raw_request(
    gateway: Gateway,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | None = None,
    *,
    chunked: bool = False,
) -> http.client.HTTPResponse:
    """A request with exactly these headers (repeats kept), through http.client."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=TIMEOUT)
    connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    for name, value in headers:
        connection.putheader(name, value)
    if chunked:
        connection.putheader("Transfer-Encoding", "chunked")
    elif body is not None:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body if not chunked else None)
    if chunked and body is not None:
        for start in range(0, len(body), 100):
            piece = body[start : start + 100]
            connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    response.read()  # cached on the object; the connection can close
    connection.close()
    return response


def sign(
    url: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    region: str = REGION,
    service: str = "execute-api",
) -> dict[str, str]:
    """SigV4 headers for a request, made by botocore as an AWS SDK would."""
    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(Credentials(access_key, secret_key), service, region).add_auth(request)
    return dict(request.headers.items())


# -- the event ---------------------------------------------------------------------------------


def test_event_is_payload_2_0_with_cookies_repeated_values_and_raw_query(
    gateway: Gateway, stub: Stub
) -> None:
    raw_query = "code=abc&state=x%2Fy%2B1&b=1&b=two+words&empty="
    response = raw_request(
        gateway,
        "GET",
        f"/oauth/callback?{raw_query}",
        [
            ("Host", f"localhost:{gateway.port}"),
            ("User-Agent", "gateway-test/1.0"),
            ("Cookie", "__Host-ucoauth_state=nonce1; theme=dark"),
            ("Cookie", "extra=1"),
            ("X-Repeated", "one"),
            ("X-Repeated", "two"),
            ("Accept", "text/html"),
        ],
    )
    assert response.status == 200
    logical_id, event = stub.calls[0]
    assert logical_id == "OAuthBrowserFunction"
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /oauth/callback"
    assert event["rawPath"] == "/oauth/callback"
    assert event["rawQueryString"] == raw_query
    assert event["cookies"] == ["__Host-ucoauth_state=nonce1", "theme=dark", "extra=1"]
    headers = event["headers"]
    assert "cookie" not in headers
    assert all(name == name.lower() for name in headers)
    assert headers["x-repeated"] == "one,two"
    assert headers["host"] == f"localhost:{gateway.port}"
    assert headers["user-agent"] == "gateway-test/1.0"
    assert event["queryStringParameters"] == {
        "code": "abc",
        "state": "x/y+1",
        "b": "1,two words",
        "empty": "",
    }
    assert "pathParameters" not in event
    assert event["isBase64Encoded"] is False
    assert "body" not in event

    context = event["requestContext"]
    assert context["apiId"] == "local"
    assert context["accountId"] == "123456789012"
    assert context["domainName"] == f"localhost:{gateway.port}"
    assert context["domainPrefix"] == "localhost"
    assert context["stage"] == "$default"
    assert context["routeKey"] == "GET /oauth/callback"
    assert context["http"] == {
        "method": "GET",
        "path": "/oauth/callback",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "gateway-test/1.0",
    }
    uuid.UUID(context["requestId"])
    assert re.fullmatch(r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000", context["time"])
    now_ms = dt.datetime.now(dt.UTC).timestamp() * 1000
    assert abs(context["timeEpoch"] - now_ms) < 10_000
    assert "authorizer" not in context


def test_requests_get_distinct_request_ids(gateway: Gateway, stub: Stub) -> None:
    for _ in range(2):
        assert requests.get(f"{base(gateway)}/install", timeout=TIMEOUT).status_code == 200
    ids = {event["requestContext"]["requestId"] for _, event in stub.calls}
    assert len(ids) == 2


def test_text_body_is_passed_as_text(gateway: Gateway, stub: Stub) -> None:
    body = json.dumps({"type": "app.uninstalled", "data": {"merchant_id": "DEMO1"}, "note": "é"})
    response = requests.post(
        f"{base(gateway)}/webhooks/uninstall",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    event = stub.event
    assert stub.calls[0][0] == "UninstallWebhookFunction"
    assert event["routeKey"] == "POST /webhooks/uninstall"
    assert event["isBase64Encoded"] is False
    assert event["body"] == body
    assert event["headers"]["content-length"] == str(len(body.encode()))


def test_binary_body_round_trips_base64(gateway: Gateway, stub: Stub) -> None:
    data = bytes(range(256)) * 4

    def echo(logical_id: str, event: dict[str, Any]) -> dict[str, Any]:
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/octet-stream"},
            "body": event["body"],
            "isBase64Encoded": event["isBase64Encoded"],
        }

    stub.responder = echo
    response = requests.post(
        f"{base(gateway)}/webhooks/uninstall",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert stub.event["isBase64Encoded"] is True
    assert base64.b64decode(stub.event["body"]) == data
    assert response.content == data


def test_invalid_utf8_is_base64_even_with_a_text_type(gateway: Gateway, stub: Stub) -> None:
    data = b'{"a": "\xff\xfe"}'
    response = requests.post(
        f"{base(gateway)}/webhooks/uninstall",
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert stub.event["isBase64Encoded"] is True
    assert base64.b64decode(stub.event["body"]) == data


def test_chunked_body_is_read(gateway: Gateway, stub: Stub) -> None:
    body = b"x" * 450
    response = raw_request(
        gateway,
        "POST",
        "/webhooks/uninstall",
        [("Host", "localhost"), ("Content-Type", "text/plain")],
        body,
        chunked=True,
    )
    assert response.status == 200
    assert stub.event["body"] == body.decode()


# -- the response ------------------------------------------------------------------------------


def test_cookies_become_set_cookie_headers(gateway: Gateway, stub: Stub) -> None:
    def answer(logical_id: str, event: dict[str, Any]) -> dict[str, Any]:
        return {
            "statusCode": 302,
            "headers": {"Location": "https://example.test/next", "X-Single": "one"},
            "multiValueHeaders": {"X-Multi": ["a", "b"]},
            "cookies": ["first=1; Path=/; HttpOnly", "second=2; Max-Age=0"],
            "body": "",
        }

    stub.responder = answer
    response = raw_request(gateway, "GET", "/install", [("Host", "localhost")])
    assert response.status == 302
    headers = response.getheaders()
    assert [v for k, v in headers if k.lower() == "set-cookie"] == [
        "first=1; Path=/; HttpOnly",
        "second=2; Max-Age=0",
    ]
    assert [v for k, v in headers if k.lower() == "x-multi"] == ["a", "b"]
    assert response.getheader("Location") == "https://example.test/next"
    assert response.getheader("X-Single") == "one"
    assert response.getheader("Content-Length") == "0"


def test_a_result_without_status_code_is_a_200_json_answer(gateway: Gateway, stub: Stub) -> None:
    stub.responder = lambda logical_id, event: {"hello": "world"}
    response = requests.get(f"{base(gateway)}/install", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"hello": "world"}


def test_handler_exception_is_a_bare_500(
    gateway: Gateway, stub: Stub, capfd: pytest.CaptureFixture[str]
) -> None:
    def boom(logical_id: str, event: dict[str, Any]) -> Any:
        raise RuntimeError("handler exploded")

    stub.responder = boom
    response = requests.get(f"{base(gateway)}/install", timeout=TIMEOUT)
    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}
    assert "handler exploded" not in response.text
    assert "RuntimeError: handler exploded" in capfd.readouterr().err


def test_malformed_handler_result_is_a_500(gateway: Gateway, stub: Stub) -> None:
    stub.responder = lambda logical_id, event: {"statusCode": "200", "body": "x"}
    response = requests.get(f"{base(gateway)}/install", timeout=TIMEOUT)
    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}


# -- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/install"),
        ("GET", "/webhooks/uninstall"),
        ("GET", "/tokens"),
        ("GET", "/tokens/DEMO1/extra"),
        ("GET", "/"),
    ],
)
def test_a_path_no_route_matches_goes_to_the_default_route(
    gateway: Gateway, stub: Stub, method: str, path: str
) -> None:
    response = requests.request(method, f"{base(gateway)}{path}", timeout=TIMEOUT)
    assert response.status_code == 200
    logical_id, event = stub.calls[0]
    assert logical_id == "OAuthBrowserFunction"
    assert event["routeKey"] == "$default" and event["requestContext"]["routeKey"] == "$default"
    assert event["rawPath"] == path and event["requestContext"]["http"]["method"] == method
    assert "pathParameters" not in event or not event["pathParameters"]


@pytest.mark.parametrize(
    ("method", "path", "function"),
    [
        ("GET", "/install", "OAuthBrowserFunction"),
        ("GET", "/installed", "OAuthBrowserFunction"),
        ("POST", "/webhooks/uninstall", "UninstallWebhookFunction"),
    ],
)
def test_specific_routes_win_over_the_default_route(
    gateway: Gateway, stub: Stub, method: str, path: str, function: str
) -> None:
    requests.request(method, f"{base(gateway)}{path}", timeout=TIMEOUT)
    logical_id, event = stub.calls[0]
    assert logical_id == function and event["routeKey"] == f"{method} {path}"


def test_an_unsigned_token_request_is_refused_not_sent_to_the_default_route(
    gateway: Gateway, stub: Stub
) -> None:
    response = requests.get(f"{base(gateway)}/tokens/DEMO1", timeout=TIMEOUT)
    assert response.status_code == 403 and stub.calls == []


def test_without_a_default_route_an_unknown_path_is_api_gateways_json_404() -> None:
    recorder = Stub()
    routes = [r for r in ROUTES if r.path != "$default"]
    with Gateway(routes, recorder.invoke, credentials={ACCESS_KEY: SECRET_KEY}, region=REGION) as started:
        response = requests.get(f"{base(started)}/nope", timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}
    assert recorder.calls == []


def test_log_line_has_no_query_string(gateway: Gateway, stub: Stub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devstack.gateway")
    requests.get(f"{base(gateway)}/oauth/callback?code=SECRETCODE123&state=SECRETSTATE456", timeout=TIMEOUT)
    lines = [r.getMessage() for r in caplog.records if r.name == "devstack.gateway"]
    assert len(lines) == 1
    assert re.fullmatch(r"GET /oauth/callback 200 \d+ms", lines[0])
    assert "SECRET" not in caplog.text


# -- AWS_IAM (SigV4) ---------------------------------------------------------------------------


def test_signed_request_reaches_the_token_function(gateway: Gateway, stub: Stub) -> None:
    url = f"{base(gateway)}/tokens/DEMO1"
    response = requests.get(url, headers=sign(url), timeout=TIMEOUT)
    assert response.status_code == 200
    logical_id, event = stub.calls[0]
    assert logical_id == "TokenApiFunction"
    assert event["routeKey"] == "GET /tokens/{merchant_id}"
    assert event["pathParameters"] == {"merchant_id": "DEMO1"}
    iam = event["requestContext"]["authorizer"]["iam"]
    assert iam["accessKey"] == ACCESS_KEY
    assert iam["accountId"] == "123456789012"


def test_signed_request_with_query_string(gateway: Gateway, stub: Stub) -> None:
    url = f"{base(gateway)}/tokens/DEMO1?b=2&a=1&a=0&c=x%20y"
    response = requests.get(url, headers=sign(url), timeout=TIMEOUT)
    assert response.status_code == 200
    assert stub.event["rawQueryString"] == "b=2&a=1&a=0&c=x%20y"


def test_handler_404_passes_through_a_signed_request(gateway: Gateway, stub: Stub) -> None:
    stub.responder = lambda logical_id, event: {
        "statusCode": 404,
        "headers": {"Content-Type": "application/json"},
        "body": '{"error": "not_installed"}',
    }
    url = f"{base(gateway)}/tokens/NOBODY"
    response = requests.get(url, headers=sign(url), timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.json() == {"error": "not_installed"}


def _stale_signature(url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: past)
    headers = sign(url)
    monkeypatch.undo()
    return headers


@pytest.mark.parametrize(
    "case",
    [
        "unsigned",
        "wrong_secret",
        "unknown_access_key",
        "wrong_service",
        "wrong_region",
        "other_path",
        "tampered_signature",
        "stale",
        "garbage",
    ],
)
def test_iam_route_refuses_a_missing_or_bad_signature(
    gateway: Gateway, stub: Stub, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{base(gateway)}/tokens/DEMO1"
    headers: dict[str, str] = {
        "unsigned": {},
        "wrong_secret": sign(url, secret_key="not-the-secret"),
        "unknown_access_key": sign(url, access_key="AKIDSOMEONEELSE"),
        "wrong_service": sign(url, service="s3"),
        "wrong_region": sign(url, region="eu-west-1"),
        "other_path": sign(f"{base(gateway)}/tokens/DEMO2"),
        "garbage": {"Authorization": "AWS4-HMAC-SHA256 nonsense"},
    }.get(case, {})
    if case == "tampered_signature":
        headers = sign(url)
        last = headers["Authorization"][-1]
        headers["Authorization"] = headers["Authorization"][:-1] + ("0" if last != "0" else "1")
    if case == "stale":
        headers = _stale_signature(url, monkeypatch)
    response = requests.get(url, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}
    assert stub.calls == []


def test_public_routes_need_no_signature(gateway: Gateway, stub: Stub) -> None:
    assert requests.get(f"{base(gateway)}/install", timeout=TIMEOUT).status_code == 200
    assert "authorizer" not in stub.event["requestContext"]
