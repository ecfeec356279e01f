"""The project's UltraCart client over real HTTP to the sandbox: wire format and error types."""

from __future__ import annotations

import pytest

from ucoauth.adapters.ultracart import UltraCartClient
from ucoauth.base.errors import AppCredentialsRejectedError, PermanentUltraCartError, TransientUltraCartError
from ucsandbox import Sandbox

pytestmark = pytest.mark.integration
REDIRECT = "http://localhost:3000/oauth/callback"


def client(sandbox: Sandbox, *, read_timeout: float = 2.0, secret: str | None = None) -> UltraCartClient:
    return UltraCartClient(
        sandbox.base_url,
        sandbox.client_id,
        client_secret=secret,
        connect_timeout=1,
        read_timeout=read_timeout,
    )


def test_code_exchange_sends_what_ultracart_expects(sandbox: Sandbox) -> None:
    code = sandbox.issue_code("DEMO1", REDIRECT)
    answer = client(sandbox).exchange_code(code, REDIRECT)
    assert answer.merchant_id == "DEMO1" and answer.expires_in == 3600 and answer.refresh_token
    assert sandbox.token_is_valid(answer.access_token)
    (request,) = sandbox.requests("token")
    assert request.header("X-UltraCart-Api-Version") == "2017-03-01"
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    assert request.form == {
        "client_id": sandbox.client_id,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
    }


def test_a_secret_is_sent_only_when_configured(sandbox: Sandbox) -> None:
    tokens = sandbox.issue_tokens("DEMO1")
    client(sandbox).refresh(tokens.refresh_token)
    assert "client_secret" not in sandbox.requests("token")[-1].form
    fresh = sandbox.issue_tokens("DEMO2")
    client(sandbox, secret="s3cr3t").refresh(fresh.refresh_token)
    assert sandbox.requests("token")[-1].form["client_secret"] == "s3cr3t"


@pytest.mark.parametrize(
    ("expires_in", "expected"), [("3600", 3600), (120, 120), (None, None), ("soon", None)]
)
def test_expires_in_as_string_number_absent_or_garbage(
    sandbox: Sandbox, expires_in: str | int | None, expected: int | None
) -> None:
    sandbox.configure(expires_in=expires_in)
    answer = client(sandbox).refresh(sandbox.issue_tokens("DEMO1").refresh_token)
    assert answer.expires_in == expected


def test_merchant_comes_from_me_when_the_token_response_lacks_it(sandbox: Sandbox) -> None:
    sandbox.configure(include_merchant_id=False)
    answer = client(sandbox).exchange_code(sandbox.issue_code("DEMO9", REDIRECT), REDIRECT)
    assert answer.merchant_id is None
    assert client(sandbox).me(answer.access_token).merchant_id == "DEMO9"
    assert sandbox.requests("me")[0].header("Authorization") == f"Bearer {answer.access_token}"


def test_rotation_off_keeps_the_refresh_token_and_omit_returns_none(sandbox: Sandbox) -> None:
    tokens = sandbox.issue_tokens("DEMO1")
    sandbox.configure(rotate=False)
    assert client(sandbox).refresh(tokens.refresh_token).refresh_token == tokens.refresh_token
    sandbox.configure(rotate="omit")
    assert client(sandbox).refresh(tokens.refresh_token).refresh_token is None


def test_revoke_reports_success_then_already_invalid(sandbox: Sandbox) -> None:
    tokens = sandbox.issue_tokens("DEMO1")
    assert client(sandbox).revoke(tokens.refresh_token).successful is True
    assert client(sandbox).revoke(tokens.refresh_token).successful is False
    assert not sandbox.refresh_token_is_valid(tokens.refresh_token)


@pytest.mark.parametrize(
    ("fault", "error_type", "status"),
    [
        ({"status": 429, "uc_rest_error": "Rate limit exceeded"}, TransientUltraCartError, 429),
        ({"status": 500}, TransientUltraCartError, 500),
        ({"status": 502}, TransientUltraCartError, 502),
        ({"status": 401}, AppCredentialsRejectedError, 401),  # a 401 without invalid_grant: the app's
        ({"status": 401, "body": {"error": "invalid_grant"}}, PermanentUltraCartError, 401),
        ({"status": 410}, PermanentUltraCartError, 410),
        ({"malformed": "truncated"}, TransientUltraCartError, 200),
        ({"malformed": "html"}, TransientUltraCartError, 200),
        ({"malformed": "not_json"}, TransientUltraCartError, 200),
        ({"malformed": "empty"}, TransientUltraCartError, 200),
        ({"status": 200, "body": {"token_type": "bearer"}}, TransientUltraCartError, 200),
        ({"reset": True}, TransientUltraCartError, None),
    ],
)
def test_failures_are_typed_and_never_carry_the_token(
    sandbox: Sandbox, fault: dict[str, object], error_type: type[Exception], status: int | None
) -> None:
    tokens = sandbox.issue_tokens("DEMO1")
    sandbox.add_fault("token", **fault)  # type: ignore[arg-type]
    with pytest.raises(error_type) as caught:
        client(sandbox).refresh(tokens.refresh_token)
    assert getattr(caught.value, "status", None) == status
    assert tokens.refresh_token not in str(caught.value) and tokens.refresh_token not in repr(caught.value)


def test_uc_rest_error_text_is_kept(sandbox: Sandbox) -> None:
    sandbox.add_fault("token", status=429, uc_rest_error="Too many requests for this application")
    with pytest.raises(TransientUltraCartError) as caught:
        client(sandbox).refresh(sandbox.issue_tokens("DEMO1").refresh_token)
    assert caught.value.rest_error == "Too many requests for this application"


def test_a_read_timeout_is_transient(sandbox: Sandbox) -> None:
    sandbox.add_fault("token", timeout=2.0)
    with pytest.raises(TransientUltraCartError, match="timed out"):
        client(sandbox, read_timeout=0.3).refresh(sandbox.issue_tokens("DEMO1").refresh_token)


def test_connection_refused_is_transient() -> None:
    dead = UltraCartClient("http://127.0.0.1:9/rest/v2", "x", connect_timeout=0.5, read_timeout=0.5)
    with pytest.raises(TransientUltraCartError):
        dead.refresh("whatever-token")


def test_invalid_grant_is_permanent_and_needs_reauthorization(sandbox: Sandbox) -> None:
    with pytest.raises(PermanentUltraCartError) as caught:
        client(sandbox).refresh("never-issued-refresh-token")
    assert caught.value.error == "invalid_grant" and caught.value.requires_reauthorization
