"""Configuration: sections of environment variables, each parsed on first use into typed values.

Each function of the template gets the variables of the sections it uses, and nothing else
(:data:`FUNCTION_SECTIONS`); the ``core`` section is the template's Globals. A section is
parsed (and validated: a missing or malformed variable raises naming it) the first time one of
its values is read, so code that never reads a section never needs its variables: the
in-process ``get_access_token`` of an app's own Lambda reads ``core``, ``events``,
``ultracart`` and ``tokens`` only. ``Settings.for_function`` parses a function's sections at
once, as its cold start does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, overload
from urllib.parse import urlsplit

from ucoauth.errors import ConfigurationError
from ucoauth.validation import is_scope

DEFAULT_BASE_URL = "https://secure.ultracart.com/rest/v2"

# Where UltraCart's hourly and daily limits count (docs/CAPACITY.md): the application as a whole,
# each merchant's authorization of it, or both at once. The first is the default.
BudgetScope = Literal["application", "merchant", "both"]
BUDGET_SCOPES: tuple[BudgetScope, ...] = ("application", "merchant", "both")


def _url(name: str, value: str, *, allow_empty: bool) -> str:
    if not value:
        if allow_empty:
            return ""
        raise ConfigurationError(f"{name} must not be empty")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{name} must not carry a query or fragment")
    return value


DEFAULT_APP_NAME = "Your UltraCart app"
_APP_NAME_MAX = 80


def _app_name(value: str) -> str:
    """The app's display name: printable, one line, at most 80 characters (HTML-escaped later)."""
    name = value or DEFAULT_APP_NAME
    if len(name) > _APP_NAME_MAX or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ConfigurationError(f"APP_NAME must be one printable line of at most {_APP_NAME_MAX} characters")
    return name


def _link(name: str, value: str, *, mailto: bool) -> str:
    """An optional link shown to merchants: empty, an https URL, or (if allowed) a mailto: address."""
    if not value:
        return ""
    if mailto and value.startswith("mailto:"):
        if not re.fullmatch(r"mailto:[^\s@?#]+@[^\s@?#]+", value):
            raise ConfigurationError(f"{name} must be an https URL or mailto:address")
        return value
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value):
        raise ConfigurationError(f"{name} must be an https URL" + (" or mailto:address" if mailto else ""))
    return value


_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86_400}


def _rate_seconds(expression: str) -> int:
    """Seconds between planner runs from a ``rate(...)`` schedule; 300 for empty or cron."""
    if not expression or expression.startswith("cron("):
        return 300
    match = _RATE.match(expression)
    if match is None:
        raise ConfigurationError("REFRESH_SCHEDULE_RATE must be rate(N minutes|hours|days) or cron(...)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


# Read by the core section, set by Lambda itself (never by the template).
_RUNTIME_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")


class _Reader:
    """One section's view of the environment: reading a variable the section does not declare
    is a bug (every variable belongs to exactly one section), and fails at once."""

    def __init__(self, env: Mapping[str, str], section: Section) -> None:
        self._env = env
        self._section = section

    def _get(self, name: str) -> str:
        if name not in self._section.variables and name not in _RUNTIME_VARIABLES:
            raise ConfigurationError(f"{name} is not a variable of the {self._section.name} settings")
        return self._env.get(name, "").strip()

    def required(self, name: str) -> str:
        value = self._get(name)
        if not value:
            raise ConfigurationError(f"environment variable {name} is missing or empty")
        return value

    def optional(self, name: str) -> str:
        return self._get(name)

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        raw = self._get(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"environment variable {name} must be a number") from None
        if not low <= value <= high:
            raise ConfigurationError(f"environment variable {name} must be between {low} and {high}")
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self.number(name, default, low=low, high=high)
        if value != int(value):
            raise ConfigurationError(f"environment variable {name} must be a whole number")
        return int(value)

    def choice[T: str](self, name: str, allowed: tuple[T, ...]) -> T:
        """One of ``allowed``; the first when the variable is absent or empty."""
        raw = self._get(name)
        if not raw:
            return allowed[0]
        for value in allowed:
            if raw == value:
                return value
        raise ConfigurationError(f"environment variable {name} must be one of {', '.join(allowed)}")


Parser = Callable[[_Reader], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Section:
    """A group of variables that go together: declared once, parsed together, given together."""

    name: str
    variables: tuple[str, ...]
    parse: Parser
    doc: str


# Every section, in the order the docs list them. Each variable is declared in exactly one.
SECTIONS: dict[str, Section] = {}


def _section(name: str, doc: str, *variables: str) -> Callable[[Parser], Parser]:
    def register(parse: Parser) -> Parser:
        SECTIONS[name] = Section(name, variables, parse, doc)
        return parse

    return register


@_section(
    "core",
    "every function (the template's Globals): the table, the key, the stage, observability",
    "STAGE",
    "TABLE_NAME",
    "KMS_KEY_ID",
    "DUE_SHARDS",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
    "POWERTOOLS_LOGGER_LOG_EVENT",
)
def _core(env: _Reader) -> dict[str, Any]:
    # The POWERTOOLS_* variables are read by Powertools itself.
    return {
        "stage": env.optional("STAGE") or "dev",
        "table_name": env.required("TABLE_NAME"),
        "kms_key_id": env.required("KMS_KEY_ID"),
        "due_shards": env.integer("DUE_SHARDS", 8, low=1, high=256),
        "region": env.optional("AWS_REGION") or env.optional("AWS_DEFAULT_REGION") or "us-east-1",
    }


@_section("events", "publishing events", "EVENT_BUS_NAME")
def _events(env: _Reader) -> dict[str, Any]:
    return {"event_bus_name": env.optional("EVENT_BUS_NAME") or "default"}


@_section(
    "ultracart",
    "calling UltraCart: the client and the one budget every call takes from",
    "ULTRACART_BASE_URL",
    "ULTRACART_CLIENT_ID",
    "ULTRACART_CLIENT_SECRET_ARN",
    "ULTRACART_CONNECT_TIMEOUT",
    "ULTRACART_READ_TIMEOUT",
    "ULTRACART_HOURLY_LIMIT",
    "ULTRACART_DAILY_LIMIT",
    "ULTRACART_CALLBACK_RESERVE",
    "ULTRACART_BUDGET_SCOPE",
)
def _ultracart(env: _Reader) -> dict[str, Any]:
    client_id = env.required("ULTRACART_CLIENT_ID")
    if any(c.isspace() for c in client_id) or len(client_id) > 200:
        raise ConfigurationError("environment variable ULTRACART_CLIENT_ID is malformed")
    base_url = env.optional("ULTRACART_BASE_URL") or DEFAULT_BASE_URL
    return {
        "ultracart_base_url": _url("ULTRACART_BASE_URL", base_url, allow_empty=False).rstrip("/"),
        "ultracart_client_id": client_id,
        "ultracart_client_secret_arn": env.optional("ULTRACART_CLIENT_SECRET_ARN"),
        "ultracart_connect_timeout": env.number("ULTRACART_CONNECT_TIMEOUT", 3.05, low=0.05, high=60),
        "ultracart_read_timeout": env.number("ULTRACART_READ_TIMEOUT", 10.0, low=0.05, high=120),
        "ultracart_hourly_limit": env.integer("ULTRACART_HOURLY_LIMIT", 900, low=1, high=1_000_000),
        "ultracart_daily_limit": env.integer("ULTRACART_DAILY_LIMIT", 9000, low=1, high=10_000_000),
        "ultracart_callback_reserve": env.number("ULTRACART_CALLBACK_RESERVE", 0.1, low=0.0, high=0.9),
        "ultracart_budget_scope": env.choice("ULTRACART_BUDGET_SCOPE", BUDGET_SCOPES),
    }


@_section(
    "tokens",
    "storing and serving tokens: when a stored token is due, when it is refreshed inline",
    "INLINE_REFRESH_MARGIN_SECONDS",
    "REFRESH_MIN_WINDOW_SECONDS",
    "REFRESH_WINDOW_FRACTION",
    "REFRESH_IDLE_AFTER_SECONDS",
    "REFRESH_TOKEN_LAPSE_SECONDS",
    "ASSUMED_TOKEN_LIFETIME_SECONDS",
)
def _tokens(env: _Reader) -> dict[str, Any]:
    return {
        "inline_refresh_margin_seconds": env.integer(
            "INLINE_REFRESH_MARGIN_SECONDS", 300, low=0, high=86_400
        ),
        "refresh_min_window_seconds": env.integer("REFRESH_MIN_WINDOW_SECONDS", 900, low=0, high=86_400),
        "refresh_window_fraction": env.number("REFRESH_WINDOW_FRACTION", 0.2, low=0.0, high=0.9),
        "refresh_idle_after_seconds": env.integer(
            "REFRESH_IDLE_AFTER_SECONDS", 604_800, low=0, high=365 * 86_400
        ),
        "refresh_token_lapse_seconds": env.integer(
            "REFRESH_TOKEN_LAPSE_SECONDS", 2_592_000, low=2 * 86_400, high=365 * 86_400
        ),
        "assumed_token_lifetime_seconds": env.integer(
            "ASSUMED_TOKEN_LIFETIME_SECONDS", 3600, low=300, high=30 * 86_400
        ),
    }


@_section(
    "pages",
    "the merchant's browser: install, callback and the pages",
    "OAUTH_REDIRECT_URI",
    "POST_INSTALL_REDIRECT_URL",
    "APP_NAME",
    "APP_URL",
    "SUPPORT_URL",
    "STATE_TTL_SECONDS",
)
def _pages(env: _Reader) -> dict[str, Any]:
    return {
        "oauth_redirect_uri": _url(
            "OAUTH_REDIRECT_URI", env.optional("OAUTH_REDIRECT_URI"), allow_empty=True
        ),
        "post_install_redirect_url": _url(
            "POST_INSTALL_REDIRECT_URL", env.optional("POST_INSTALL_REDIRECT_URL"), allow_empty=True
        ),
        "app_name": _app_name(env.optional("APP_NAME")),
        "app_url": _link("APP_URL", env.optional("APP_URL"), mailto=False),
        "support_url": _link("SUPPORT_URL", env.optional("SUPPORT_URL"), mailto=True),
        "state_ttl_seconds": env.integer("STATE_TTL_SECONDS", 600, low=30, high=3600),
    }


@_section(
    "refresh",
    "scheduled refresh: the refresh queue (also where issued tokens that could not be stored are "
    "kept), the global pace and the planner's schedule",
    "REFRESH_QUEUE_URL",
    "REFRESH_PACE_LIMIT",
    "REFRESH_PACE_WINDOW_SECONDS",
    "REFRESH_SCHEDULE_RATE",
)
def _refresh(env: _Reader) -> dict[str, Any]:
    return {
        "refresh_queue_url": env.required("REFRESH_QUEUE_URL"),
        "refresh_pace_limit": env.integer("REFRESH_PACE_LIMIT", 10, low=1, high=100_000),
        "refresh_pace_window_seconds": env.integer("REFRESH_PACE_WINDOW_SECONDS", 60, low=1, high=3600),
        "planner_interval_seconds": _rate_seconds(env.optional("REFRESH_SCHEDULE_RATE")),
    }


@_section(
    "uninstall",
    "uninstalls: the revoke queue, how long a revoke is retried, how long tombstones stay",
    "REVOKE_QUEUE_URL",
    "REVOKE_RETRY_SECONDS",
    "TOMBSTONE_TTL_DAYS",
)
def _uninstall(env: _Reader) -> dict[str, Any]:
    return {
        "revoke_queue_url": env.required("REVOKE_QUEUE_URL"),
        "revoke_retry_seconds": env.integer("REVOKE_RETRY_SECONDS", 86_400, low=3600, high=14 * 86_400),
        "tombstone_ttl_days": env.integer("TOMBSTONE_TTL_DAYS", 90, low=1, high=3650),
    }


@_section("webhook", "verifying signed uninstall webhooks", "WEBHOOK_SECRET_ARN")
def _webhook(env: _Reader) -> dict[str, Any]:
    return {"webhook_secret_arn": env.required("WEBHOOK_SECRET_ARN")}


@_section(
    "admin",
    "the operators' API: the dead-letter queues it reports and redrives",
    "REFRESH_DEAD_LETTER_QUEUE_URL",
    "REVOKE_DEAD_LETTER_QUEUE_URL",
)
def _admin(env: _Reader) -> dict[str, Any]:
    return {
        "refresh_dead_letter_queue_url": env.required("REFRESH_DEAD_LETTER_QUEUE_URL"),
        "revoke_dead_letter_queue_url": env.required("REVOKE_DEAD_LETTER_QUEUE_URL"),
    }


@_section(
    "device",
    "the device flow (installs without a redirect): the default scope, the poll queue, the device-code key",
    "DEVICE_SCOPE",
    "DEVICE_QUEUE_URL",
    "DEVICE_KEY_ID",
)
def _device(env: _Reader) -> dict[str, Any]:
    scope = env.required("DEVICE_SCOPE")
    if not is_scope(scope):
        raise ConfigurationError("environment variable DEVICE_SCOPE must be one or more scope names")
    return {
        "device_scope": scope,
        "device_queue_url": env.required("DEVICE_QUEUE_URL"),
        "device_key_id": env.required("DEVICE_KEY_ID"),
    }


# The sections in the template's Globals (every function has them).
GLOBAL_SECTIONS: tuple[str, ...] = ("core",)

# The sections each function of the template uses (by logical id). The template gives each
# function exactly these sections' variables (a test compares them for equality).
FUNCTION_SECTIONS: dict[str, tuple[str, ...]] = {
    "OAuthBrowserFunction": ("core", "events", "ultracart", "tokens", "pages", "uninstall"),
    "TokenApiFunction": ("core", "events", "ultracart", "tokens"),
    "UninstallWebhookFunction": ("core", "uninstall", "webhook"),
    "RefreshPlannerFunction": ("core", "events", "ultracart", "refresh"),
    "RefreshWorkerFunction": ("core", "events", "ultracart", "tokens", "refresh"),
    "RevokeWorkerFunction": ("core", "events", "ultracart", "tokens", "uninstall"),
    "AdminApiFunction": ("core", "events", "ultracart", "tokens", "refresh", "uninstall", "admin"),
    "DeviceFlowFunction": ("core", "ultracart", "device"),
    "DeviceWorkerFunction": ("core", "events", "ultracart", "tokens", "uninstall", "device"),
}

# What ``ucoauth.tokens.get_access_token`` reads in an app's own Lambda (README).
ACCESS_TOKEN_SECTIONS: tuple[str, ...] = ("core", "events", "ultracart", "tokens")

# Every variable of every section, each once.
ENVIRONMENT: tuple[str, ...] = tuple(name for section in SECTIONS.values() for name in section.variables)


def variables_of(sections: Iterable[str]) -> tuple[str, ...]:
    """The variables of ``sections``, in declaration order."""
    wanted = set(sections)
    unknown = wanted - set(SECTIONS)
    if unknown:
        raise ConfigurationError(f"no such settings section: {sorted(unknown)}")
    return tuple(
        name for section in SECTIONS.values() if section.name in wanted for name in section.variables
    )


def function_variables(logical_id: str) -> tuple[str, ...]:
    """Every variable a function of the template gets (Globals and its own)."""
    return variables_of(FUNCTION_SECTIONS[logical_id])


class _Value[T]:
    """A value of a section: reading it parses the section on first use."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> _Value[T]: ...
    @overload
    def __get__(self, instance: Settings, owner: type) -> T: ...
    def __get__(self, instance: Settings | None, owner: type) -> _Value[T] | T:
        if instance is None:
            return self
        value: T = instance.section(self.section)[self.name]
        return value


class Settings:
    """The environment of one function, as typed values grouped in sections (read-only).

    A section is parsed the first time one of its values is read (or at once, for the
    sections passed to :meth:`from_env`): a missing or malformed variable raises
    :class:`~ucoauth.errors.ConfigurationError` naming it.
    """

    __slots__ = ("_env", "_parsed")

    # core
    stage = _Value[str]("core")
    table_name = _Value[str]("core")
    kms_key_id = _Value[str]("core")
    due_shards = _Value[int]("core")
    region = _Value[str]("core")
    # events
    event_bus_name = _Value[str]("events")
    # ultracart
    ultracart_base_url = _Value[str]("ultracart")
    ultracart_client_id = _Value[str]("ultracart")
    ultracart_client_secret_arn = _Value[str]("ultracart")
    ultracart_connect_timeout = _Value[float]("ultracart")
    ultracart_read_timeout = _Value[float]("ultracart")
    ultracart_hourly_limit = _Value[int]("ultracart")
    ultracart_daily_limit = _Value[int]("ultracart")
    ultracart_callback_reserve = _Value[float]("ultracart")
    ultracart_budget_scope = _Value[BudgetScope]("ultracart")
    # tokens
    inline_refresh_margin_seconds = _Value[int]("tokens")
    refresh_min_window_seconds = _Value[int]("tokens")
    refresh_window_fraction = _Value[float]("tokens")
    refresh_idle_after_seconds = _Value[int]("tokens")
    refresh_token_lapse_seconds = _Value[int]("tokens")
    assumed_token_lifetime_seconds = _Value[int]("tokens")
    # pages
    oauth_redirect_uri = _Value[str]("pages")
    post_install_redirect_url = _Value[str]("pages")
    app_name = _Value[str]("pages")
    app_url = _Value[str]("pages")
    support_url = _Value[str]("pages")
    state_ttl_seconds = _Value[int]("pages")
    # refresh
    refresh_queue_url = _Value[str]("refresh")
    refresh_pace_limit = _Value[int]("refresh")
    refresh_pace_window_seconds = _Value[int]("refresh")
    planner_interval_seconds = _Value[int]("refresh")
    # uninstall
    revoke_queue_url = _Value[str]("uninstall")
    revoke_retry_seconds = _Value[int]("uninstall")
    tombstone_ttl_days = _Value[int]("uninstall")
    # webhook
    webhook_secret_arn = _Value[str]("webhook")
    # admin
    refresh_dead_letter_queue_url = _Value[str]("admin")
    revoke_dead_letter_queue_url = _Value[str]("admin")
    # device
    device_scope = _Value[str]("device")
    device_queue_url = _Value[str]("device")
    device_key_id = _Value[str]("device")

    def __init__(
        self, env: Mapping[str, str], *, parsed: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        known = set(ENVIRONMENT) | set(_RUNTIME_VARIABLES)
        self._env: dict[str, str] = {name: value for name, value in env.items() if name in known}
        self._parsed: dict[str, dict[str, Any]] = {name: dict(v) for name, v in (parsed or {}).items()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, sections: Iterable[str] = ()) -> Settings:
        """Settings of ``env`` (default ``os.environ``), ``sections`` parsed and validated now."""
        settings = cls(os.environ if env is None else env)
        for name in sections:
            settings.section(name)
        return settings

    @classmethod
    def for_function(cls, logical_id: str, env: Mapping[str, str] | None = None) -> Settings:
        """Settings of a template function, every section it uses parsed now (its cold start)."""
        return cls.from_env(env, sections=FUNCTION_SECTIONS[logical_id])

    def section(self, name: str) -> dict[str, Any]:
        """The parsed values of one section (parsed on first use)."""
        found = self._parsed.get(name)
        if found is None:
            spec = SECTIONS.get(name)
            if spec is None:
                raise ConfigurationError(f"no such settings section: {name}")
            found = spec.parse(_Reader(self._env, spec))
            self._parsed[name] = found
        return found

    def has(self, name: str) -> bool:
        """Whether the environment carries the section at all (any of its variables)."""
        return any(variable in self._env for variable in SECTIONS[name].variables)

    def replace(self, **values: Any) -> Settings:
        """A copy with some values changed (tests, benchmarks)."""
        parsed = {name: dict(v) for name, v in self._parsed.items()}
        for field, value in values.items():
            spec = getattr(type(self), field, None)
            if not isinstance(spec, _Value):
                raise AttributeError(f"Settings has no value {field!r}")
            parsed.setdefault(spec.section, dict(self.section(spec.section)))[field] = value
        return Settings(self._env, parsed=parsed)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in Settings.__slots__ and not hasattr(self, name):
            object.__setattr__(self, name, value)
            return
        raise AttributeError(f"settings are read-only: {name}")

    def __repr__(self) -> str:
        return f"Settings(sections parsed: {', '.join(sorted(self._parsed)) or 'none'})"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings of ``os.environ``; each section is parsed on first use and cached."""
    return Settings.from_env()
