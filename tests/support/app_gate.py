"""UltraCart's client authentication in front of the fake UltraCart, for unit tests (no network).

The package's real :class:`~ucoauth.adapters.ultracart.UltraCartClient` talks to :class:`AppGate`, a
stand-in for its ``requests`` session: calls the app's client authenticates (token, revoke, device
authorize) are refused with UltraCart's ``401 {"error": "invalid_client"}`` while the gate refuses
the app, or when they carry another client secret than the one it expects; every other call is
answered by the :class:`~tests.support.fake_ultracart.FakeUltraCart` behind it, as JSON. So the
client's own reading of UltraCart's answers decides what the use cases see.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from tests.support.fake_ultracart import FakeUltraCart
from ucoauth.adapters.ultracart import DEVICE_GRANT_TYPE, TokenResponse, UltraCartClient
from ucoauth.base.errors import PermanentUltraCartError

BASE_URL = "https://uc.example/rest/v2"
CLIENT_ID = "gate-client-id"
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Client authentication failed."}


def _response(url: str, status: int, body: dict[str, Any]) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.url = url
    response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
    response._content = json.dumps(body).encode()
    return response


def _tokens(answer: TokenResponse) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": answer.access_token,
        "token_type": "bearer",
        "scope": answer.scope,
    }
    if answer.refresh_token:
        body["refresh_token"] = answer.refresh_token
    if answer.expires_in is not None:
        body["expires_in"] = str(answer.expires_in)
    if answer.merchant_id:
        body["merchant_id"] = answer.merchant_id
    return body


@dataclass
class AppGate:
    """A ``requests.Session`` stand-in: UltraCart checking the app's client before the fake answers."""

    fake: FakeUltraCart
    refuse: bool = False
    expected_secret: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # (path, the client secret sent or None, the status answered), in order.
    seen: list[tuple[str, str | None, int]] = field(default_factory=list)

    def request(self, method: str, url: str, *, data: Any = None, **_: Any) -> requests.Response:
        path = url.removeprefix(BASE_URL)
        form: dict[str, str] = dict(data or {})
        sent = form.get("client_secret")
        if path != "/oauth/me" and (self.refuse or (self.expected_secret not in (None, sent))):
            response = _response(url, 401, INVALID_CLIENT)
        else:
            try:
                response = _response(url, 200, self._answer(path, form))
            except PermanentUltraCartError as exc:
                response = _response(url, exc.status or 400, {"error": exc.error or "invalid_request"})
        self.seen.append((path, sent, response.status_code))
        return response

    def _answer(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        fake = self.fake
        if path == "/oauth/revoke":
            revoked = fake.revoke(form["token"])
            return {"successful": revoked.successful, "message": revoked.message}
        if path == "/oauth/device/authorize":
            started = fake.device_authorize(form.get("scope", ""))
            return {
                "device_code": started.device_code,
                "user_code": started.user_code,
                "verification_uri": started.verification_uri,
                "verification_uri_complete": started.verification_uri_complete,
                "expires_in": started.expires_in,
                "interval": started.interval,
            }
        grant = form.get("grant_type")
        if grant == "refresh_token":
            return _tokens(fake.refresh(form["refresh_token"]))
        if grant == "authorization_code":
            return _tokens(fake.exchange_code(form["code"], form["redirect_uri"]))
        if grant == DEVICE_GRANT_TYPE:
            return _tokens(fake.poll_device(form["device_code"]))
        raise PermanentUltraCartError("refused", status=400, error="unsupported_grant_type")

    def statuses(self, path: str) -> list[int]:
        return [status for seen_path, _, status in self.seen if seen_path == path]


def gated_client(gate: AppGate, *, client_secret: Any = None) -> UltraCartClient:
    """The package's real client, talking to ``gate`` (``client_secret``: a string or a ClientSecret)."""
    return UltraCartClient(BASE_URL, CLIENT_ID, client_secret=client_secret, session=gate)  # type: ignore[arg-type]
