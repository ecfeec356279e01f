"""Contract between UltraCart's OAuth API and its clients, checked against the sandbox.

Each `ContractCase` drives a client through a neutral `Driver` (exchange, refresh, revoke, answering
plain dicts) and checks both what the client made of the answer and what UltraCart received (the
sandbox's request log). The official SDK (`ultracart-rest-sdk`) is the reference driver: if its
models cannot parse an answer, the sandbox is wrong, not the case. More drivers join via `DRIVERS`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest
from ultracart.api.oauth_api import OauthApi
from ultracart.api_client import ApiClient
from ultracart.configuration import Configuration
from ultracart.exceptions import ApiException, ApiTypeError
from ultracart.model.error_response import ErrorResponse
from ultracart.model.oauth_me_response import OauthMeResponse
from ultracart.model.oauth_revoke_success_response import OauthRevokeSuccessResponse
from ultracart.model.oauth_token_response import OauthTokenResponse
from ultracart.model_utils import validate_and_convert_types

from ucoauth.adapters.ultracart import TokenResponse, UltraCartClient, UltraCartError
from ucsandbox import API_VERSION, API_VERSION_HEADER, RecordedRequest, Sandbox, SandboxApi

pytestmark = pytest.mark.integration

REDIRECT_URI = "https://app.example.test/oauth/callback"
SDK_TIMEOUT = (3.05, 10.0)


class Driver(Protocol):
    """A client under test, reduced to plain dicts.

    Success: the answer's fields (a field UltraCart left out is absent or None). An OAuth or HTTP
    failure: the error body's fields (`error`, `error_description`) plus `http_status`.
    """

    def exchange(self, code: str, redirect_uri: str) -> dict[str, Any]: ...

    def refresh(self, refresh_token: str) -> dict[str, Any]: ...

    def revoke(self, token: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


def sdk_parse(data: object, model: Any, configuration: Any) -> Any:
    """Deserialize JSON data into an SDK model exactly as the SDK does for a 200 answer."""
    return validate_and_convert_types(
        data, (model,), ["received_data"], True, True, configuration=configuration
    )


def sdk_client(sandbox: SandboxApi, *, version_header: bool = True, access_token: str | None = None) -> Any:
    """An `ApiClient` configured the way UltraCart's samples do (the version header is opt-in)."""
    configuration = Configuration(host=sandbox.base_url)
    configuration.access_token = access_token
    if not version_header:
        return ApiClient(configuration=configuration)
    return ApiClient(configuration=configuration, header_name=API_VERSION_HEADER, header_value=API_VERSION)


class SdkDriver:
    """The official `ultracart-rest-sdk` OauthApi."""

    def __init__(self, sandbox: SandboxApi) -> None:
        self._client = sdk_client(sandbox)
        self._api = OauthApi(self._client)
        self._client_id = sandbox.client_id

    def exchange(self, code: str, redirect_uri: str) -> dict[str, Any]:
        return self._token("authorization_code", code=code, redirect_uri=redirect_uri)

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        return self._token("refresh_token", refresh_token=refresh_token)

    def revoke(self, token: str) -> dict[str, Any]:
        try:
            answer = self._api.oauth_revoke(self._client_id, token, _request_timeout=SDK_TIMEOUT)
        except ApiException as exc:
            return self._failure(exc)
        assert isinstance(answer, OauthRevokeSuccessResponse)
        return dict(answer.to_dict())

    def close(self) -> None:
        self._client.close()

    def _token(self, grant_type: str, **fields: str) -> dict[str, Any]:
        try:
            answer = self._api.oauth_access_token(
                self._client_id, grant_type, _request_timeout=SDK_TIMEOUT, **fields
            )
        except ApiException as exc:
            return self._failure(exc)
        assert isinstance(answer, OauthTokenResponse)
        return dict(answer.to_dict())

    def _failure(self, exc: Any) -> dict[str, Any]:
        # The SDK raises on non-2xx without parsing the body; its token model must still read
        # an OAuth error (error, error_description) the way UltraCart sends it.
        body = json.loads(exc.body)
        parsed = sdk_parse(body, OauthTokenResponse, self._client.configuration)
        return {**parsed.to_dict(), "http_status": exc.status}


class ProjectDriver:
    """The project's own runtime client (ucoauth.adapters.ultracart.UltraCartClient on requests)."""

    def __init__(self, sandbox: SandboxApi) -> None:
        self._client = UltraCartClient(sandbox.base_url, sandbox.client_id, connect_timeout=2, read_timeout=5)

    def exchange(self, code: str, redirect_uri: str) -> dict[str, Any]:
        return self._call(lambda: self._token(self._client.exchange_code(code, redirect_uri)))

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        return self._call(lambda: self._token(self._client.refresh(refresh_token)))

    def revoke(self, token: str) -> dict[str, Any]:
        return self._call(lambda: dataclasses.asdict(self._client.revoke(token)))

    def close(self) -> None:
        pass

    @staticmethod
    def _token(answer: TokenResponse) -> dict[str, Any]:
        out: dict[str, Any] = {
            "access_token": answer.access_token,
            "token_type": answer.token_type,
            "scope": answer.scope,
            "expires_in": answer.expires_in,
        }
        if answer.refresh_token is not None:
            out["refresh_token"] = answer.refresh_token
        if answer.merchant_id is not None:
            out["merchant_id"] = answer.merchant_id
        return out

    @staticmethod
    def _call(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return fn()
        except UltraCartError as exc:
            return {"error": exc.error, "error_description": exc.description, "http_status": exc.status}


DRIVERS: dict[str, Callable[[SandboxApi], Driver]] = {"sdk": SdkDriver, "project": ProjectDriver}


# -- the cases ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContractCase:
    name: str
    run: Callable[[Driver, SandboxApi], None]


def _only_request(sandbox: SandboxApi, endpoint: str) -> RecordedRequest:
    entries = sandbox.requests(endpoint)
    assert len(entries) == 1, entries
    return entries[0]


def _assert_ultracart_call(entry: RecordedRequest, form: dict[str, str], status: int) -> None:
    """What every UltraCart OAuth call must look like on the wire."""
    assert entry.method == "POST"
    assert entry.header(API_VERSION_HEADER) == API_VERSION
    assert (entry.header("Content-Type") or "").startswith("application/x-www-form-urlencoded")
    assert "application/json" in (entry.header("Accept") or "")
    # Exactly these fields: in particular no client_secret unless one is configured
    assert entry.form == form
    assert entry.status == status


def exchange_code(driver: Driver, sandbox: SandboxApi) -> None:
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)

    answer = driver.exchange(code, REDIRECT_URI)

    assert answer["access_token"]
    assert answer["refresh_token"]
    assert int(answer["expires_in"]) == 3600
    assert str(answer["token_type"]).lower() == "bearer"
    assert answer["scope"] == "order_read customer_read"
    assert answer["merchant_id"] == "DEMO1"
    assert sandbox.token_is_valid(answer["access_token"])
    entry = _only_request(sandbox, "token")
    expected = {
        "client_id": sandbox.client_id,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
    }
    _assert_ultracart_call(entry, expected, 200)
    assert entry.merchant_id == "DEMO1"


def used_code_is_refused(driver: Driver, sandbox: SandboxApi) -> None:
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)
    assert driver.exchange(code, REDIRECT_URI)["access_token"]

    answer = driver.exchange(code, REDIRECT_URI)

    assert answer["error"] == "invalid_grant"
    assert [entry.status for entry in sandbox.requests("token")] == [200, 400]


def refresh_with_rotation(driver: Driver, sandbox: SandboxApi) -> None:
    sandbox.configure(rotate=True)
    old_access, old_refresh = sandbox.issue_tokens("DEMO1")

    answer = driver.refresh(old_refresh)

    assert answer["access_token"] not in ("", old_access)
    assert answer["refresh_token"] not in ("", old_refresh)
    assert int(answer["expires_in"]) == 3600
    assert answer["merchant_id"] == "DEMO1"
    assert sandbox.refresh_token_is_valid(answer["refresh_token"])
    assert not sandbox.refresh_token_is_valid(old_refresh)
    expected = {"client_id": sandbox.client_id, "grant_type": "refresh_token", "refresh_token": old_refresh}
    _assert_ultracart_call(_only_request(sandbox, "token"), expected, 200)


def refresh_without_rotation(driver: Driver, sandbox: SandboxApi) -> None:
    sandbox.configure(rotate=False)
    _, refresh_token = sandbox.issue_tokens("DEMO1")

    answer = driver.refresh(refresh_token)

    assert answer["refresh_token"] == refresh_token
    assert sandbox.token_is_valid(answer["access_token"])
    assert sandbox.refresh_token_is_valid(refresh_token)


def refresh_without_refresh_token_in_answer(driver: Driver, sandbox: SandboxApi) -> None:
    sandbox.configure(rotate="omit")
    _, refresh_token = sandbox.issue_tokens("DEMO1")

    answer = driver.refresh(refresh_token)

    assert answer.get("refresh_token") is None
    assert sandbox.token_is_valid(answer["access_token"])
    assert sandbox.refresh_token_is_valid(refresh_token)


def rotated_refresh_token_is_refused(driver: Driver, sandbox: SandboxApi) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    assert driver.refresh(refresh_token)["access_token"]

    answer = driver.refresh(refresh_token)

    assert answer["error"] == "invalid_grant"
    assert answer["error_description"]


def revoke_then_refresh_is_refused(driver: Driver, sandbox: SandboxApi) -> None:
    _, refresh_token = sandbox.issue_tokens("DEMO1")

    revoked = driver.revoke(refresh_token)
    answer = driver.refresh(refresh_token)

    assert revoked["successful"] is True
    assert revoked["message"]
    assert answer["error"] == "invalid_grant"
    expected = {"client_id": sandbox.client_id, "token": refresh_token}
    _assert_ultracart_call(_only_request(sandbox, "revoke"), expected, 200)


def revoke_unknown_token(driver: Driver, sandbox: SandboxApi) -> None:
    answer = driver.revoke("never-issued")

    assert answer["successful"] is False
    assert answer["message"] == "Invalid token"


def answer_without_merchant_id(driver: Driver, sandbox: SandboxApi) -> None:
    sandbox.configure(include_merchant_id=False)
    code = sandbox.issue_code("DEMO1", REDIRECT_URI)

    answer = driver.exchange(code, REDIRECT_URI)

    # A client may fill it in from /oauth/me; it must not invent another merchant
    assert answer.get("merchant_id") in (None, "DEMO1")
    assert sandbox.token_is_valid(answer["access_token"])


def answer_without_expires_in(driver: Driver, sandbox: SandboxApi) -> None:
    sandbox.configure(expires_in=None)
    _, refresh_token = sandbox.issue_tokens("DEMO1")

    answer = driver.refresh(refresh_token)

    assert answer.get("expires_in") is None
    assert sandbox.token_is_valid(answer["access_token"])


CASES: list[ContractCase] = [
    ContractCase("exchange_code", exchange_code),
    ContractCase("used_code_is_refused", used_code_is_refused),
    ContractCase("refresh_with_rotation", refresh_with_rotation),
    ContractCase("refresh_without_rotation", refresh_without_rotation),
    ContractCase("refresh_without_refresh_token_in_answer", refresh_without_refresh_token_in_answer),
    ContractCase("rotated_refresh_token_is_refused", rotated_refresh_token_is_refused),
    ContractCase("revoke_then_refresh_is_refused", revoke_then_refresh_is_refused),
    ContractCase("revoke_unknown_token", revoke_unknown_token),
    ContractCase("answer_without_merchant_id", answer_without_merchant_id),
    ContractCase("answer_without_expires_in", answer_without_expires_in),
]


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[Driver]:
    made = DRIVERS[request.param](sandbox)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_contract(case: ContractCase, driver: Driver, sandbox: Sandbox) -> None:
    case.run(driver, sandbox)


# -- what the SDK itself does (facts the runtime client relies on) ------------------------------


def test_sdk_sends_no_version_header_unless_asked_and_is_refused(sandbox: Sandbox) -> None:
    # Given an ApiClient made without header_name/header_value (the generated default)
    api = OauthApi(sdk_client(sandbox, version_header=False))
    _, refresh_token = sandbox.issue_tokens("DEMO1")

    with pytest.raises(ApiException) as raised:
        api.oauth_access_token(
            sandbox.client_id, "refresh_token", refresh_token=refresh_token, _request_timeout=SDK_TIMEOUT
        )

    assert raised.value.status == 400
    entry = _only_request(sandbox, "token")
    assert entry.header(API_VERSION_HEADER) is None
    assert sandbox.refresh_token_is_valid(refresh_token)


def test_sdk_rejects_a_numeric_expires_in(sandbox: Sandbox) -> None:
    # Why the sandbox sends expires_in as a string by default: the SDK's model insists on it
    sandbox.configure(expires_in=3600)
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    api = OauthApi(sdk_client(sandbox))

    with pytest.raises(ApiTypeError, match="expires_in"):
        api.oauth_access_token(
            sandbox.client_id, "refresh_token", refresh_token=refresh_token, _request_timeout=SDK_TIMEOUT
        )


def test_sdk_me_sends_the_bearer_token_and_its_model_parses_the_answer(sandbox: Sandbox) -> None:
    access, _ = sandbox.issue_tokens("DEMO1")
    client = sdk_client(sandbox, access_token=access)

    # oauth_me is generated without a response model: read the raw answer and parse it with OauthMeResponse
    raw = OauthApi(client).oauth_me(_preload_content=False, _request_timeout=SDK_TIMEOUT)
    parsed = sdk_parse(json.loads(raw.data), OauthMeResponse, client.configuration)

    assert raw.status == 200
    assert parsed.merchant_id == "DEMO1"
    assert parsed.client_id == sandbox.client_id
    assert list(parsed.scopes) == ["order_read", "customer_read"]
    entry = _only_request(sandbox, "me")
    assert entry.header("Authorization") == f"Bearer {access}"
    assert entry.header(API_VERSION_HEADER) == API_VERSION


def test_sdk_error_model_parses_ultracart_rest_errors(sandbox: Sandbox) -> None:
    sandbox.add_fault("token", status=429, uc_rest_error="Too many requests")
    _, refresh_token = sandbox.issue_tokens("DEMO1")
    client = sdk_client(sandbox)

    with pytest.raises(ApiException) as raised:
        OauthApi(client).oauth_access_token(
            sandbox.client_id, "refresh_token", refresh_token=refresh_token, _request_timeout=SDK_TIMEOUT
        )

    assert raised.value.status == 429
    assert raised.value.headers["UC-REST-ERROR"] == "Too many requests"
    parsed = sdk_parse(json.loads(raised.value.body), ErrorResponse, client.configuration)
    assert parsed.success is False
    assert parsed.error.user_message == "Too many requests"


# -- device authorization (RFC 8628) --------------------------------------------------------------


def test_sdk_device_authorize_and_device_code_grant_parse_the_sandboxs_answers(sandbox: Sandbox) -> None:
    from ultracart.model.oauth_device_authorization_response import OauthDeviceAuthorizationResponse

    client = sdk_client(sandbox)
    api = OauthApi(client)
    try:
        # The SDK's device authorize: POST /oauth/device/authorize, form client_id and scope.
        started = api.oauth_device_authorize(sandbox.client_id, "crm", _request_timeout=SDK_TIMEOUT)
        assert isinstance(started, OauthDeviceAuthorizationResponse)
        assert started.interval == 5 and started.expires_in == 900
        assert started.verification_uri_complete.endswith(f"?user_code={started.user_code}")
        (asked,) = sandbox.requests("device_authorize")
        assert asked.path == "/rest/v2/oauth/device/authorize"
        assert asked.form == {"client_id": sandbox.client_id, "scope": "crm"}

        def poll() -> Any:
            return api.oauth_access_token(
                sandbox.client_id,
                "urn:ietf:params:oauth:grant-type:device_code",
                device_code=started.device_code,
                _request_timeout=SDK_TIMEOUT,
            )

        # Pending: a 400 whose body the SDK's token model parses (the error field).
        with pytest.raises(ApiException) as pending:
            poll()
        assert pending.value.status == 400
        assert json.loads(pending.value.body)["error"] == "authorization_pending"
        sdk_parse(json.loads(pending.value.body), OauthTokenResponse, client.configuration)
        # Polling again at once: slow_down.
        with pytest.raises(ApiException) as slow:
            poll()
        assert json.loads(slow.value.body)["error"] == "slow_down"
        # Approved (and the interval waited, by moving UltraCart's clock): the token response.
        sandbox.device(started.user_code, "approve", merchant_id="SDKDEV")
        sandbox.advance_time(11)
        answer = poll()
        assert isinstance(answer, OauthTokenResponse)
        assert answer.merchant_id == "SDKDEV" and answer.scope == "crm"
        assert sandbox.token_is_valid(answer.access_token)
        # Spent: invalid_grant.
        with pytest.raises(ApiException) as spent:
            poll()
        assert json.loads(spent.value.body)["error"] == "invalid_grant"
    finally:
        client.close()


def test_our_client_reads_device_answers_like_the_sdk(sandbox: Sandbox) -> None:
    client = UltraCartClient(sandbox.base_url, sandbox.client_id)
    started = client.device_authorize("crm")
    assert started.interval == 5 and started.expires_in == 900
    assert "device_code" not in repr(started) and started.user_code not in repr(started)
    with pytest.raises(UltraCartError) as pending:
        client.poll_device(started.device_code)
    assert pending.value.error == "authorization_pending"
    sandbox.device(started.user_code, "deny")
    sandbox.advance_time(6)
    with pytest.raises(UltraCartError) as denied:
        client.poll_device(started.device_code)
    assert denied.value.error == "access_denied"
    (poll, _) = sandbox.requests("token")
    assert poll.form == {
        "client_id": sandbox.client_id,
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": started.device_code,
    }
