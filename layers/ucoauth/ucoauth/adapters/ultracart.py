"""UltraCart OAuth over HTTP with ``requests``: token, refresh, revoke and me.

Every call has a connect and a read timeout and sends the API-version header UltraCart
requires. Failures become :class:`PermanentUltraCartError` (do not retry),
:class:`TransientUltraCartError` (retry later) or, when UltraCart refuses the app itself rather
than a merchant's grant, :class:`AppCredentialsRejectedError`; no message ever carries a token
or code. The client never retries by itself: a code exchange or a rotating refresh is not
idempotent, so retries belong to the caller (the queue, or the budgeted client after a renewed
client secret), which knows whether a retry is safe.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

if TYPE_CHECKING:
    import requests

    from ucoauth.adapters.app_secrets import ClientSecret
    from ucoauth.base.settings import Settings

from ucoauth.base.errors import (
    APP_REFUSED_ERRORS,
    AppCredentialsRejectedError,
    PermanentUltraCartError,
    TransientUltraCartError,
    UltraCartError,
    UltraCartTimeoutError,
    refuses_the_app,
)
from ucoauth.base.observability import redact_text

API_VERSION = "2017-03-01"
_MAX_BODY = 64 * 1024
# RFC 8628: the grant type a device authorization is polled with.
DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class TokenResponse:
    """A successful answer of ``POST /oauth/token``. Secrets are kept out of ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: int | None
    token_type: str = "bearer"
    scope: str = ""
    merchant_id: str | None = None


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class RevokeResponse:
    """The answer of ``POST /oauth/revoke``: ``successful`` is False for an already-invalid token."""

    successful: bool
    message: str = ""


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class DeviceAuthorization:
    """The answer of ``POST /oauth/device/authorize``. The device code is a credential: out of ``repr``;
    the user code is shown to a person, never logged either."""

    device_code: str = field(repr=False)
    user_code: str = field(repr=False)
    verification_uri: str
    verification_uri_complete: str = field(repr=False)
    expires_in: int
    interval: int


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class MerchantInfo:
    """The answer of ``GET /oauth/me``."""

    merchant_id: str
    merchant_name: str = ""
    application_name: str = ""


class UltraCartApi(Protocol):
    """The four UltraCart OAuth calls the stack makes. The real client, the budgeted wrapper and
    the tests' fakes all have this shape (mypy checks them against it)."""

    def exchange_code(self, code: str, redirect_uri: str) -> TokenResponse: ...

    def refresh(self, refresh_token: str) -> TokenResponse: ...

    def revoke(self, token: str) -> RevokeResponse: ...

    def me(self, access_token: str) -> MerchantInfo: ...

    def device_authorize(self, scope: str) -> DeviceAuthorization: ...

    def poll_device(self, device_code: str) -> TokenResponse: ...


def parse_expires_in(value: Any) -> int | None:
    """``expires_in`` arrives as a JSON string of seconds (or a number); garbage counts as absent."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    else:
        return None
    return seconds if 0 < seconds <= 10 * 365 * 86_400 else None


def authorize_url(base_url: str, client_id: str, *, redirect_uri: str, state: str) -> str:
    """The browser URL of UltraCart's consent page (a page, not an API call; no scope, no PKCE)."""
    query = urlencode(
        {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": state}
    )
    return f"{base_url.rstrip('/')}/oauth/authorize?{query}"


def _short(text: str | None, limit: int = 200) -> str | None:
    if not text:
        return None
    return redact_text(text.replace("\r", " ").replace("\n", " ")[:limit])


class UltraCartClient:
    """Talks to one UltraCart base URL for one application (client id).

    The optional client secret is a fixed string, or a :class:`~ucoauth.adapters.app_secrets.ClientSecret`
    read from Secrets Manager by version (see :meth:`renew_credentials`).
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        *,
        client_secret: str | ClientSecret | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret or None
        self._timeout = (connect_timeout, read_timeout)
        if session is None:
            import requests  # deferred: a function that never calls UltraCart never loads it

            session = requests.Session()
        self._session = session
        self._session.headers.update({"X-UltraCart-Api-Version": API_VERSION, "Accept": "application/json"})

    def __repr__(self) -> str:
        return f"UltraCartClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    def with_read_timeout(self, read_timeout: float) -> UltraCartClient:
        """The same client (same session and connections) waiting at most ``read_timeout`` to read."""
        clone = copy.copy(self)
        clone._timeout = (self._timeout[0], read_timeout)
        return clone

    def renew_credentials(self, refused: AppCredentialsRejectedError) -> bool:
        """UltraCart refused the app: read the client secret again. True when another version of it
        is in use now, so the refused call (which UltraCart did not consume) may be sent once more;
        False for a fixed secret, or when the secret did not change."""
        from ucoauth.adapters.app_secrets import ClientSecret

        if not isinstance(self._client_secret, ClientSecret):
            return False
        return self._client_secret.renew(refused.credentials_version)

    # -- public API -----------------------------------------------------------------------

    def exchange_code(self, code: str, redirect_uri: str) -> TokenResponse:
        """``grant_type=authorization_code``: a code from the callback for tokens."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        return self._token_response(self._post("/oauth/token", form))

    def refresh(self, refresh_token: str) -> TokenResponse:
        """``grant_type=refresh_token``: a fresh access token (and maybe a rotated refresh token)."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._token_response(self._post("/oauth/token", form))

    def device_authorize(self, scope: str) -> DeviceAuthorization:
        """``POST /oauth/device/authorize`` (RFC 8628): a device code to poll with, a user code to show."""
        body = self._post("/oauth/device/authorize", {"scope": scope})
        return self._device_authorization(body)

    def poll_device(self, device_code: str) -> TokenResponse:
        """``grant_type=urn:ietf:params:oauth:grant-type:device_code``: tokens once the merchant
        approved; until then :class:`PermanentUltraCartError` whose ``error`` is
        ``authorization_pending``, ``slow_down``, ``access_denied`` or ``expired_token``."""
        form = {"grant_type": DEVICE_GRANT_TYPE, "device_code": device_code}
        return self._token_response(self._post("/oauth/token", form))

    def revoke(self, token: str) -> RevokeResponse:
        """Revoke one token; ``successful`` is False when it was already invalid."""
        body = self._post("/oauth/revoke", {"token": token})
        return RevokeResponse(
            successful=body.get("successful") is True, message=_short(str(body.get("message") or "")) or ""
        )

    def me(self, access_token: str) -> MerchantInfo:
        """Who the access token belongs to (used only when a token response lacks merchant_id)."""
        # Authenticated by the merchant's access token, not the app's client: a 401 here is the token's.
        body = self._request(
            "GET", "/oauth/me", headers={"Authorization": f"Bearer {access_token}"}, data=None, app=False
        )
        merchant_id = body.get("merchant_id")
        if not isinstance(merchant_id, str) or not merchant_id:
            raise TransientUltraCartError("oauth/me answered without merchant_id", status=200)
        return MerchantInfo(
            merchant_id=merchant_id,
            merchant_name=str(body.get("merchant_name") or ""),
            application_name=str(body.get("application_name") or ""),
        )

    # -- transport ------------------------------------------------------------------------

    def _post(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        """A call the app's client authenticates to (client id, and the secret when configured)."""
        from ucoauth.adapters.app_secrets import ClientSecret

        data = {"client_id": self.client_id, **form}
        version = None
        secret = self._client_secret
        if isinstance(secret, ClientSecret):
            current = secret.current()
            version, secret = current.version_id, current.value
        if secret:
            data["client_secret"] = secret
        try:
            return self._request("POST", path, headers=None, data=data, app=True)
        except AppCredentialsRejectedError as exc:
            exc.credentials_version = version
            raise

    def _request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None,
        data: dict[str, str] | None,
        app: bool,
    ) -> dict[str, Any]:
        import requests

        url = f"{self.base_url}{path}"
        try:
            response = self._session.request(
                method, url, data=data, headers=headers, timeout=self._timeout, allow_redirects=False
            )
            raw = response.content[: _MAX_BODY + 1]
        except requests.Timeout:
            raise UltraCartTimeoutError(f"{path} timed out") from None
        except requests.RequestException as exc:
            # The exception text can contain the URL only (no body), but keep it out anyway.
            raise TransientUltraCartError(f"{path} failed: {type(exc).__name__}") from None
        return self._interpret(path, response, raw, app=app)

    @staticmethod
    def _interpret(path: str, response: requests.Response, raw: bytes, *, app: bool) -> dict[str, Any]:
        """The answer's body, or the typed error it means. ``app``: the call was authenticated with
        the app's client, so a refusal of that client is told apart from a refused grant."""
        status = response.status_code
        rest_error = _short(response.headers.get("UC-REST-ERROR"))
        body: dict[str, Any] | None = None
        if len(raw) <= _MAX_BODY:
            try:
                parsed = json.loads(raw.decode("utf-8"))
                body = parsed if isinstance(parsed, dict) else None
            except (ValueError, UnicodeDecodeError):
                body = None
        error = body.get("error") if body else None
        error_code = _short(error, 64) if isinstance(error, str) else None
        described = body.get("error_description") if body else None
        description = _short(described) if isinstance(described, str) else None

        if status == 429 or status >= 500:
            raise TransientUltraCartError(
                f"{path} answered {status}", status=status, error=error_code, rest_error=rest_error
            )
        if app and 400 <= status < 500 and refuses_the_app(status, error_code):
            raise AppCredentialsRejectedError(status=status, error=error_code)
        if 400 <= status < 500:
            raise PermanentUltraCartError(
                f"{path} refused the request",
                status=status,
                error=error_code,
                rest_error=rest_error,
                description=description,
            )
        if not 200 <= status < 300:
            raise TransientUltraCartError(f"{path} answered {status}", status=status, rest_error=rest_error)
        content_type = response.headers.get("Content-Type", "")
        if body is None or "json" not in content_type.lower():
            raise TransientUltraCartError(f"{path} answered a malformed body", status=status)
        if error_code:
            # An OAuth error inside a 2xx: still a refusal.
            if app and error_code in APP_REFUSED_ERRORS:
                raise AppCredentialsRejectedError(status=status, error=error_code)
            raise PermanentUltraCartError(
                f"{path} refused the request", status=status, error=error_code, description=description
            )
        return body

    @staticmethod
    def _device_authorization(body: dict[str, Any]) -> DeviceAuthorization:
        strings = {}
        for name in ("device_code", "user_code", "verification_uri"):
            value = body.get(name)
            if not isinstance(value, str) or not value or len(value) > 2048:
                raise TransientUltraCartError(f"device authorization without a usable {name}", status=200)
            strings[name] = value
        complete = body.get("verification_uri_complete")
        numbers = {}
        for name, default in (("expires_in", None), ("interval", 5)):
            value = body.get(name, default)
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 86_400:
                raise TransientUltraCartError(f"device authorization without a usable {name}", status=200)
            numbers[name] = value
        return DeviceAuthorization(
            device_code=strings["device_code"],
            user_code=strings["user_code"],
            verification_uri=strings["verification_uri"],
            verification_uri_complete=complete
            if isinstance(complete, str) and complete and len(complete) <= 2048
            else strings["verification_uri"],
            expires_in=numbers["expires_in"],
            interval=numbers["interval"],
        )

    @staticmethod
    def _token_response(body: dict[str, Any]) -> TokenResponse:
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise TransientUltraCartError("token response without access_token", status=200)
        refresh = body.get("refresh_token")
        merchant = body.get("merchant_id")
        return TokenResponse(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_in=parse_expires_in(body.get("expires_in")),
            token_type=str(body.get("token_type") or "bearer"),
            scope=str(body.get("scope") or ""),
            merchant_id=merchant if isinstance(merchant, str) and merchant else None,
        )


_client_lock = threading.Lock()
_clients: dict[tuple[object, ...], UltraCartClient] = {}
_injected: UltraCartClient | None = None


def get_client(settings: Settings | None = None) -> UltraCartClient:
    """The client for ``settings`` (default: the process settings), built once and reused.

    One ``requests`` Session per configuration, so a warm Lambda reuses its connections. The
    optional client secret is read from Secrets Manager when the client is built, and again when
    UltraCart refuses it (:meth:`UltraCartClient.renew_credentials`): a rotated secret is picked
    up without a redeploy.
    """
    if _injected is not None:
        return _injected
    if settings is None:
        from ucoauth.base.settings import get_settings

        settings = get_settings()
    key = (
        settings.ultracart_base_url,
        settings.ultracart_client_id,
        settings.ultracart_client_secret_arn,
        settings.ultracart_connect_timeout,
        settings.ultracart_read_timeout,
    )
    found = _clients.get(key)
    if found is not None:
        return found
    with _client_lock:
        found = _clients.get(key)
        if found is None:
            secret = None
            if settings.ultracart_client_secret_arn:
                from ucoauth.adapters.app_secrets import ClientSecret

                secret = ClientSecret(settings.ultracart_client_secret_arn)
                secret.current()  # read now, as before any call: a failure to read it surfaces here
            found = UltraCartClient(
                settings.ultracart_base_url,
                settings.ultracart_client_id,
                client_secret=secret,
                connect_timeout=settings.ultracart_connect_timeout,
                read_timeout=settings.ultracart_read_timeout,
            )
            _clients[key] = found
        return found


def set_client(client: UltraCartClient | None) -> None:
    """Inject a client for every configuration, or with None forget injected and cached ones."""
    global _injected
    with _client_lock:
        _injected = client
        if client is None:
            _clients.clear()


def forget_clients() -> None:
    """Forget the injected client and every cached one (and the client secret they read)."""
    set_client(None)


__all__ = [
    "DEVICE_GRANT_TYPE",
    "AppCredentialsRejectedError",
    "DeviceAuthorization",
    "MerchantInfo",
    "PermanentUltraCartError",
    "RevokeResponse",
    "TokenResponse",
    "TransientUltraCartError",
    "UltraCartApi",
    "UltraCartClient",
    "UltraCartError",
    "authorize_url",
    "forget_clients",
    "get_client",
    "parse_expires_in",
    "set_client",
]
