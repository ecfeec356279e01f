"""``TokenClient``: merchants' access tokens from the stack's token API (SigV4 ``GET /tokens``).

The API's address comes from the stack's ``ApiUrl`` output (looked up once, on first use) or is
given. Requests are signed with botocore (service ``execute-api``) and sent with the standard
library, with a timeout, by ``ucoauth_client.aws`` (which the ``ucoauth`` command line shares).
Tokens are cached in memory per merchant while they stay valid long enough; concurrent callers
for one merchant share one request.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ucoauth_client.aws import checked_url, exchange, session_credentials, sign, signing_region, stack_outputs
from ucoauth_client.errors import (
    AccessDenied,
    InvalidRequest,
    NotInstalled,
    ReauthorizationRequired,
    TokenClientError,
    Unavailable,
)

if TYPE_CHECKING:
    import botocore.session

# The stack output that holds the HTTP API's base URL.
API_URL_OUTPUT = "ApiUrl"
# The most ``min_valid_seconds`` the token API accepts (below UltraCart's one-hour token lifetime).
MAX_MIN_VALID_SECONDS = 3300
# The same merchant id check as the stack's: refused here, before anything is sent.
_MERCHANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A merchant's access token as the stack served it; ``access_token`` stays out of ``repr``."""

    merchant_id: str
    access_token: str = field(repr=False)
    token_type: str
    expires_at: datetime | None
    scope: str
    # The stack's version of the installation the token came from: after UltraCart refused this
    # token (401), ``TokenClient.get(..., newer_than=token.version)`` gets its replacement.
    version: int
    # The app's own account the installation is linked to (an install link), or None.
    app_account_id: str | None = None

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds until it expires (None when the stack does not know)."""
        if self.expires_at is None:
            return None
        return self.expires_at.timestamp() - (time.time() if now is None else now)

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value for UltraCart."""
        return f"Bearer {self.access_token}"


@dataclass(frozen=True, slots=True)
class InstallLink:
    """An install link for one of the app's accounts (``POST /install-sessions``): send the user's
    browser to ``install_url`` (it works until ``expires_at``, for one installation). The URL
    carries a secret: hand it to that user only, never log it; ``session_id`` names it safely."""

    session_id: str
    install_url: str = field(repr=False)
    expires_at: datetime


@dataclass(slots=True)
class _Cached:
    token: AccessToken
    fetched_at: float


Opener = urllib.request.OpenerDirector


class TokenClient:
    """Access tokens for the app's services, from a deployed stack's token API.

    >>> tokens = TokenClient(stack_name="ultracart-oauth")
    >>> token = tokens.get("DEMO1", min_valid_seconds=120)

    ``stack_name`` or ``url`` (the API's base URL, the stack's ``ApiUrl`` output) says where the
    API is. ``session`` is a botocore session (default: a new one, with the usual credential
    chain); ``region`` defaults to the session's, or the one in the URL. The caller's role needs
    ``execute-api:Invoke`` on the token route: the stack's ``TokenConsumerPolicyArn`` output.

    A cached token is returned while it stays valid ``min_valid_seconds`` plus ``margin_seconds``
    more seconds (one whose expiry the stack does not know, for ``unknown_expiry_cache_seconds``);
    otherwise one request is sent, shared by every thread asking for that merchant.
    """

    def __init__(
        self,
        *,
        stack_name: str | None = None,
        url: str | None = None,
        session: botocore.session.Session | None = None,
        region: str | None = None,
        timeout: float = 10.0,
        margin_seconds: float = 60.0,
        unknown_expiry_cache_seconds: float = 300.0,
        max_retry_wait: float = 5.0,
        opener: Opener | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if (stack_name is None) == (url is None):
            raise TypeError("give exactly one of stack_name or url")
        self._stack_name = stack_name
        self._url = checked_url(url) if url is not None else None
        self._session = session
        self._region = region
        self.timeout = timeout
        self.margin_seconds = margin_seconds
        self.unknown_expiry_cache_seconds = unknown_expiry_cache_seconds
        self.max_retry_wait = max_retry_wait
        self._opener = opener or urllib.request.build_opener()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._setup_lock = threading.Lock()
        self._locks_lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._cache: dict[str, _Cached] = {}

    # -- public API -------------------------------------------------------------------------------

    def get(
        self, merchant_id: str, *, min_valid_seconds: int = 0, newer_than: int | None = None
    ) -> AccessToken:
        """A token for ``merchant_id`` valid at least ``min_valid_seconds`` more seconds (0..3300).

        ``newer_than``: the ``version`` of a token UltraCart refused (401); the answer is a newer
        one (the stack refreshes once, however many callers ask). Raises :class:`NotInstalled`,
        :class:`ReauthorizationRequired`, :class:`Unavailable`, :class:`InvalidRequest`,
        :class:`AccessDenied` (all :class:`TokenClientError`).
        """
        if not isinstance(merchant_id, str) or _MERCHANT_ID.fullmatch(merchant_id) is None:
            raise InvalidRequest("malformed merchant id", error="invalid_merchant_id")
        if isinstance(min_valid_seconds, bool) or not isinstance(min_valid_seconds, int):
            raise InvalidRequest("min_valid_seconds must be an int", error="invalid_parameter")
        with self._lock_for(merchant_id):
            hit = self._cached(merchant_id, min_valid_seconds, newer_than)
            if hit is not None:
                return hit
            token = self._fetch(merchant_id, self._asked_seconds(min_valid_seconds), newer_than)
            self._cache[merchant_id] = _Cached(token, self._clock())
            return token

    def create_install_link(
        self, app_account_id: str, return_url: str | None = None, metadata: dict[str, str] | None = None
    ) -> InstallLink:
        """A link that installs the app for a merchant and links the installation to
        ``app_account_id`` (your own account id: 1-128 of ``A-Za-z0-9._:@-``); ``return_url`` (on
        an origin of the stack's ``InstallReturnOrigins``) is offered on the success page;
        ``metadata`` (at most 10 string pairs) comes back with the installation. Raises
        :class:`InvalidRequest` (the stack refused the request), :class:`AccessDenied`,
        :class:`Unavailable` (all :class:`TokenClientError`)."""
        body: dict[str, Any] = {"app_account_id": app_account_id}
        if return_url is not None:
            body["return_url"] = return_url
        if metadata is not None:
            body["metadata"] = metadata
        data = json.dumps(body, separators=(",", ":")).encode()
        url = f"{self.url}/install-sessions"
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        signed = sign(
            session_credentials(self._botocore_session()), self._signing_region(), "POST", url, headers, data
        )
        try:
            answer = exchange(self._opener, "POST", url, signed, body=data, timeout=self.timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"token API unreachable: {type(exc).__name__}") from None
        if answer.status == 201:
            return _parse_link(answer.body)
        error = _error_code(answer.body)
        if answer.status == 400:
            raise InvalidRequest(f"token API refused the install link: {error}", error=error)
        if answer.status == 403:
            raise AccessDenied("not allowed to create install links (attach TokenConsumerPolicyArn)")
        if answer.status >= 500 or answer.status == 429:
            raise Unavailable(f"token API answered {answer.status}", retry_after=_retry_after(answer.headers))
        raise TokenClientError(f"token API answered {answer.status}")

    def invalidate(self, merchant_id: str | None = None) -> None:
        """Forget the cached token of one merchant (or of all)."""
        with self._locks_lock:
            if merchant_id is None:
                self._cache.clear()
            else:
                self._cache.pop(merchant_id, None)

    def ultracart_api_client(self, merchant_id: str, *, host: str | None = None) -> Any:
        """An official UltraCart SDK ``ApiClient`` for ``merchant_id`` (needs the ``sdk`` extra):
        every call carries the merchant's bearer token and ``X-UltraCart-Api-Version``; a 401
        gets a newer token and the call is retried once; a 429 raises :class:`RateLimited`.
        ``host`` overrides UltraCart's base URL (``https://secure.ultracart.com/rest/v2``)."""
        from ucoauth_client.sdk import ultracart_api_client

        return ultracart_api_client(self, merchant_id, host=host)

    @property
    def url(self) -> str:
        """The API's base URL (looked up in the stack's outputs on first use)."""
        if self._url is None:
            with self._setup_lock:
                if self._url is None:
                    self._url = self._stack_api_url()
        return self._url

    # -- cache ------------------------------------------------------------------------------------

    def _lock_for(self, merchant_id: str) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(merchant_id)
            if lock is None:
                lock = self._locks[merchant_id] = threading.Lock()
            return lock

    def _cached(self, merchant_id: str, min_valid_seconds: int, newer_than: int | None) -> AccessToken | None:
        entry = self._cache.get(merchant_id)
        if entry is None:
            return None
        token, now = entry.token, self._clock()
        if newer_than is not None and token.version <= newer_than:
            return None
        left = token.seconds_left(now)
        if left is None:
            return token if now - entry.fetched_at < self.unknown_expiry_cache_seconds else None
        return token if left >= min_valid_seconds + self.margin_seconds else None

    def _asked_seconds(self, min_valid_seconds: int) -> int:
        # Ask for the margin too, so the answer stays in the cache for a while; a value the API
        # refuses anyway goes as it is (400: InvalidRequest).
        wanted = min_valid_seconds + int(self.margin_seconds)
        return wanted if min_valid_seconds >= 0 and wanted <= MAX_MIN_VALID_SECONDS else min_valid_seconds

    # -- the request ------------------------------------------------------------------------------

    def _fetch(self, merchant_id: str, min_valid_seconds: int, newer_than: int | None) -> AccessToken:
        query: dict[str, int] = {"min_valid_seconds": min_valid_seconds}
        if newer_than is not None:
            query["newer_than"] = newer_than
        url = f"{self.url}/tokens/{merchant_id}?{urlencode(query)}"
        try:
            return self._send(url, merchant_id)
        except Unavailable as exc:
            wait = 1.0 if exc.retry_after is None else exc.retry_after
            if wait > self.max_retry_wait:
                raise
            # One retry, jittered so that many processes told the same thing do not come back at once.
            self._sleep(min(self.max_retry_wait, wait * (1.0 + 0.5 * self._rng())))
            return self._send(url, merchant_id)

    def _send(self, url: str, merchant_id: str) -> AccessToken:
        headers = self._signed_headers(url)
        try:
            answer = exchange(self._opener, "GET", url, headers, timeout=self.timeout)
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            raise Unavailable(f"token API unreachable: {type(exc).__name__}") from None
        status, body = answer.status, answer.body
        if status == 200:
            return _parse_token(body, merchant_id)
        error = _error_code(body)
        if status == 400:
            raise InvalidRequest(f"token API refused the request: {error}", error=error)
        if status == 403:
            raise AccessDenied("not allowed to call the token API (attach TokenConsumerPolicyArn)")
        if status == 404:
            raise NotInstalled(f"{merchant_id} has not installed the app")
        if status == 409:
            raise ReauthorizationRequired(f"{merchant_id} must authorize the app again")
        if status >= 500 or status == 429:
            raise Unavailable(f"token API answered {status}", retry_after=_retry_after(answer.headers))
        raise TokenClientError(f"token API answered {status}")

    def _signed_headers(self, url: str) -> dict[str, str]:
        credentials = session_credentials(self._botocore_session())
        return sign(credentials, self._signing_region(), "GET", url, {"Accept": "application/json"})

    # -- where and as whom ------------------------------------------------------------------------

    def _botocore_session(self) -> botocore.session.Session:
        if self._session is None:
            with self._setup_lock:
                if self._session is None:
                    import botocore.session

                    self._session = botocore.session.get_session()
        return self._session

    def _signing_region(self) -> str:
        if self._region is None:
            self._region = signing_region(self.url, self._botocore_session())
        return self._region

    def _stack_api_url(self) -> str:
        assert self._stack_name is not None  # no URL was given, so a stack name was
        outputs = stack_outputs(self._botocore_session(), self._stack_name, self._region)
        url = outputs.get(API_URL_OUTPUT)
        if not url:
            raise TokenClientError(f"the stack {self._stack_name} has no {API_URL_OUTPUT} output")
        return checked_url(url)


def _parse_token(body: bytes, merchant_id: str) -> AccessToken:
    try:
        data = json.loads(body)
        expires = data["expires_at"]
        token = AccessToken(
            merchant_id=str(data.get("merchant_id") or merchant_id),
            access_token=_text(data["access_token"]),
            token_type=str(data.get("token_type") or "bearer"),
            expires_at=None if expires is None else _utc(expires),
            scope=str(data.get("scope") or ""),
            version=_int(data.get("version", 0)),
            app_account_id=None if data.get("app_account_id") is None else _text(data["app_account_id"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TokenClientError("token API answered a malformed token") from None
    return token


def _parse_link(body: bytes) -> InstallLink:
    try:
        data = json.loads(body)
        return InstallLink(
            session_id=_text(data["session_id"]),
            install_url=_text(data["install_url"]),
            expires_at=_utc(data["expires_at"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TokenClientError("token API answered a malformed install link") from None


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("not a string")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not an integer")
    return value


def _utc(value: object) -> datetime:
    text = _text(value)
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return parsed.astimezone(timezone.utc)


def _error_code(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
