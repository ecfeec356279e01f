"""Value types shared by the sandbox's state, HTTP server and out-of-process control client."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import Any, Final, Literal, NamedTuple, Protocol

API_VERSION = "2017-03-01"
API_VERSION_HEADER = "X-UltraCart-Api-Version"
UC_REST_ERROR_HEADER = "UC-REST-ERROR"
BASE_PATH = "/rest/v2"
CONTROL_PATH = "/__sandbox"
DEFAULT_CLIENT_ID = "sandbox-client-id"
DEFAULT_SCOPE = "order_read customer_read"
# What the token lifetime falls back to when `expires_in` is omitted or not a number:
# the token still has to expire at some point even if the client is not told when.
DEFAULT_LIFETIME_SECONDS = 3600
CODE_LIFETIME_SECONDS = 300
# RFC 8628: the grant type a device polls the token endpoint with, and the polling defaults.
DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_DEVICE_INTERVAL = 5
DEFAULT_DEVICE_EXPIRES_IN = 900

Rotate = bool | Literal["omit"]
ConcurrencyScope = Literal["merchant", "application"]
EndpointName = Literal["token", "revoke", "me", "authorize", "device_authorize", "device", "orders"]
MalformedKind = Literal["truncated", "html", "not_json", "empty"]

ENDPOINTS: tuple[EndpointName, ...] = (
    "token",
    "revoke",
    "me",
    "authorize",
    "device_authorize",
    "device",
    "orders",
)
DeviceAction = Literal["approve", "deny", "expire", "slow_down"]
DEVICE_ACTIONS: tuple[DeviceAction, ...] = ("approve", "deny", "expire", "slow_down")
MALFORMED_KINDS: tuple[MalformedKind, ...] = ("truncated", "html", "not_json", "empty")
CONCURRENCY_SCOPES: tuple[ConcurrencyScope, ...] = ("merchant", "application")


class Unset(enum.Enum):
    """Marks a `configure` argument that was not given (None is a meaningful value there)."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


class TokenPair(NamedTuple):
    """An access token and the refresh token issued with it."""

    access_token: str
    refresh_token: str


@dataclasses.dataclass(frozen=True)
class Settings:
    """Behaviour switches of the fake UltraCart; see `Settings.updated` for the accepted values."""

    rotate: Rotate = True
    expires_in: str | int | None = str(DEFAULT_LIFETIME_SECONDS)
    include_merchant_id: bool = True
    concurrency_scope: ConcurrencyScope | None = "merchant"
    rate_per_second: float | None = None
    latency_ms: int = 0
    scope: str = DEFAULT_SCOPE
    # Device authorizations (RFC 8628): the polling interval and the lifetime they are issued with.
    device_interval: int = DEFAULT_DEVICE_INTERVAL
    device_expires_in: int = DEFAULT_DEVICE_EXPIRES_IN
    # UltraCart refuses the app itself: every call its client authenticates (token, revoke,
    # device authorize) answers 401 invalid_client, whatever grant it carries (a revoked or
    # mistyped client secret, a disabled application).
    refuse_client: bool = False

    def token_lifetime(self) -> int:
        """Seconds an access token lives, whatever `expires_in` tells the client."""
        value = self.expires_in
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
            return int(value)
        return DEFAULT_LIFETIME_SECONDS

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: Mapping[str, object]) -> Settings:
        """A copy with `changes` applied; raises ValueError on an unknown key or a bad value.

        Used for both the Python API and the JSON control endpoint, so both validate alike.
        """
        known = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        merged: dict[str, object] = {**self.to_json(), **changes}

        rotate = merged["rotate"]
        if not (isinstance(rotate, bool) or rotate == "omit"):
            raise ValueError("rotate must be true, false or 'omit'")
        expires_in = merged["expires_in"]
        # bool is an int subclass; True as a lifetime is certainly a mistake.
        if isinstance(expires_in, bool) or not (expires_in is None or isinstance(expires_in, str | int)):
            raise ValueError("expires_in must be a string, an integer or null")
        include_merchant_id = merged["include_merchant_id"]
        if not isinstance(include_merchant_id, bool):
            raise ValueError("include_merchant_id must be a boolean")
        concurrency_scope = merged["concurrency_scope"]
        if concurrency_scope is not None and concurrency_scope not in CONCURRENCY_SCOPES:
            raise ValueError("concurrency_scope must be 'merchant', 'application' or null")
        rate = merged["rate_per_second"]
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0):
            raise ValueError("rate_per_second must be a positive number or null")
        latency = merged["latency_ms"]
        if isinstance(latency, bool) or not isinstance(latency, int) or latency < 0:
            raise ValueError("latency_ms must be a non-negative integer")
        scope = merged["scope"]
        if not isinstance(scope, str):
            raise ValueError("scope must be a string")
        device_interval = merged["device_interval"]
        if isinstance(device_interval, bool) or not isinstance(device_interval, int) or device_interval < 1:
            raise ValueError("device_interval must be a positive integer")
        device_expires_in = merged["device_expires_in"]
        if (
            isinstance(device_expires_in, bool)
            or not isinstance(device_expires_in, int)
            or device_expires_in < 1
        ):
            raise ValueError("device_expires_in must be a positive integer")
        refuse_client = merged["refuse_client"]
        if not isinstance(refuse_client, bool):
            raise ValueError("refuse_client must be a boolean")

        return Settings(
            rotate=rotate,
            expires_in=expires_in,
            include_merchant_id=include_merchant_id,
            concurrency_scope=concurrency_scope,
            rate_per_second=None if rate is None else float(rate),
            latency_ms=latency,
            scope=scope,
            device_interval=device_interval,
            device_expires_in=device_expires_in,
            refuse_client=refuse_client,
        )


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the sandbox received, as UltraCart would have seen it.

    `status` is None while the request is in flight and when no answer was sent
    (an injected `reset` or `timeout`); `fault` names the injected fault, if any.
    """

    id: int
    time: float
    method: str
    path: str
    endpoint: str | None
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]
    grant_type: str | None
    merchant_id: str | None
    status: int | None
    fault: str | None

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecordedRequest:
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})


class SandboxApi(Protocol):
    """What tests can do to a sandbox, in-process (`Sandbox`) or over HTTP (`SandboxControl`)."""

    @property
    def base_url(self) -> str: ...

    @property
    def client_id(self) -> str: ...

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
    ) -> Settings: ...

    def set_client_secret(self, client_secret: str | None) -> None: ...

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
    ) -> None: ...

    def clear_faults(self) -> None: ...

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]: ...

    def clear_requests(self) -> None: ...

    def reset(self) -> None: ...

    def issue_code(self, merchant_id: str, redirect_uri: str) -> str: ...

    def issue_tokens(self, merchant_id: str, expires_in: int | None = None) -> TokenPair: ...

    def token_is_valid(self, token: str) -> bool: ...

    def refresh_token_is_valid(self, token: str) -> bool: ...

    def advance_time(self, seconds: float) -> None: ...

    def device(
        self, user_code: str, action: DeviceAction, *, merchant_id: str | None = None, times: int = 1
    ) -> None: ...


def settings_changes(**arguments: object) -> dict[str, object]:
    """The `configure` keyword arguments that were actually given."""
    return {name: value for name, value in arguments.items() if value is not UNSET}
