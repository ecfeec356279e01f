"""The sandbox's thread-safe in-memory state: codes, tokens, settings, faults, limits, request log."""

from __future__ import annotations

import dataclasses
import itertools
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from ucsandbox.faults import Fault, FaultQueue
from ucsandbox.models import (
    CODE_LIFETIME_SECONDS,
    DEFAULT_CLIENT_ID,
    DEVICE_ACTIONS,
    UNSET,
    ConcurrencyScope,
    DeviceAction,
    EndpointName,
    MalformedKind,
    RecordedRequest,
    Rotate,
    Settings,
    TokenPair,
    Unset,
    settings_changes,
)

APPLICATION_NAME = "UltraCart Sandbox App"


class OAuthError(Exception):
    """An OAuth failure answered as `{"error": ..., "error_description": ...}`."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class Clock:
    """Wall-clock time that tests can move forward to expire codes and tokens without waiting."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0


@dataclasses.dataclass
class _Code:
    client_id: str
    merchant_id: str
    redirect_uri: str
    expires_at: float
    used: bool = False


# RFC 8628 section 6.1: user codes from 20 consonants, easy to read and type, no vowels (no words).
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"


def new_user_code() -> str:
    """A user code like ``WDJB-MJHT`` (8 characters, about 34 bits)."""
    letters = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


def normalize_user_code(value: str) -> str:
    """What the merchant typed, as stored: upper case, without dashes or spaces."""
    return "".join(c for c in value.upper() if c.isalnum())


@dataclasses.dataclass
class _DeviceGrant:
    """One device authorization: the device polls with ``device_code``; the merchant enters ``user_code``."""

    client_id: str
    user_code: str
    scope: str
    expires_at: float
    interval: int
    decision: str | None = None  # "approve" | "deny"
    merchant_id: str | None = None
    used: bool = False
    last_poll: float | None = None
    forced_slow_downs: int = 0


@dataclasses.dataclass(frozen=True)
class DeviceStart:
    """The answer of ``POST /oauth/device/authorize`` (the URIs are added by the server)."""

    device_code: str
    user_code: str
    expires_in: int
    interval: int


@dataclasses.dataclass(frozen=True)
class AccessGrant:
    """What an access token stands for."""

    client_id: str
    merchant_id: str
    scope: str
    expires_at: float


@dataclasses.dataclass(frozen=True)
class _RefreshGrant:
    client_id: str
    merchant_id: str
    scope: str


@dataclasses.dataclass(frozen=True)
class LiveGrants:
    """A merchant's live grants at UltraCart: the refresh tokens it would accept now, and the
    access tokens it would accept now. A grant nobody holds is live until revoked."""

    refresh_tokens: list[str]
    access_tokens: list[str]

    @property
    def any(self) -> bool:
        return bool(self.refresh_tokens or self.access_tokens)


@dataclasses.dataclass(frozen=True)
class IssuedTokens:
    """The result of a successful token request; `refresh_token` is None when it is left out."""

    access_token: str
    refresh_token: str | None
    merchant_id: str
    scope: str


class TokenStore:
    """Authorization codes, access tokens and refresh tokens; every method is atomic."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, AccessGrant] = {}
        self._refresh: dict[str, _RefreshGrant] = {}
        self._devices: dict[str, _DeviceGrant] = {}

    def reset(self) -> None:
        with self._lock:
            self._devices.clear()
            self._codes.clear()
            self._access.clear()
            self._refresh.clear()

    def issue_code(self, client_id: str, merchant_id: str, redirect_uri: str) -> str:
        code = secrets.token_hex(16)
        with self._lock:
            self._codes[code] = _Code(
                client_id, merchant_id, redirect_uri, self._clock.now() + CODE_LIFETIME_SECONDS
            )
        return code

    def _new_pair_locked(
        self, client_id: str, merchant_id: str, scope: str, lifetime: int
    ) -> tuple[str, str]:
        access, refresh = secrets.token_hex(32), secrets.token_hex(32)
        self._access[access] = AccessGrant(client_id, merchant_id, scope, self._clock.now() + lifetime)
        self._refresh[refresh] = _RefreshGrant(client_id, merchant_id, scope)
        return access, refresh

    def issue_tokens(self, client_id: str, merchant_id: str, scope: str, lifetime: int) -> TokenPair:
        with self._lock:
            return TokenPair(*self._new_pair_locked(client_id, merchant_id, scope, lifetime))

    def exchange_code(
        self, client_id: str, code: str, redirect_uri: str, scope: str, lifetime: int
    ) -> IssuedTokens:
        with self._lock:
            entry = self._codes.get(code)
            if entry is None or entry.client_id != client_id:
                raise OAuthError("invalid_grant", "The authorization code is invalid.")
            if entry.used:
                raise OAuthError("invalid_grant", "The authorization code has already been used.")
            if self._clock.now() >= entry.expires_at:
                raise OAuthError("invalid_grant", "The authorization code has expired.")
            if entry.redirect_uri != redirect_uri:
                raise OAuthError(
                    "invalid_grant", "The redirect_uri does not match the one used to authorize."
                )
            entry.used = True
            access, refresh = self._new_pair_locked(client_id, entry.merchant_id, scope, lifetime)
            return IssuedTokens(access, refresh, entry.merchant_id, scope)

    # -- device authorizations (RFC 8628) ----------------------------------------------------------

    def start_device(self, client_id: str, scope: str, *, interval: int, expires_in: int) -> DeviceStart:
        device_code = secrets.token_urlsafe(32)
        user_code = new_user_code()
        with self._lock:
            self._devices[device_code] = _DeviceGrant(
                client_id, normalize_user_code(user_code), scope, self._clock.now() + expires_in, interval
            )
        return DeviceStart(device_code, user_code, expires_in, interval)

    def _device_by_user_code_locked(self, user_code: str) -> _DeviceGrant | None:
        wanted = normalize_user_code(user_code)
        return next((g for g in self._devices.values() if g.user_code == wanted), None)

    def device_pending(self, user_code: str) -> bool:
        """Whether a user code names an authorization that still waits for the merchant's decision."""
        with self._lock:
            grant = self._device_by_user_code_locked(user_code)
            return grant is not None and grant.decision is None and self._clock.now() < grant.expires_at

    def device(self, user_code: str, action: DeviceAction, merchant_id: str | None, times: int) -> None:
        """The merchant's decision on the verification page, or a test's hand on the authorization."""
        if action not in DEVICE_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(DEVICE_ACTIONS)}")
        with self._lock:
            grant = self._device_by_user_code_locked(user_code)
            if grant is None:
                raise ValueError("no device authorization has this user_code")
            if action == "approve":
                if not merchant_id:
                    raise ValueError("approve needs a merchant_id")
                grant.decision, grant.merchant_id = "approve", merchant_id
            elif action == "deny":
                grant.decision = "deny"
            elif action == "expire":
                grant.expires_at = self._clock.now()
            else:
                grant.forced_slow_downs += max(1, times)

    def merchant_of_device(self, device_code: str) -> str | None:
        with self._lock:
            grant = self._devices.get(device_code)
            return grant.merchant_id if grant is not None else None

    def poll_device(self, client_id: str, device_code: str, lifetime: int) -> IssuedTokens:
        """One poll of the token endpoint with ``grant_type=...:device_code`` (RFC 8628 section 3.5)."""
        with self._lock:
            grant = self._devices.get(device_code)
            if grant is None or grant.client_id != client_id:
                raise OAuthError("invalid_grant", "The device code is invalid.")
            if grant.used:
                raise OAuthError("invalid_grant", "The device code has already been used.")
            now = self._clock.now()
            if now >= grant.expires_at:
                raise OAuthError("expired_token", "The device code has expired.")
            too_soon = grant.last_poll is not None and now - grant.last_poll < grant.interval
            grant.last_poll = now
            if grant.forced_slow_downs > 0 or too_soon:
                grant.forced_slow_downs = max(0, grant.forced_slow_downs - 1)
                # "the interval MUST be increased by 5 seconds for this and all subsequent requests"
                grant.interval += 5
                raise OAuthError("slow_down", f"Poll at most every {grant.interval} seconds.")
            if grant.decision is None:
                raise OAuthError("authorization_pending", "The merchant has not decided yet.")
            if grant.decision == "deny" or grant.merchant_id is None:
                raise OAuthError("access_denied", "The merchant denied the authorization request.")
            grant.used = True
            access, refresh = self._new_pair_locked(client_id, grant.merchant_id, grant.scope, lifetime)
            return IssuedTokens(access, refresh, grant.merchant_id, grant.scope)

    def refresh(self, client_id: str, refresh_token: str, rotate: Rotate, lifetime: int) -> IssuedTokens:
        with self._lock:
            grant = self._refresh.get(refresh_token)
            if grant is None or grant.client_id != client_id:
                raise OAuthError("invalid_grant", "The refresh token is invalid, expired or revoked.")
            access = secrets.token_hex(32)
            self._access[access] = AccessGrant(
                client_id, grant.merchant_id, grant.scope, self._clock.now() + lifetime
            )
            returned: str | None
            if rotate is True:
                # The old refresh token dies; access tokens already issued live until they expire.
                del self._refresh[refresh_token]
                returned = secrets.token_hex(32)
                self._refresh[returned] = grant
            elif rotate == "omit":
                returned = None
            else:
                returned = refresh_token
            return IssuedTokens(access, returned, grant.merchant_id, grant.scope)

    def revoke(self, client_id: str, token: str) -> bool:
        """Kill that one token (access or refresh); False if it was unknown or already dead."""
        with self._lock:
            access = self._access.get(token)
            if access is not None and access.client_id == client_id:
                del self._access[token]
                return True
            refresh = self._refresh.get(token)
            if refresh is not None and refresh.client_id == client_id:
                del self._refresh[token]
                return True
            return False

    def access_grant(self, token: str) -> AccessGrant | None:
        """The grant of a live (known, unexpired, unrevoked) access token."""
        with self._lock:
            grant = self._access.get(token)
        if grant is None or self._clock.now() >= grant.expires_at:
            return None
        return grant

    def refresh_token_is_valid(self, token: str) -> bool:
        with self._lock:
            return token in self._refresh

    def expire_access(self, client_id: str, merchant_id: str) -> int:
        """Every live access token of the merchant expires now (refresh tokens live on). Returns how many."""
        now = self._clock.now()
        with self._lock:
            live = [
                t
                for t, g in self._access.items()
                if (g.merchant_id, g.client_id) == (merchant_id, client_id) and g.expires_at > now
            ]
            for token in live:
                self._access[token] = dataclasses.replace(self._access[token], expires_at=now)
        return len(live)

    def remove_app(self, client_id: str, merchant_id: str) -> int:
        """The merchant removed the app in UltraCart: every token of that grant dies. Returns how many."""
        with self._lock:
            refresh = [
                t
                for t, g in self._refresh.items()
                if (g.merchant_id, g.client_id) == (merchant_id, client_id)
            ]
            access = [
                t for t, g in self._access.items() if (g.merchant_id, g.client_id) == (merchant_id, client_id)
            ]
            for token in refresh:
                del self._refresh[token]
            for token in access:
                del self._access[token]
        return len(refresh) + len(access)

    def live_grants(self, client_id: str, merchant_id: str) -> LiveGrants:
        """What UltraCart still honours for a merchant: refresh tokens, and unexpired access tokens."""
        now = self._clock.now()
        with self._lock:
            refresh = sorted(
                t
                for t, g in self._refresh.items()
                if g.merchant_id == merchant_id and g.client_id == client_id
            )
            access = sorted(
                t
                for t, g in self._access.items()
                if g.merchant_id == merchant_id and g.client_id == client_id and g.expires_at > now
            )
        return LiveGrants(refresh_tokens=refresh, access_tokens=access)

    def merchant_of(self, *, code: str | None = None, token: str | None = None) -> str | None:
        """The merchant a code or token belongs to, live or not yet cleaned up; None if unknown."""
        with self._lock:
            if code is not None and code in self._codes:
                return self._codes[code].merchant_id
            if token is not None:
                if token in self._access:
                    return self._access[token].merchant_id
                if token in self._refresh:
                    return self._refresh[token].merchant_id
        return None


class InFlight:
    """Which merchants/applications have a call in progress, to answer concurrent calls with 429."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        # Bumped by reset() so that calls still running from before do not free a new slot.
        self._generation = 0

    def try_acquire(self, key: str) -> tuple[str, int] | None:
        with self._lock:
            if key in self._busy:
                return None
            self._busy.add(key)
            return key, self._generation

    def release(self, ticket: tuple[str, int]) -> None:
        key, generation = ticket
        with self._lock:
            if generation == self._generation:
                self._busy.discard(key)

    def reset(self) -> None:
        with self._lock:
            self._busy.clear()
            self._generation += 1


class LeakyBucket:
    """Per-application leaky bucket: each call adds one, the bucket drains at `rate` per second.

    The bucket holds max(1, rate) calls, so rate_per_second=1 rejects a second call within a second.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._levels: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, rate: float) -> bool:
        now = time.monotonic()
        capacity = max(1.0, rate)
        with self._lock:
            level, last = self._levels.get(key, (0.0, now))
            level = max(0.0, level - (now - last) * rate)
            if level + 1.0 > capacity + 1e-9:
                self._levels[key] = (level, now)
                return False
            self._levels[key] = (level + 1.0, now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._levels.clear()


class RequestLog:
    """Every request received, in arrival order; entries are updated with their outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, RecordedRequest] = {}
        self._ids = itertools.count(1)

    def add(self, **fields: Any) -> int:
        with self._lock:
            entry_id = next(self._ids)
            self._entries[entry_id] = RecordedRequest(id=entry_id, **fields)
            return entry_id

    def update(self, entry_id: int, **changes: Any) -> None:
        with self._lock:
            entry = self._entries.get(entry_id)
            # Cleared meanwhile: the log was reset by a test, nothing to update.
            if entry is not None:
                self._entries[entry_id] = dataclasses.replace(entry, **changes)

    def list(self, endpoint: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            entries = list(self._entries.values())
        return [entry for entry in entries if endpoint is None or entry.endpoint == endpoint]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class SandboxState:
    """Everything the fake UltraCart knows, plus the controls tests use on it.

    `Sandbox` adds the HTTP server around it; the HTTP handler and the `/__sandbox/`
    control endpoints call the methods below.
    """

    def __init__(self, client_id: str = DEFAULT_CLIENT_ID, client_secret: str | None = None) -> None:
        if not client_id:
            raise ValueError("client_id must not be empty")
        self._client_id = client_id
        self._initial_client_secret = client_secret
        self.client_secret = client_secret
        self.clock = Clock()
        self.tokens = TokenStore(self.clock)
        self.faults = FaultQueue()
        self.log = RequestLog()
        self.in_flight = InFlight()
        self.buckets = LeakyBucket()
        # Set on stop so that injected delays and held connections end at once.
        self.stopping = threading.Event()
        self._settings_lock = threading.Lock()
        self._settings = Settings()

    # -- read by the HTTP handler -------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def settings(self) -> Settings:
        with self._settings_lock:
            return self._settings

    def apply_settings(self, changes: Mapping[str, object]) -> Settings:
        """Validate and apply setting changes atomically; raises ValueError."""
        with self._settings_lock:
            self._settings = self._settings.updated(changes)
            return self._settings

    def sleep(self, seconds: float) -> None:
        """A delay that ends early when the sandbox stops."""
        if seconds > 0:
            self.stopping.wait(seconds)

    @staticmethod
    def merchant_name(merchant_id: str) -> str:
        return f"{merchant_id} Sandbox Store"

    @property
    def application_name(self) -> str:
        return APPLICATION_NAME

    # -- the control API (same names over HTTP in SandboxControl) -------------------------------

    def configure(
        self,
        *,
        rotate: Rotate | Unset = UNSET,
        expires_in: str | int | Unset | None = UNSET,
        include_merchant_id: bool | Unset = UNSET,
        concurrency_scope: ConcurrencyScope | Unset | None = UNSET,
        rate_per_second: float | Unset | None = UNSET,
        latency_ms: int | Unset = UNSET,
        scope: str | Unset = UNSET,
        device_interval: int | Unset = UNSET,
        device_expires_in: int | Unset = UNSET,
        refuse_client: bool | Unset = UNSET,
    ) -> Settings:
        """Change behaviour; arguments not given keep their value. Returns the new settings."""
        return self.apply_settings(
            settings_changes(
                rotate=rotate,
                expires_in=expires_in,
                include_merchant_id=include_merchant_id,
                concurrency_scope=concurrency_scope,
                rate_per_second=rate_per_second,
                latency_ms=latency_ms,
                scope=scope,
                device_interval=device_interval,
                device_expires_in=device_expires_in,
                refuse_client=refuse_client,
            )
        )

    def set_client_secret(self, client_secret: str | None) -> None:
        """The client secret token, revoke and device authorize calls must send from now on (None:
        none required, a sent one ignored); a call with another one answers 401 invalid_client.
        ``reset`` goes back to the secret the sandbox was started with."""
        if client_secret is not None and not client_secret:
            raise ValueError("client_secret must be a non-empty string or null")
        self.client_secret = client_secret

    def add_fault(
        self,
        endpoint: EndpointName,
        *,
        status: int | None = None,
        body: object = None,
        uc_rest_error: str | None = None,
        latency_ms: int = 0,
        timeout: float | None = None,
        malformed: MalformedKind | None = None,
        reset: bool = False,
        after_success: bool = False,
        grant_type: str | None = None,
        times: int = 1,
    ) -> None:
        """Queue a fault for `endpoint` (optionally only for one `grant_type`); raises ValueError."""
        self.faults.add(
            Fault(
                endpoint=endpoint,
                status=status,
                body=body,
                uc_rest_error=uc_rest_error,
                latency_ms=latency_ms,
                timeout=timeout,
                malformed=malformed,
                reset=reset,
                after_success=after_success,
                grant_type=grant_type,
                times=times,
            )
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """The request log, oldest first, optionally only one endpoint's requests."""
        return self.log.list(endpoint)

    def clear_requests(self) -> None:
        self.log.clear()

    def reset(self) -> None:
        """Back to a fresh sandbox: default settings, no faults, no tokens, empty log, real time."""
        with self._settings_lock:
            self._settings = Settings()
        self.client_secret = self._initial_client_secret
        self.faults.clear()
        self.log.clear()
        self.tokens.reset()
        self.in_flight.reset()
        self.buckets.reset()
        self.clock.reset()

    def issue_code(self, merchant_id: str, redirect_uri: str) -> str:
        """An authorization code as if the merchant had clicked Approve."""
        return self.tokens.issue_code(self._client_id, merchant_id, redirect_uri)

    def issue_tokens(self, merchant_id: str, expires_in: int | None = None) -> TokenPair:
        """Tokens as if the merchant had installed the app; `expires_in` seconds overrides the lifetime."""
        settings = self.settings
        lifetime = settings.token_lifetime() if expires_in is None else expires_in
        return self.tokens.issue_tokens(self._client_id, merchant_id, settings.scope, lifetime)

    def token_is_valid(self, token: str) -> bool:
        """Whether an access token is known, unexpired and unrevoked."""
        return self.tokens.access_grant(token) is not None

    def refresh_token_is_valid(self, token: str) -> bool:
        """Whether a refresh token would be accepted now."""
        return self.tokens.refresh_token_is_valid(token)

    def remove_app(self, merchant_id: str) -> int:
        """The merchant removes the app in UltraCart's admin: its grant dies (refreshes answer
        invalid_grant from now on). Returns how many tokens died."""
        return self.tokens.remove_app(self._client_id, merchant_id)

    def expire_access_tokens(self, merchant_id: str) -> int:
        """The merchant's access tokens expire now, as if their hour had passed (its refresh
        tokens keep working): the next API call with one answers 401. Returns how many expired."""
        return self.tokens.expire_access(self._client_id, merchant_id)

    def live_grants(self, merchant_id: str) -> LiveGrants:
        """The merchant's grants UltraCart still honours (the judge of "lost", not our own table)."""
        return self.tokens.live_grants(self._client_id, merchant_id)

    def advance_time(self, seconds: float) -> None:
        """Move the sandbox's clock forward (expires codes and access tokens without waiting)."""
        self.clock.advance(seconds)

    def start_device(self, client_id: str, scope: str) -> DeviceStart:
        """A device authorization as ``POST /oauth/device/authorize`` starts it."""
        settings = self.settings
        return self.tokens.start_device(
            client_id, scope, interval=settings.device_interval, expires_in=settings.device_expires_in
        )

    def device(
        self, user_code: str, action: DeviceAction, *, merchant_id: str | None = None, times: int = 1
    ) -> None:
        """Act on a device authorization as the merchant or UltraCart would: ``approve`` (for
        ``merchant_id``), ``deny``, ``expire`` (now), or ``slow_down`` (the next ``times`` polls
        answer ``slow_down``, each adding 5 s to the interval); raises ValueError."""
        self.tokens.device(user_code, action, merchant_id, times)
