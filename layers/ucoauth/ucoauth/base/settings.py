"""Configuration: sections of environment variables, each parsed on first use into typed values.

A section is one frozen dataclass whose fields are its variables: a field declares the
environment variable it is read from, with its default, bounds and parser, so each variable is
named once (``ENV_VAR`` below). Each function of the template gets the variables of the sections
it uses, and nothing else (:data:`FUNCTION_SECTIONS`); the ``core`` section is the template's
Globals. A section is parsed (and validated: a missing or malformed variable raises naming it)
the first time one of its values is read, so code that never reads a section never needs its
variables: the in-process ``get_access_token`` of an app's own Lambda reads ``core``,
``events``, ``ultracart`` and ``tokens`` only. ``Settings.for_function`` parses a function's
sections at once, as its cold start does.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

from ucoauth.base.errors import ConfigurationError
from ucoauth.base.validation import is_scope, origin_of

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
    if len(value) > _APP_NAME_MAX or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigurationError(f"APP_NAME must be one printable line of at most {_APP_NAME_MAX} characters")
    return value


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
    """Seconds between planner runs from a ``rate(...)`` schedule; 300 for cron."""
    if expression.startswith("cron("):
        return 300
    match = _RATE.match(expression)
    if match is None:
        raise ConfigurationError("REFRESH_SCHEDULE_RATE must be rate(N minutes|hours|days) or cron(...)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


def _client_id(value: str) -> str:
    if any(c.isspace() for c in value) or len(value) > 200:
        raise ConfigurationError("environment variable ULTRACART_CLIENT_ID is malformed")
    return value


def _scope(value: str) -> str:
    if not is_scope(value):
        raise ConfigurationError("environment variable DEVICE_SCOPE must be one or more scope names")
    return value


# -- how a field is read ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Variable:
    """How one field of a section is read from the environment.

    ``names`` are tried in order and the first set one is read (only the runtime region has
    more than one); ``parse`` turns the stripped text ("" when unset) into the value, applying
    the default and validating. ``default``, ``low`` and ``high`` are what ``parse`` applies,
    kept for the template test (a parameter's range is exactly the variable's).
    """

    names: tuple[str, ...]
    parse: Callable[[str], Any]
    default: Any = None
    low: float | None = None
    high: float | None = None
    runtime: bool = False  # set by Lambda itself, never by the template

    @property
    def name(self) -> str:
        return self.names[0]

    def read(self, env: Mapping[str, str]) -> Any:
        raw = ""
        for name in self.names:
            raw = env.get(name, "").strip()
            if raw:
                break
        return self.parse(raw)


_VARIABLE = "ucoauth.base.settings.variable"


def _field(variable: Variable) -> Any:
    return field(metadata={_VARIABLE: variable})


def required(name: str, check: Callable[[str], str] = str) -> Any:
    """A variable that must be set (and non-blank); ``check`` validates it further."""

    def parse(raw: str) -> str:
        if not raw:
            raise ConfigurationError(f"environment variable {name} is missing or empty")
        return check(raw)

    return _field(Variable((name,), parse))


def optional(name: str, default: str = "", parse: Callable[[str], Any] = str) -> Any:
    """A variable that may be unset (``default`` then); ``parse`` validates and converts it."""
    return _field(Variable((name,), lambda raw: parse(raw or default), default=default))


def _bounded(name: str, raw: str, default: float, low: float, high: float) -> float:
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name} must be a number") from None
    if not low <= value <= high:
        raise ConfigurationError(f"environment variable {name} must be between {low} and {high}")
    return value


def number(name: str, default: float, *, low: float, high: float) -> Any:
    """A number within ``[low, high]``; ``default`` when unset."""
    return _field(Variable((name,), lambda raw: _bounded(name, raw, default, low, high), default, low, high))


def integer(name: str, default: int, *, low: int, high: int) -> Any:
    """A whole number within ``[low, high]``; ``default`` when unset."""

    def parse(raw: str) -> int:
        value = _bounded(name, raw, default, low, high)
        if value != int(value):
            raise ConfigurationError(f"environment variable {name} must be a whole number")
        return int(value)

    return _field(Variable((name,), parse, default, low, high))


def choice[T: str](name: str, allowed: tuple[T, ...]) -> Any:
    """One of ``allowed``; the first when unset."""

    def parse(raw: str) -> T:
        if not raw:
            return allowed[0]
        for value in allowed:
            if raw == value:
                return value
        raise ConfigurationError(f"environment variable {name} must be one of {', '.join(allowed)}")

    return _field(Variable((name,), parse, default=allowed[0]))


def runtime(*names: str, default: str) -> Any:
    """A value Lambda sets (the first of ``names`` set), never the template."""
    return _field(Variable(names, lambda raw: raw or default, default=default, runtime=True))


# -- sections --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Section:
    """A group of variables that go together: declared once, parsed together, given together."""

    name: str
    values: type  # the frozen dataclass whose fields are the section's values
    fields: dict[str, Variable]  # field name -> how it is read
    variables: tuple[str, ...]  # the template's variables of the section, in declaration order
    doc: str

    def parse(self, env: Mapping[str, str]) -> Any:
        """The section's values from ``env``; raises naming the first bad variable."""
        return self.build({name: variable.read(env) for name, variable in self.fields.items()})

    def build(self, values: Mapping[str, Any]) -> Any:
        """The section's frozen dataclass holding ``values`` (one for each field). Sections are
        declared without a generated ``__init__`` (``init=False``): compiling one costs about 1 M
        instructions at every cold start, and nothing but this builds a section."""
        built: Any = object.__new__(self.values)
        for name in self.fields:
            object.__setattr__(built, name, values[name])
        return built


# Every section, in the order the docs list them. Each variable is declared in exactly one.
SECTIONS: dict[str, Section] = {}
# Field name -> its section: every field name is a value of Settings, so each is unique.
_FIELD_SECTION: dict[str, str] = {}


def _section[C: type](name: str) -> Callable[[C], C]:
    def register(cls: C) -> C:
        declared = {f.name: f.metadata[_VARIABLE] for f in dataclasses.fields(cls)}
        for field_name in declared:
            # A value of Settings by its name alone: two sections must not both declare it.
            if _FIELD_SECTION.setdefault(field_name, name) != name:
                raise ConfigurationError(f"settings value {field_name!r} is declared twice")
        unread: tuple[str, ...] = getattr(cls, "READ_ELSEWHERE", ())
        variables = tuple(v.name for v in declared.values() if not v.runtime) + unread
        SECTIONS[name] = Section(name, cls, declared, variables, " ".join((cls.__doc__ or "").split()))
        return cls

    return register


@_section("core")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Core:
    """every function (the template's Globals): the table, the key, the stage, observability"""

    READ_ELSEWHERE: ClassVar[tuple[str, ...]] = (  # by Powertools itself
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "POWERTOOLS_LOG_LEVEL",
        "POWERTOOLS_LOGGER_LOG_EVENT",
    )

    stage: str = optional("STAGE", "dev")
    table_name: str = required("TABLE_NAME")
    kms_key_id: str = required("KMS_KEY_ID")
    due_shards: int = integer("DUE_SHARDS", 8, low=1, high=256)
    region: str = runtime("AWS_REGION", "AWS_DEFAULT_REGION", default="us-east-1")


@_section("events")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Events:
    """publishing events"""

    event_bus_name: str = optional("EVENT_BUS_NAME", "default")


@_section("ultracart")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class UltraCart:
    """calling UltraCart: the client and the one budget every call takes from"""

    ultracart_base_url: str = optional(
        "ULTRACART_BASE_URL",
        DEFAULT_BASE_URL,
        lambda raw: _url("ULTRACART_BASE_URL", raw, allow_empty=False).rstrip("/"),
    )
    ultracart_client_id: str = required("ULTRACART_CLIENT_ID", _client_id)
    ultracart_client_secret_arn: str = optional("ULTRACART_CLIENT_SECRET_ARN")
    ultracart_connect_timeout: float = number("ULTRACART_CONNECT_TIMEOUT", 3.05, low=0.05, high=60)
    ultracart_read_timeout: float = number("ULTRACART_READ_TIMEOUT", 10.0, low=0.05, high=120)
    ultracart_hourly_limit: int = integer("ULTRACART_HOURLY_LIMIT", 900, low=1, high=1_000_000)
    ultracart_daily_limit: int = integer("ULTRACART_DAILY_LIMIT", 9000, low=1, high=10_000_000)
    ultracart_callback_reserve: float = number("ULTRACART_CALLBACK_RESERVE", 0.1, low=0.0, high=0.9)
    # A field() like every value here (ruff knows only that str, int and float are immutable).
    ultracart_budget_scope: BudgetScope = choice("ULTRACART_BUDGET_SCOPE", BUDGET_SCOPES)  # noqa: RUF009


@_section("tokens")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Tokens:
    """storing and serving tokens: when a stored token is due, when it is refreshed inline, how
    long an opened data key is kept"""

    inline_refresh_margin_seconds: int = integer("INLINE_REFRESH_MARGIN_SECONDS", 60, low=0, high=86_400)
    refresh_min_window_seconds: int = integer("REFRESH_MIN_WINDOW_SECONDS", 240, low=0, high=86_400)
    refresh_window_fraction: float = number("REFRESH_WINDOW_FRACTION", 0.05, low=0.0, high=0.9)
    refresh_token_lapse_seconds: int = integer(
        "REFRESH_TOKEN_LAPSE_SECONDS", 2_592_000, low=2 * 86_400, high=365 * 86_400
    )
    assumed_token_lifetime_seconds: int = integer(
        "ASSUMED_TOKEN_LIFETIME_SECONDS", 3600, low=300, high=30 * 86_400
    )
    # How long a data key KMS opened stays in a function's memory (0: not kept).
    data_key_cache_seconds: int = integer("DATA_KEY_CACHE_SECONDS", 3600, low=0, high=86_400)


@_section("pages")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Pages:
    """the merchant's browser: install, callback and the pages"""

    post_install_redirect_url: str = optional(
        "POST_INSTALL_REDIRECT_URL", "", lambda raw: _url("POST_INSTALL_REDIRECT_URL", raw, allow_empty=True)
    )
    app_name: str = optional("APP_NAME", DEFAULT_APP_NAME, _app_name)
    app_url: str = optional("APP_URL", "", lambda raw: _link("APP_URL", raw, mailto=False))
    support_url: str = optional("SUPPORT_URL", "", lambda raw: _link("SUPPORT_URL", raw, mailto=True))
    state_ttl_seconds: int = integer("STATE_TTL_SECONDS", 600, low=30, high=3600)


@_section("links")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Links:
    """the stack's own browser addresses: the OAuth redirect URI, and the install page next to it
    (the browser's pages, and the install links POST /install-sessions answers)"""

    oauth_redirect_uri: str = optional(
        "OAUTH_REDIRECT_URI", "", lambda raw: _url("OAUTH_REDIRECT_URI", raw, allow_empty=True)
    )


@_section("refresh")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Refresh:
    """scheduled refresh: the refresh queue (also where issued tokens that could not be stored are
    kept), the global pace and the planner's schedule"""

    refresh_queue_url: str = required("REFRESH_QUEUE_URL")
    refresh_pace_limit: int = integer("REFRESH_PACE_LIMIT", 10, low=1, high=100_000)
    refresh_pace_window_seconds: int = integer("REFRESH_PACE_WINDOW_SECONDS", 60, low=1, high=3600)
    planner_interval_seconds: int = optional("REFRESH_SCHEDULE_RATE", "rate(1 minute)", _rate_seconds)


@_section("uninstall")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Uninstall:
    """uninstalls: the revoke queue, how long a revoke is retried, how long tombstones stay"""

    revoke_queue_url: str = required("REVOKE_QUEUE_URL")
    revoke_retry_seconds: int = integer("REVOKE_RETRY_SECONDS", 86_400, low=3600, high=14 * 86_400)
    tombstone_ttl_days: int = integer("TOMBSTONE_TTL_DAYS", 90, low=1, high=3650)


@_section("webhook")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Webhook:
    """verifying signed uninstall webhooks"""

    webhook_secret_arn: str = required("WEBHOOK_SECRET_ARN")


@_section("admin")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Admin:
    """the operators' API: the dead-letter queues it reports and redrives"""

    refresh_dead_letter_queue_url: str = required("REFRESH_DEAD_LETTER_QUEUE_URL")
    revoke_dead_letter_queue_url: str = required("REVOKE_DEAD_LETTER_QUEUE_URL")


@_section("device")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Device:
    """the device flow (installs without a redirect): the default scope, the poll queue, the
    device-code key"""

    device_scope: str = required("DEVICE_SCOPE", _scope)
    device_queue_url: str = required("DEVICE_QUEUE_URL")
    device_key_id: str = required("DEVICE_KEY_ID")


def _origins(raw: str) -> tuple[str, ...]:
    """``INSTALL_RETURN_ORIGINS``: comma-separated ``scheme://host[:port]`` origins (empty: none)."""
    origins: list[str] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        origin = origin_of(entry)
        if origin is None or urlsplit(entry).path not in ("", "/"):
            raise ConfigurationError(
                "INSTALL_RETURN_ORIGINS must list http(s) origins (scheme://host[:port])"
            )
        origins.append(origin)
    return tuple(origins)


@_section("sessions")
@dataclass(frozen=True, eq=False, repr=False, init=False)
class Sessions:
    """install sessions: linking an installation to the app's own account"""

    install_session_ttl_seconds: int = integer("INSTALL_SESSION_TTL_SECONDS", 1800, low=60, high=86_400)
    install_return_origins: tuple[str, ...] = optional("INSTALL_RETURN_ORIGINS", "", _origins)
    # "true": an install must start from a session link (GET /install alone gets a page).
    require_install_session: str = choice("REQUIRE_INSTALL_SESSION", ("false", "true"))
    # A merchant linked to one account installing through another's session: relink or refuse.
    install_relink: str = choice("INSTALL_RELINK", ("allow", "refuse"))


# The sections in the template's Globals (every function has them).
GLOBAL_SECTIONS: tuple[str, ...] = ("core",)

# The sections each function of the template uses (by logical id). The template gives each
# function exactly these sections' variables (a test compares them for equality).
FUNCTION_SECTIONS: dict[str, tuple[str, ...]] = {
    "OAuthBrowserFunction": (
        "core",
        "events",
        "ultracart",
        "tokens",
        "pages",
        "links",
        "uninstall",
        "sessions",
    ),
    "TokenApiFunction": ("core", "events", "ultracart", "tokens", "links", "sessions"),
    "UninstallWebhookFunction": ("core", "uninstall", "webhook"),
    "RefreshPlannerFunction": ("core", "events", "ultracart", "refresh"),
    "RefreshWorkerFunction": ("core", "events", "ultracart", "tokens", "refresh"),
    "RevokeWorkerFunction": ("core", "events", "ultracart", "tokens", "uninstall"),
    "AdminApiFunction": ("core", "events", "ultracart", "tokens", "refresh", "uninstall", "admin"),
    "DeviceFlowFunction": ("core", "ultracart", "device", "sessions"),
    "DeviceWorkerFunction": ("core", "events", "ultracart", "tokens", "uninstall", "device", "sessions"),
}

# What ``ucoauth.usecases.tokens.get_access_token`` reads in an app's own Lambda (README).
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


# Read by the core section, set by Lambda itself (never by the template).
_RUNTIME_VARIABLES: tuple[str, ...] = tuple(
    name
    for section in SECTIONS.values()
    for variable in section.fields.values()
    if variable.runtime
    for name in variable.names
)

if TYPE_CHECKING:
    # For the type checker only: a Settings has every section's values as attributes (which is
    # why the sections have no __slots__: these bases could not share one instance layout).
    class _Values(
        Core, Events, UltraCart, Tokens, Pages, Links, Refresh, Uninstall, Webhook, Admin, Device, Sessions
    ):
        pass
else:
    _Values = object


class Settings(_Values):
    """The environment of one function, as typed values grouped in sections (read-only).

    ``settings.table_name`` is the ``table_name`` field of its section (:class:`Core`). A
    section is parsed the first time one of its values is read (or at once, for the sections
    passed to :meth:`from_env`): a missing or malformed variable raises
    :class:`~ucoauth.base.errors.ConfigurationError` naming it.
    """

    __slots__ = ("_env", "_parsed")

    def __init__(self, env: Mapping[str, str], *, parsed: Mapping[str, Any] | None = None) -> None:
        known = set(ENVIRONMENT) | set(_RUNTIME_VARIABLES)
        self._env: dict[str, str] = {name: value for name, value in env.items() if name in known}
        self._parsed: dict[str, Any] = dict(parsed or {})

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

    def section(self, name: str) -> Any:
        """The parsed values of one section, its frozen dataclass (parsed on first use)."""
        found = self._parsed.get(name)
        if found is None:
            spec = SECTIONS.get(name)
            if spec is None:
                raise ConfigurationError(f"no such settings section: {name}")
            found = spec.parse(self._env)
            self._parsed[name] = found
        return found

    def __getattr__(self, name: str) -> Any:
        # Only called for what the class does not define: a value of one of the sections.
        section = _FIELD_SECTION.get(name)
        if section is None:
            raise AttributeError(f"Settings has no value {name!r}")
        return getattr(self.section(section), name)

    def has(self, name: str) -> bool:
        """Whether the environment carries the section at all (any of its variables)."""
        return any(variable in self._env for variable in SECTIONS[name].variables)

    def replace(self, **values: Any) -> Settings:
        """A copy with some values changed (tests, benchmarks)."""
        changed: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            section = _FIELD_SECTION.get(name)
            if section is None:
                raise AttributeError(f"Settings has no value {name!r}")
            changed.setdefault(section, {})[name] = value
        parsed = dict(self._parsed)
        for section, new in changed.items():
            current = self.section(section)
            spec = SECTIONS[section]
            parsed[section] = spec.build(
                {name: new.get(name, getattr(current, name)) for name in spec.fields}
            )
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
