"""The local UltraCart sandbox, over real HTTP: OAuth behaviour, switches, faults, limits, controls."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from ucsandbox import (
    API_VERSION,
    UC_REST_ERROR_HEADER,
    Sandbox,
    SandboxApi,
    SandboxControl,
    SandboxControlError,
)

pytestmark = pytest.mark.integration

API_HEADERS = {"X-UltraCart-Api-Version": API_VERSION}
REDIRECT_URI = "https://app.example.test/oauth/callback"
TIMEOUT = 5.0
REPO_ROOT = Path(__file__).resolve().parents[2]


# -- helpers: what a client sends --------------------------------------------------------------


def post_token(
    sandbox: SandboxApi,
    form: dict[str, str],
    *,
    headers: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> requests.Response:
    return requests.post(
        f"{sandbox.base_url}/oauth/token",
        data=form,
        headers=API_HEADERS if headers is None else headers,
        timeout=timeout,
    )


def exchange(
    sandbox: SandboxApi, code: str, redirect_uri: str = REDIRECT_URI, *, timeout: float = TIMEOUT
) -> requests.Response:
    form = {
        "client_id": sandbox.client_id,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
    }
    return post_token(sandbox, form, timeout=timeout)


def refresh(sandbox: SandboxApi, refresh_token: str, *, timeout: float = TIMEOUT) -> requests.Response:
    form = {"client_id": sandbox.client_id, "grant_type": "refresh_token", "refresh_token": refresh_token}
    return post_token(sandbox, form, timeout=timeout)


def revoke(sandbox: SandboxApi, token: str, *, timeout: float = TIMEOUT) -> requests.Response:
    return requests.post(
        f"{sandbox.base_url}/oauth/revoke",
        data={"client_id": sandbox.client_id, "token": token},
        headers=API_HEADERS,
        timeout=timeout,
    )


def me(sandbox: SandboxApi, access_token: str, *, timeout: float = TIMEOUT) -> requests.Response:
    return requests.get(
        f"{sandbox.base_url}/oauth/me",
        headers={**API_HEADERS, "Authorization": f"Bearer {access_token}"},
        timeout=timeout,
    )


def authorize_params(sandbox: SandboxApi, **overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": sandbox.client_id,
        "redirect_uri": REDIRECT_URI,
        "state": "state-123",
    }
    params.update(overrides)
    return params


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def query_of(location: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


class ConsentForm(HTMLParser):
    """The consent page's form, read the way a browser would submit it."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.action = ""
        self.hidden: dict[str, str] = {}
        self.elements: dict[str, dict[str, str]] = {}
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = attributes.get("action", "")
        if tag == "input" and attributes.get("type") == "hidden":
            self.hidden[attributes["name"]] = attributes.get("value", "")
        if "id" in attributes:
            self.elements[attributes["id"]] = {"tag": tag, **attributes}

    def submission(self, button_id: str, merchant_id: str | None = None) -> dict[str, str]:
        field = self.elements["merchant_id"]
        button = self.elements[button_id]
        return {
            **self.hidden,
            field["name"]: field["value"] if merchant_id is None else merchant_id,
            button["name"]: button["value"],
        }


def open_consent(sandbox: Sandbox, **overrides: str) -> tuple[requests.Response, ConsentForm]:
    page = requests.get(
        f"{sandbox.base_url}/oauth/authorize", params=authorize_params(sandbox, **overrides), timeout=TIMEOUT
    )
    return page, ConsentForm(page.text)


def submit_consent(sandbox: Sandbox, form: ConsentForm, fields: dict[str, str]) -> requests.Response:
    return requests.post(f"{sandbox.url}{form.action}", data=fields, allow_redirects=False, timeout=TIMEOUT)


# -- code exchange ------------------------------------------------------------------------------


def test_code_exchange_returns_ultracart_token_response(sandbox: Sandbox) -> None:
    # Given a code the merchant approved
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)

    # When the app exchanges it
    response = exchange(sandbox, code)

    # Then UltraCart's token response comes back, expires_in as a JSON string
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "expires_in", "token_type", "scope", "merchant_id"}
    assert body["expires_in"] == "3600"
    assert body["token_type"] == "bearer"
    assert body["scope"] == "order_read customer_read"
    assert body["merchant_id"] == "DEMO1"
    assert sandbox.token_is_valid(body["access_token"])
    assert sandbox.refresh_token_is_valid(body["refresh_token"])


def test_code_is_single_use(sandbox: Sandbox) -> None:
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)
    assert exchange(sandbox, code).status_code == 200

    again = exchange(sandbox, code)

    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert again.headers[UC_REST_ERROR_HEADER]


def test_code_is_bound_to_its_redirect_uri(sandbox: Sandbox) -> None:
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)

    wrong = exchange(sandbox, code, "https://evil.example.test/callback")

    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert exchange(sandbox, code).status_code == 200


def test_unknown_code_is_refused(sandbox: Sandbox) -> None:
    response = exchange(sandbox, "not-a-code")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_code_expires_after_five_minutes(sandbox: Sandbox) -> None:
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)

    sandbox.advance_time(301)
    response = exchange(sandbox, code)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        (
            {"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT_URI},
            400,
            "invalid_request",
        ),
        (
            {"client_id": "someone-else", "grant_type": "refresh_token", "refresh_token": "x"},
            401,
            "invalid_client",
        ),
        ({"client_id": "{client_id}"}, 400, "invalid_request"),
        ({"client_id": "{client_id}", "grant_type": "password"}, 400, "unsupported_grant_type"),
        (
            {"client_id": "{client_id}", "grant_type": "authorization_code", "code": "x"},
            400,
            "invalid_request",
        ),
        ({"client_id": "{client_id}", "grant_type": "refresh_token"}, 400, "invalid_request"),
    ],
    ids=[
        "no-client-id",
        "unknown-client",
        "no-grant-type",
        "password-grant",
        "no-redirect-uri",
        "no-refresh-token",
    ],
)
def test_malformed_token_requests_get_oauth_errors(
    sandbox: Sandbox, form: dict[str, str], status: int, error: str
) -> None:
    filled = {key: value.format(client_id=sandbox.client_id) for key, value in form.items()}

    response = post_token(sandbox, filled)

    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_token_endpoint_wants_a_form_body(sandbox: Sandbox) -> None:
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)

    response = requests.post(
        f"{sandbox.base_url}/oauth/token",
        json={"client_id": sandbox.client_id, "grant_type": "authorization_code", "code": code},
        headers=API_HEADERS,
        timeout=TIMEOUT,
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_unknown_paths_and_methods_are_refused(sandbox: Sandbox) -> None:
    wrong_method = requests.get(f"{sandbox.base_url}/oauth/token", headers=API_HEADERS, timeout=TIMEOUT)
    unknown = requests.get(f"{sandbox.base_url}/item/items", headers=API_HEADERS, timeout=TIMEOUT)

    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert unknown.status_code == 404
    assert unknown.headers[UC_REST_ERROR_HEADER]


# -- the API version header ---------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["token", "revoke", "me", "orders"])
@pytest.mark.parametrize("version", [None, "2016-01-01"], ids=["missing", "wrong"])
def test_api_calls_need_the_api_version_header(sandbox: Sandbox, endpoint: str, version: str | None) -> None:
    access, refresh_token = sandbox.issue_tokens("DEMO1")
    headers = {} if version is None else {"X-UltraCart-Api-Version": version}
    url = f"{sandbox.base_url}/oauth/{endpoint}"
    if endpoint == "orders":
        url = f"{sandbox.base_url}/order/orders"
    if endpoint in ("me", "orders"):
        response = requests.get(
            url, headers={**headers, "Authorization": f"Bearer {access}"}, timeout=TIMEOUT
        )
    else:
        form = {"client_id": sandbox.client_id, "grant_type": "refresh_token", "refresh_token": refresh_token}
        if endpoint == "revoke":
            form = {"client_id": sandbox.client_id, "token": refresh_token}
        response = requests.post(url, data=form, headers=headers, timeout=TIMEOUT)

    assert response.status_code == 400
    assert "X-UltraCart-Api-Version" in response.headers[UC_REST_ERROR_HEADER]
    assert response.json()["success"] is False
    # Nothing happened: the refresh token still works
    assert sandbox.refresh_token_is_valid(refresh_token)
    assert [entry.status for entry in sandbox.requests(endpoint)] == [400]


# -- refresh and rotation -----------------------------------------------------------------------


def test_refresh_rotates_by_default(sandbox: Sandbox) -> None:
    old_access, old_refresh = sandbox.issue_tokens("DEMO1")

    response = refresh(sandbox, old_refresh)

    assert response.status_code == 200
    body = response.json()
    assert body["refresh_token"] != old_refresh
    assert body["access_token"] != old_access
    assert body["merchant_id"] == "DEMO1"
    assert sandbox.refresh_token_is_valid(body["refresh_token"])
    assert not sandbox.refresh_token_is_valid(old_refresh)
    # The access token issued before stays valid until it expires
    assert sandbox.token_is_valid(old_access)
    assert me(sandbox, old_access).status_code == 200


def test_reusing_a_rotated_refresh_token_is_refused(sandbox: Sandbox) -> None:
    _, old_refresh = sandbox.issue_tokens("DEMO1")
    assert refresh(sandbox, old_refresh).status_code == 200

    reused = refresh(sandbox, old_refresh)

    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


def test_refresh_without_rotation_returns_the_same_refresh_token(sandbox: Sandbox) -> None:
    sandbox.configure(rotate=False)
    _, refresh_token = sandbox.issue_tokens("DEMO1")

    first = refresh(sandbox, refresh_token)
    second = refresh(sandbox, refresh_token)

    assert first.status_code == second.status_code == 200
    assert first.json()["refresh_token"] == second.json()["refresh_token"] == refresh_token
    assert first.json()["access_token"] != second.json()["access_token"]


def test_refresh_can_omit_the_refresh_token(sandbox: Sandbox) -> None:
    sandbox.configure(rotate="omit")
    _, refresh_token = sandbox.issue_tokens("DEMO1")

    response = refresh(sandbox, refresh_token)

    assert response.status_code == 200
    assert "refresh_token" not in response.json()
    assert sandbox.refresh_token_is_valid(refresh_token)
    assert refresh(sandbox, refresh_token).status_code == 200


def test_refresh_token_does_not_work_as_access_token(sandbox: Sandbox) -> None:
    access, refresh_token = sandbox.issue_tokens("DEMO1")

    assert me(sandbox, refresh_token).status_code == 401
    assert refresh(sandbox, access).json()["error"] == "invalid_grant"


# -- revoke -------------------------------------------------------------------------------------


def test_revoked_refresh_token_cannot_refresh(sandbox: Sandbox) -> None:
    access, refresh_token = sandbox.issue_tokens("DEMO1")

    revoked = revoke(sandbox, refresh_token)

    assert revoked.status_code == 200
    assert revoked.json() == {"successful": True, "message": "Token revoked"}
    after = refresh(sandbox, refresh_token)
    assert after.status_code == 400
    assert after.json()["error"] == "invalid_grant"
    # Revoking one token kills that token only
    assert sandbox.token_is_valid(access)


def test_revoked_access_token_is_refused_by_me(sandbox: Sandbox) -> None:
    access, refresh_token = sandbox.issue_tokens("DEMO1")

    assert revoke(sandbox, access).json()["successful"] is True

    assert me(sandbox, access).status_code == 401
    assert refresh(sandbox, refresh_token).status_code == 200


def test_revoking_an_unknown_or_revoked_token_is_unsuccessful(sandbox: Sandbox) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    assert revoke(sandbox, refresh_token).json()["successful"] is True

    again = revoke(sandbox, refresh_token)
    unknown = revoke(sandbox, "never-issued")

    assert again.status_code == unknown.status_code == 200
    assert again.json() == unknown.json() == {"successful": False, "message": "Invalid token"}


# -- me -----------------------------------------------------------------------------------------


def test_me_describes_the_merchant(sandbox: Sandbox) -> None:
    access, _ = sandbox.issue_tokens("ACME7")

    response = me(sandbox, access)

    assert response.status_code == 200
    assert response.json() == {
        "merchant_id": "ACME7",
        "merchant_name": "ACME7 Sandbox Store",
        "application_name": "UltraCart Sandbox App",
        "client_id": sandbox.client_id,
        "scopes": ["order_read", "customer_read"],
    }


def test_me_refuses_bad_expired_and_missing_tokens(sandbox: Sandbox) -> None:
    access, _ = sandbox.issue_tokens("DEMO1", expires_in=60)
    missing = requests.get(f"{sandbox.base_url}/oauth/me", headers=API_HEADERS, timeout=TIMEOUT)
    unknown = me(sandbox, "not-a-token")
    sandbox.advance_time(61)
    expired = me(sandbox, access)

    for response in (missing, unknown, expired):
        assert response.status_code == 401
        assert response.headers[UC_REST_ERROR_HEADER]
        assert response.json()["success"] is False


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "sent", "lifetime"),
    [("3600", "3600", 3600), (7200, 7200, 7200), (None, None, 3600), ("soon", "soon", 3600)],
    ids=["string", "number", "omitted", "garbage"],
)
def test_expires_in_variants(
    sandbox: Sandbox, expires_in: str | int | None, sent: object, lifetime: int
) -> None:
    sandbox.configure(expires_in=expires_in)
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)

    body = exchange(sandbox, code).json()

    if sent is None:
        assert "expires_in" not in body
    else:
        assert body["expires_in"] == sent
        assert type(body["expires_in"]) is type(sent)
    # The token really lives `lifetime` seconds, whatever the client was told
    sandbox.advance_time(lifetime - 5)
    assert me(sandbox, body["access_token"]).status_code == 200
    sandbox.advance_time(10)
    assert me(sandbox, body["access_token"]).status_code == 401


def test_merchant_id_can_be_left_out_of_token_responses(sandbox: Sandbox) -> None:
    sandbox.configure(include_merchant_id=False)
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)

    body = exchange(sandbox, code).json()

    assert "merchant_id" not in body
    assert me(sandbox, body["access_token"]).json()["merchant_id"] == "DEMO1"


def test_configure_rejects_bad_values(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="rotate"):
        sandbox.configure(rotate="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency_scope"):
        sandbox.configure(concurrency_scope="ip")  # type: ignore[arg-type]
    assert sandbox.settings.rotate is True


def test_client_secret_is_required_only_when_configured(sandbox: Sandbox) -> None:
    # Given the default sandbox, a sent secret is ignored
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)
    form = {
        "client_id": sandbox.client_id,
        "client_secret": "anything",
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
    }
    assert post_token(sandbox, form).status_code == 200

    # Given a sandbox with a secret, token and revoke calls must send it
    with Sandbox(client_secret="s3cret") as secured:
        _, refresh_token = secured.issue_tokens("DEMO1")
        base = {"client_id": secured.client_id, "grant_type": "refresh_token", "refresh_token": refresh_token}
        without = post_token(secured, base)
        wrong = post_token(secured, {**base, "client_secret": "guess"})
        unrevoked = requests.post(
            f"{secured.base_url}/oauth/revoke",
            data={"client_id": secured.client_id, "token": refresh_token},
            headers=API_HEADERS,
            timeout=TIMEOUT,
        )
        right = post_token(secured, {**base, "client_secret": "s3cret"})

    assert without.status_code == wrong.status_code == unrevoked.status_code == 401
    assert without.json()["error"] == wrong.json()["error"] == "invalid_client"
    assert right.status_code == 200


def device_authorize(sandbox: SandboxApi, form: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{sandbox.base_url}/oauth/device/authorize", data=form, headers=API_HEADERS, timeout=TIMEOUT
    )


@pytest.fixture(params=["in_process", "over_http"])
def either_control(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[SandboxApi]:
    """The sandbox's controls, in-process or over its control API."""
    if request.param == "in_process":
        yield sandbox
        return
    with SandboxControl(sandbox.base_url) as remote:
        yield remote


def test_refusing_the_app_answers_invalid_client_on_every_oauth_endpoint_and_keeps_the_grants(
    sandbox: Sandbox, either_control: SandboxApi
) -> None:
    # Given live grants, and UltraCart refusing the app's client (in-process or over the control API)
    control = either_control
    access, refresh_token = sandbox.issue_tokens("DEMO1")
    code = sandbox.issue_code("DEMO2", REDIRECT_URI)
    assert control.configure(refuse_client=True).refuse_client is True

    # When the app calls the token, revoke and device authorize endpoints
    answers = [
        refresh(sandbox, refresh_token),
        exchange(sandbox, code),
        revoke(sandbox, refresh_token),
        device_authorize(sandbox, {"client_id": sandbox.client_id, "scope": "crm"}),
    ]

    # Then every one is refused as the app's fault, and no grant was touched or consumed
    assert [a.status_code for a in answers] == [401, 401, 401, 401]
    assert {a.json()["error"] for a in answers} == {"invalid_client"}
    assert sandbox.refresh_token_is_valid(refresh_token) and sandbox.token_is_valid(access)
    assert sandbox.live_grants("DEMO1").refresh_tokens == [refresh_token]
    control.configure(refuse_client=False)
    assert exchange(sandbox, code).status_code == 200  # the code was not spent
    assert refresh(sandbox, refresh_token).status_code == 200


@pytest.mark.parametrize("remote", [False, True])
def test_the_expected_client_secret_can_be_changed_and_reset_restores_it(
    sandbox: Sandbox, remote: bool
) -> None:
    control: SandboxApi = SandboxControl(sandbox.base_url) if remote else sandbox
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    base = {"client_id": sandbox.client_id, "grant_type": "refresh_token", "refresh_token": refresh_token}
    control.set_client_secret("rotated-secret")
    old = post_token(sandbox, {**base, "client_secret": "first-secret"})
    assert (old.status_code, old.json()["error"]) == (401, "invalid_client")
    assert sandbox.refresh_token_is_valid(refresh_token)
    new = post_token(sandbox, {**base, "client_secret": "rotated-secret"})
    assert new.status_code == 200
    control.reset()  # back to the secret the sandbox started with: none
    assert sandbox.client_secret is None
    _, fresh = sandbox.issue_tokens("DEMO1")
    assert refresh(sandbox, fresh).status_code == 200


def test_the_client_controls_reject_bad_values(sandbox: Sandbox) -> None:
    with SandboxControl(sandbox.base_url) as control:
        with pytest.raises(SandboxControlError, match="refuse_client"):
            control.configure(refuse_client="yes")  # type: ignore[arg-type]
        with pytest.raises(SandboxControlError, match="client_secret"):
            control._call("POST", "client_secret", json={"client_secret": ""})
    assert sandbox.settings.refuse_client is False and sandbox.client_secret is None


# -- faults -------------------------------------------------------------------------------------


def test_status_fault_answers_once_with_uc_rest_error(sandbox: Sandbox) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("token", status=502, uc_rest_error="Upstream unavailable")

    failed = refresh(sandbox, refresh_token)
    recovered = refresh(sandbox, refresh_token)

    assert failed.status_code == 502
    assert failed.headers[UC_REST_ERROR_HEADER] == "Upstream unavailable"
    assert failed.json()["error"]["user_message"] == "Upstream unavailable"
    # The fault answered instead of UltraCart: the token was not rotated
    assert recovered.status_code == 200
    assert sandbox.requests("token")[0].fault == "status:502"


def test_status_fault_with_custom_body(sandbox: Sandbox) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("token", status=400, body={"error": "invalid_grant", "error_description": "gone"})

    response = refresh(sandbox, refresh_token)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": "gone"}


def test_fault_only_for_one_grant_type(sandbox: Sandbox) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("token", status=429, grant_type="refresh_token")

    exchanged = exchange(sandbox, sandbox.issue_code("DEMO2", REDIRECT_URI))
    refreshed = refresh(sandbox, refresh_token)

    assert exchanged.status_code == 200
    assert refreshed.status_code == 429
    assert refreshed.headers[UC_REST_ERROR_HEADER]


def test_fault_times_and_forever(sandbox: Sandbox) -> None:
    access, _ = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("me", status=500, times=2)

    assert [me(sandbox, access).status_code for _ in range(3)] == [500, 500, 200]

    sandbox.add_fault("me", status=410, times=-1)
    assert [me(sandbox, access).status_code for _ in range(3)] == [410, 410, 410]
    sandbox.clear_faults()
    assert me(sandbox, access).status_code == 200


def test_latency_fault_delays_then_answers(sandbox: Sandbox) -> None:
    access, _ = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("me", latency_ms=300)

    started = time.monotonic()
    response = me(sandbox, access)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_base_latency_applies_to_every_api_call(sandbox: Sandbox) -> None:
    access, _ = sandbox.issue_tokens("DEMO1")
    sandbox.configure(latency_ms=150)

    started = time.monotonic()
    assert me(sandbox, access).status_code == 200
    assert revoke(sandbox, "unknown").status_code == 200

    assert time.monotonic() - started >= 0.3


def test_timeout_fault_holds_the_call_without_answering(sandbox: Sandbox) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("token", timeout=3)

    with pytest.raises(requests.ReadTimeout):
        refresh(sandbox, refresh_token, timeout=0.3)

    # UltraCart never got to it: the refresh token is untouched
    assert sandbox.refresh_token_is_valid(refresh_token)
    entry = sandbox.requests("token")[0]
    assert entry.fault == "timeout"
    assert entry.status is None


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [
        ("truncated", "application/json"),
        ("html", "text/html"),
        ("not_json", "text/plain"),
        ("empty", "application/json"),
    ],
)
def test_malformed_fault_answers_200_with_an_unusable_body(
    sandbox: Sandbox, kind: Any, content_type: str
) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("token", malformed=kind)

    response = refresh(sandbox, refresh_token)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(content_type)
    with pytest.raises(ValueError):
        response.json()
    assert sandbox.refresh_token_is_valid(refresh_token)


def test_reset_fault_drops_the_connection(sandbox: Sandbox) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("token", reset=True)

    with pytest.raises(requests.ConnectionError):
        refresh(sandbox, refresh_token)

    assert sandbox.refresh_token_is_valid(refresh_token)
    assert refresh(sandbox, refresh_token).status_code == 200


def test_after_success_fault_does_the_work_then_fails(sandbox: Sandbox) -> None:
    # Given UltraCart rotates the refresh token but the reply is lost as a 500
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("token", after_success=True, grant_type="refresh_token")

    lost = refresh(sandbox, refresh_token)

    assert lost.status_code == 500
    assert lost.headers[UC_REST_ERROR_HEADER]
    # Then the old refresh token is already dead: a retry gets invalid_grant
    assert not sandbox.refresh_token_is_valid(refresh_token)
    assert refresh(sandbox, refresh_token).json()["error"] == "invalid_grant"
    assert sandbox.requests("token")[0].fault == "status:500+after_success"


def test_after_success_with_reset_revokes_then_drops(sandbox: Sandbox) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("revoke", after_success=True, reset=True)

    with pytest.raises(requests.ConnectionError):
        revoke(sandbox, refresh_token)

    assert not sandbox.refresh_token_is_valid(refresh_token)
    assert revoke(sandbox, refresh_token).json()["successful"] is False


def test_authorize_page_can_fail(sandbox: Sandbox) -> None:
    sandbox.add_fault("authorize", status=503)

    page, _ = open_consent(sandbox)

    assert page.status_code == 503


def test_invalid_faults_are_rejected(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        sandbox.add_fault("invoices", status=500)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most one"):
        sandbox.add_fault("token", status=500, reset=True)
    with pytest.raises(ValueError, match="malformed"):
        sandbox.add_fault("token", malformed="xml")  # type: ignore[arg-type]


# -- concurrency and rate limits ----------------------------------------------------------------


def _while_one_call_is_in_flight(
    sandbox: Sandbox, slow_call: Callable[[], requests.Response], other_call: Callable[[], requests.Response]
) -> tuple[requests.Response, requests.Response]:
    """Start `slow_call` (made slow by a latency fault), make `other_call` meanwhile."""
    sandbox.add_fault("token", latency_ms=1000)
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(slow_call)
        # The entry is logged only once the call holds its slot
        wait_for(lambda: len(sandbox.requests("token")) == 1)
        other = other_call()
        return slow.result(timeout=TIMEOUT), other


def test_concurrent_calls_for_one_merchant_get_429(sandbox: Sandbox) -> None:
    access, refresh_token = sandbox.issue_tokens("DEMO1")

    slow, other = _while_one_call_is_in_flight(
        sandbox, lambda: refresh(sandbox, refresh_token), lambda: me(sandbox, access)
    )

    assert slow.status_code == 200
    assert other.status_code == 429
    assert other.headers[UC_REST_ERROR_HEADER]
    # Once the first call is answered the merchant is free again
    assert me(sandbox, access).status_code == 200


def test_merchant_scope_lets_other_merchants_through(sandbox: Sandbox) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    other_access, _ = sandbox.issue_tokens("DEMO2")

    slow, other = _while_one_call_is_in_flight(
        sandbox, lambda: refresh(sandbox, refresh_token), lambda: me(sandbox, other_access)
    )

    assert (slow.status_code, other.status_code) == (200, 200)


def test_application_scope_limits_across_merchants(sandbox: Sandbox) -> None:
    sandbox.configure(concurrency_scope="application")
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    other_access, _ = sandbox.issue_tokens("DEMO2")

    slow, other = _while_one_call_is_in_flight(
        sandbox, lambda: refresh(sandbox, refresh_token), lambda: me(sandbox, other_access)
    )

    assert (slow.status_code, other.status_code) == (200, 429)


def test_application_scope_counts_per_client_id(sandbox: Sandbox) -> None:
    # A call of another application (client id) is not this application's concurrent call: it
    # gets that application's answer (here: unknown to the sandbox), not a 429.
    sandbox.configure(concurrency_scope="application")
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    _, other_refresh = sandbox.issue_tokens("DEMO2")
    another_app = {"client_id": "another-app", "grant_type": "refresh_token", "refresh_token": other_refresh}

    slow, other = _while_one_call_is_in_flight(
        sandbox, lambda: refresh(sandbox, refresh_token), lambda: post_token(sandbox, another_app)
    )

    assert (slow.status_code, other.status_code) == (200, 401)
    assert other.json()["error"] == "invalid_client"


def test_concurrency_limit_can_be_switched_off(sandbox: Sandbox) -> None:
    sandbox.configure(concurrency_scope=None)
    access, refresh_token = sandbox.issue_tokens("DEMO1")

    slow, other = _while_one_call_is_in_flight(
        sandbox, lambda: refresh(sandbox, refresh_token), lambda: me(sandbox, access)
    )

    assert (slow.status_code, other.status_code) == (200, 200)


def test_rate_limit_per_application(sandbox: Sandbox) -> None:
    sandbox.configure(rate_per_second=1)
    access, _ = sandbox.issue_tokens("DEMO1")
    other_access, _ = sandbox.issue_tokens("DEMO2")

    first = me(sandbox, access)
    second = me(sandbox, other_access)

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers[UC_REST_ERROR_HEADER]


# -- the request log ----------------------------------------------------------------------------


def test_request_log_shows_what_ultracart_received(sandbox: Sandbox) -> None:
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)
    before = time.time()
    tokens = exchange(sandbox, code).json()
    refresh(sandbox, tokens["refresh_token"])
    me(sandbox, tokens["access_token"])

    exchanged, refreshed = sandbox.requests("token")
    (who,) = sandbox.requests("me")

    assert exchanged.method == "POST"
    assert exchanged.path == "/rest/v2/oauth/token"
    assert exchanged.endpoint == "token"
    assert exchanged.time >= before
    assert exchanged.header("x-ultracart-api-version") == API_VERSION
    assert exchanged.header("Content-Type") == "application/x-www-form-urlencoded"
    assert exchanged.form == {
        "client_id": sandbox.client_id,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
    }
    assert (exchanged.grant_type, exchanged.merchant_id, exchanged.status) == (
        "authorization_code",
        "DEMO1",
        200,
    )
    assert refreshed.form["refresh_token"] == tokens["refresh_token"]
    assert (refreshed.grant_type, refreshed.merchant_id, refreshed.status) == ("refresh_token", "DEMO1", 200)
    assert who.header("Authorization") == f"Bearer {tokens['access_token']}"
    assert (who.method, who.merchant_id, who.status, who.fault) == ("GET", "DEMO1", 200, None)
    assert [entry.endpoint for entry in sandbox.requests()] == ["token", "token", "me"]

    sandbox.clear_requests()
    assert sandbox.requests() == []


def test_request_log_keeps_failed_calls_and_their_merchant(sandbox: Sandbox) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO9")
    sandbox.add_fault("token", status=500)

    refresh(sandbox, refresh_token)
    exchange(sandbox, "unknown-code")

    faulted, refused = sandbox.requests("token")
    assert (faulted.status, faulted.fault, faulted.merchant_id) == (500, "status:500", "DEMO9")
    assert (refused.status, refused.fault, refused.merchant_id) == (400, None, None)


# -- the consent page ---------------------------------------------------------------------------


def test_consent_page_offers_approve_and_deny(sandbox: Sandbox) -> None:
    page, form = open_consent(sandbox)

    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert form.action == "/rest/v2/oauth/authorize"
    assert form.elements["merchant_id"]["value"] == "DEMO1"
    assert form.elements["approve"]["tag"] == form.elements["deny"]["tag"] == "button"
    assert form.hidden == {
        "response_type": "code",
        "client_id": sandbox.client_id,
        "redirect_uri": REDIRECT_URI,
        "state": "state-123",
    }


def test_consent_page_escapes_what_it_shows(sandbox: Sandbox) -> None:
    hostile = '"><script>alert(1)</script>'

    page, form = open_consent(sandbox, state=hostile, redirect_uri=f"{REDIRECT_URI}?next={hostile}")

    assert "<script>" not in page.text
    assert form.hidden["state"] == hostile


def test_approve_redirects_with_a_code_and_the_state(sandbox: Sandbox) -> None:
    _, form = open_consent(sandbox)

    response = submit_consent(sandbox, form, form.submission("approve", merchant_id="ACME7"))

    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    query = query_of(location)
    assert query["state"] == "state-123"
    tokens = exchange(sandbox, query["code"])
    assert tokens.json()["merchant_id"] == "ACME7"


def test_approve_keeps_the_redirect_uris_own_query(sandbox: Sandbox) -> None:
    redirect_uri = f"{REDIRECT_URI}?tenant=a%26b"
    _, form = open_consent(sandbox, redirect_uri=redirect_uri)

    response = submit_consent(sandbox, form, form.submission("approve"))

    query = query_of(response.headers["Location"])
    assert query["tenant"] == "a&b"
    assert exchange(sandbox, query["code"], redirect_uri).status_code == 200


def test_deny_redirects_with_access_denied(sandbox: Sandbox) -> None:
    _, form = open_consent(sandbox)

    response = submit_consent(sandbox, form, form.submission("deny"))

    assert response.status_code == 302
    query = query_of(response.headers["Location"])
    assert query["error"] == "access_denied"
    assert query["error_description"]
    assert query["state"] == "state-123"
    assert "code" not in query


def test_approve_needs_a_merchant_id(sandbox: Sandbox) -> None:
    _, form = open_consent(sandbox)

    response = submit_consent(sandbox, form, form.submission("approve", merchant_id=" "))

    assert response.status_code == 400
    assert 'id="approve"' in response.text


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_id": "someone-else"},
        {"response_type": "token"},
        {"redirect_uri": ""},
        {"redirect_uri": "/relative"},
    ],
    ids=["unknown-client", "not-code", "no-redirect", "relative-redirect"],
)
def test_bad_authorize_requests_get_an_error_page(sandbox: Sandbox, overrides: dict[str, str]) -> None:
    page, form = open_consent(sandbox, **overrides)

    assert page.status_code == 400
    assert page.headers["Content-Type"].startswith("text/html")
    assert "approve" not in form.elements


# -- an ordinary REST endpoint: the order list ----------------------------------------------------


def orders(sandbox: SandboxApi, access_token: str | None, query: str = "") -> requests.Response:
    headers = dict(API_HEADERS)
    if access_token is not None:
        headers["Authorization"] = f"Bearer {access_token}"
    return requests.get(f"{sandbox.base_url}/order/orders{query}", headers=headers, timeout=TIMEOUT)


def test_the_order_list_answers_a_live_token_in_ultracarts_shape(sandbox: Sandbox) -> None:
    from ultracart.api.order_api import OrderApi
    from ultracart.api_client import ApiClient
    from ultracart.configuration import Configuration

    access, _ = sandbox.issue_tokens("ACME7")
    raw = orders(sandbox, access, "?_limit=5&_offset=0")
    assert raw.status_code == 200
    assert raw.json()["orders"] == [{"order_id": "ACME7-0001", "merchant_id": "ACME7"}]

    configuration = Configuration(host=sandbox.base_url, access_token=access)
    client = ApiClient(configuration, header_name="X-UltraCart-Api-Version", header_value=API_VERSION)
    parsed = OrderApi(client).get_orders(limit=5)
    assert parsed.success is True and parsed.metadata.result_set.total_records == 1
    assert parsed.orders[0].order_id == "ACME7-0001"
    logged = sandbox.requests("orders")
    assert [(e.method, e.path, e.status, e.merchant_id) for e in logged] == [
        ("GET", "/rest/v2/order/orders", 200, "ACME7"),
        ("GET", "/rest/v2/order/orders", 200, "ACME7"),
    ]
    assert logged[1].query == {"_limit": "5"}


def test_the_order_list_refuses_missing_unknown_expired_and_revoked_tokens(sandbox: Sandbox) -> None:
    expiring, _ = sandbox.issue_tokens("DEMO1")
    revoked, _ = sandbox.issue_tokens("DEMO1")
    other, _ = sandbox.issue_tokens("DEMO2")
    assert revoke(sandbox, revoked).json()["successful"] is True
    assert sandbox.expire_access_tokens("DEMO1") == 1  # the revoked one is already dead

    answers = [orders(sandbox, t) for t in (None, "not-a-token", expiring, revoked)]

    assert [a.status_code for a in answers] == [401, 401, 401, 401]
    assert all(a.json()["success"] is False and UC_REST_ERROR_HEADER in a.headers for a in answers)
    assert orders(sandbox, other).status_code == 200  # another merchant's token lives on
    assert [e.status for e in sandbox.requests("orders")] == [401, 401, 401, 401, 200]


def test_expiring_access_tokens_leaves_the_refresh_token_working(sandbox: Sandbox) -> None:
    access, refresh_token = sandbox.issue_tokens("DEMO1")
    with SandboxControl(sandbox.base_url) as control:
        assert control.expire_access_tokens("DEMO1") == 1
        assert control.expire_access_tokens("DEMO1") == 0
    assert not sandbox.token_is_valid(access)
    renewed = refresh(sandbox, refresh_token)
    assert renewed.status_code == 200
    assert orders(sandbox, renewed.json()["access_token"]).status_code == 200


# -- control over HTTP --------------------------------------------------------------------------


@pytest.fixture
def control(sandbox: Sandbox) -> Iterator[SandboxControl]:
    with SandboxControl(sandbox.base_url) as remote:
        yield remote


def test_control_over_http_drives_the_sandbox(sandbox: Sandbox, control: SandboxControl) -> None:
    assert control.base_url == sandbox.base_url
    assert control.client_id == sandbox.client_id

    settings = control.configure(rotate=False, expires_in=None)
    assert (settings.rotate, settings.expires_in) == (False, None)
    assert sandbox.settings.rotate is False

    access, refresh_token = control.issue_tokens("DEMO1", expires_in=100)
    assert control.token_is_valid(access)
    assert not control.token_is_valid(refresh_token)
    assert control.refresh_token_is_valid(refresh_token)
    assert not control.refresh_token_is_valid(access)
    control.advance_time(101)
    assert not control.token_is_valid(access)

    code = control.issue_code("DEMO2", REDIRECT_URI)
    assert exchange(sandbox, code).json()["merchant_id"] == "DEMO2"

    control.add_fault("token", status=503, grant_type="refresh_token")
    assert refresh(sandbox, refresh_token).status_code == 503
    (entry,) = control.requests("token")[1:]
    assert (entry.grant_type, entry.status, entry.fault, entry.merchant_id) == (
        "refresh_token",
        503,
        "status:503",
        "DEMO1",
    )
    assert entry.form["refresh_token"] == refresh_token

    control.add_fault("token", status=500)
    control.clear_faults()
    assert refresh(sandbox, refresh_token).status_code == 200
    control.clear_requests()
    assert control.requests() == []

    control.reset()
    assert not control.refresh_token_is_valid(refresh_token)
    assert sandbox.settings.rotate is True


def test_control_over_http_reports_bad_arguments(control: SandboxControl) -> None:
    with pytest.raises(SandboxControlError, match="malformed"):
        control.add_fault("token", malformed="xml")  # type: ignore[arg-type]
    with pytest.raises(SandboxControlError, match="rotate"):
        control.configure(rotate="sometimes")  # type: ignore[arg-type]


def test_control_endpoints_speak_json(sandbox: Sandbox) -> None:
    root = f"{sandbox.url}/__sandbox"

    health = requests.get(f"{root}/health", timeout=TIMEOUT)
    made = requests.post(f"{root}/tokens", json={"merchant_id": "DEMO1"}, timeout=TIMEOUT)
    valid = requests.get(
        f"{root}/tokens/valid", params={"token": made.json()["access_token"]}, timeout=TIMEOUT
    )
    fault = requests.post(f"{root}/faults", json={"endpoint": "me", "status": 500}, timeout=TIMEOUT)
    pending = requests.get(f"{root}/faults", timeout=TIMEOUT)
    bad = requests.post(f"{root}/faults", data="{not json", timeout=TIMEOUT)
    unknown = requests.get(f"{root}/nothing", timeout=TIMEOUT)

    assert health.json() == {"ok": True, "base_url": sandbox.base_url, "client_id": sandbox.client_id}
    assert made.status_code == 201
    assert valid.json() == {"access_token_valid": True, "refresh_token_valid": False}
    assert fault.status_code == 201
    assert [(f["endpoint"], f["status"], f["remaining"]) for f in pending.json()["faults"]] == [
        ("me", 500, 1)
    ]
    assert bad.status_code == 400
    assert unknown.status_code == 404
    # Control calls are not UltraCart calls: the log stays empty
    assert sandbox.requests() == []


# -- running alone ------------------------------------------------------------------------------


def test_runs_alone_as_a_module() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "local")}
    process = subprocess.Popen(
        [sys.executable, "-m", "ucsandbox", "--port", "0", "--client-id", "cli-client"],
        cwd=REPO_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    stream = process.stderr

    def read_lines() -> None:
        for line in stream:
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        first = lines.get(timeout=15)
        assert first.startswith("UltraCart sandbox listening on http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1].strip()
        with SandboxControl(url) as control:
            control.wait_ready()
            assert control.client_id == "cli-client"
            access, _ = control.issue_tokens("DEMO1")
            assert me(control, access).json()["client_id"] == "cli-client"
            assert [entry.status for entry in control.requests("me")] == [200]
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=5)
    # One line per request on stderr, without token values
    logged = "".join(lines.queue)
    assert "GET /rest/v2/oauth/me 200" in logged
    assert access not in logged


# -- device authorization (RFC 8628) -----------------------------------------------------------

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def start_device(sandbox: SandboxApi, scope: str = "crm") -> dict[str, Any]:
    answer = requests.post(
        f"{sandbox.base_url}/oauth/device/authorize",
        data={"client_id": sandbox.client_id, "scope": scope},
        headers=API_HEADERS,
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    data: dict[str, Any] = answer.json()
    return data


def poll_device(sandbox: SandboxApi, device_code: str) -> requests.Response:
    return post_token(
        sandbox, {"client_id": sandbox.client_id, "grant_type": DEVICE_GRANT, "device_code": device_code}
    )


def test_device_authorize_needs_a_scope_and_a_known_client(sandbox: Sandbox) -> None:
    url = f"{sandbox.base_url}/oauth/device/authorize"
    no_scope = requests.post(url, data={"client_id": sandbox.client_id}, headers=API_HEADERS, timeout=TIMEOUT)
    assert no_scope.status_code == 400 and no_scope.json()["error"] == "invalid_request"
    stranger = requests.post(
        url, data={"client_id": "nobody", "scope": "crm"}, headers=API_HEADERS, timeout=TIMEOUT
    )
    assert stranger.status_code == 401 and stranger.json()["error"] == "invalid_client"


def test_device_polls_pending_slow_down_when_too_fast_then_tokens_once(sandbox: Sandbox) -> None:
    started = start_device(sandbox)
    assert len(started["user_code"]) == 9 and started["user_code"][4] == "-"
    first = poll_device(sandbox, started["device_code"])
    assert first.status_code == 400 and first.json()["error"] == "authorization_pending"
    too_fast = poll_device(sandbox, started["device_code"])
    assert too_fast.json()["error"] == "slow_down"  # and the interval is now 10 s
    sandbox.advance_time(6)
    assert poll_device(sandbox, started["device_code"]).json()["error"] == "slow_down"
    sandbox.advance_time(16)
    assert poll_device(sandbox, started["device_code"]).json()["error"] == "authorization_pending"
    sandbox.device(started["user_code"].lower().replace("-", ""), "approve", merchant_id="DEVSB1")
    sandbox.advance_time(16)
    tokens = poll_device(sandbox, started["device_code"])
    assert tokens.status_code == 200
    body = tokens.json()
    assert body["merchant_id"] == "DEVSB1" and body["scope"] == "crm" and isinstance(body["expires_in"], str)
    assert sandbox.live_grants("DEVSB1").refresh_tokens == [body["refresh_token"]]
    sandbox.advance_time(16)
    assert poll_device(sandbox, started["device_code"]).json()["error"] == "invalid_grant"


def test_device_denied_and_expired(sandbox: Sandbox) -> None:
    denied, expired = start_device(sandbox), start_device(sandbox)
    sandbox.device(denied["user_code"], "deny")
    assert poll_device(sandbox, denied["device_code"]).json()["error"] == "access_denied"
    sandbox.device(expired["user_code"], "expire")
    assert poll_device(sandbox, expired["device_code"]).json()["error"] == "expired_token"
    assert poll_device(sandbox, "no-such-code").json()["error"] == "invalid_grant"


def test_the_verification_page_approves_denies_and_refuses_unknown_codes(sandbox: Sandbox) -> None:
    started = start_device(sandbox)
    page = requests.get(started["verification_uri_complete"], timeout=TIMEOUT)
    assert page.status_code == 200
    assert f'value="{started["user_code"]}"' in page.text
    assert 'id="approve"' in page.text and 'id="deny"' in page.text
    url = started["verification_uri"]
    unknown = requests.post(
        url, data={"user_code": "BBBB-BBBB", "merchant_id": "X1", "decision": "approve"}, timeout=TIMEOUT
    )
    assert unknown.status_code == 400 and "unknown, expired or already used" in unknown.text
    bad_merchant = requests.post(
        url,
        data={"user_code": started["user_code"], "merchant_id": "<b>", "decision": "approve"},
        timeout=TIMEOUT,
    )
    assert bad_merchant.status_code == 400 and "<b>" not in bad_merchant.text
    approved = requests.post(
        url,
        data={"user_code": started["user_code"], "merchant_id": "DEVSB2", "decision": "approve"},
        timeout=TIMEOUT,
    )
    assert approved.status_code == 200 and "Device connected" in approved.text
    again = requests.post(url, data={"user_code": started["user_code"], "decision": "deny"}, timeout=TIMEOUT)
    assert again.status_code == 400  # decided already
    assert [r.merchant_id for r in sandbox.requests("device") if r.status == 200][-1] == "DEVSB2"


def test_device_controls_refuse_bad_arguments(sandbox: Sandbox) -> None:
    started = start_device(sandbox)
    with SandboxControl(sandbox.url) as control:
        with pytest.raises(SandboxControlError, match="action"):
            control.device(started["user_code"], "maybe")  # type: ignore[arg-type]
        with pytest.raises(SandboxControlError, match="merchant_id"):
            control.device(started["user_code"], "approve")
        with pytest.raises(SandboxControlError, match="user_code"):
            control.device("ZZZZ-ZZZZ", "deny")
        control.device(started["user_code"], "slow_down", times=2)
    assert poll_device(sandbox, started["device_code"]).json()["error"] == "slow_down"
