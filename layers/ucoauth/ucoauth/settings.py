"""Configuration, parsed once from the environment into a typed, frozen object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from ucoauth.errors import ConfigurationError

DEFAULT_BASE_URL = "https://secure.ultracart.com/rest/v2"

# Every variable the template's Globals give the functions, declared once: the template test
# compares the Globals with this tuple for equality, and the docs must describe each one.
# (AWS_REGION, also read here, is set by Lambda itself.)
ENVIRONMENT: tuple[str, ...] = (
    "STAGE",
    "TABLE_NAME",
    "KMS_KEY_ID",
    "ULTRACART_BASE_URL",
    "ULTRACART_CLIENT_ID",
    "ULTRACART_CLIENT_SECRET_ARN",
    "OAUTH_REDIRECT_URI",
    "POST_INSTALL_REDIRECT_URL",
    "APP_NAME",
    "APP_URL",
    "SUPPORT_URL",
    "EVENT_BUS_NAME",
    "REFRESH_QUEUE_URL",
    "REVOKE_QUEUE_URL",
    "REFRESH_DEAD_LETTER_QUEUE_URL",
    "REVOKE_DEAD_LETTER_QUEUE_URL",
    "WEBHOOK_SECRET_ARN",
    "DUE_SHARDS",
    "REFRESH_MIN_WINDOW_SECONDS",
    "REFRESH_WINDOW_FRACTION",
    "INLINE_REFRESH_MARGIN_SECONDS",
    "REFRESH_PACE_LIMIT",
    "REFRESH_PACE_WINDOW_SECONDS",
    "REFRESH_SCHEDULE_RATE",
    "ULTRACART_HOURLY_LIMIT",
    "ULTRACART_DAILY_LIMIT",
    "ULTRACART_CALLBACK_RESERVE",
    "REVOKE_RETRY_SECONDS",
    "REFRESH_IDLE_AFTER_SECONDS",
    "REFRESH_TOKEN_LAPSE_SECONDS",
    "STATE_TTL_SECONDS",
    "ASSUMED_TOKEN_LIFETIME_SECONDS",
    "ULTRACART_CONNECT_TIMEOUT",
    "ULTRACART_READ_TIMEOUT",
    "TOMBSTONE_TTL_DAYS",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
    "POWERTOOLS_LOGGER_LOG_EVENT",
)


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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a function reads from its environment (declared in template.yaml Globals)."""

    stage: str
    table_name: str
    kms_key_id: str
    ultracart_base_url: str
    ultracart_client_id: str
    ultracart_client_secret_arn: str
    oauth_redirect_uri: str
    post_install_redirect_url: str
    event_bus_name: str
    refresh_queue_url: str
    revoke_queue_url: str
    webhook_secret_arn: str
    region: str
    due_shards: int = 8
    refresh_min_window_seconds: int = 900
    refresh_window_fraction: float = 0.2
    inline_refresh_margin_seconds: int = 300
    refresh_pace_limit: int = 10
    refresh_pace_window_seconds: int = 60
    ultracart_hourly_limit: int = 900
    ultracart_daily_limit: int = 9000
    ultracart_callback_reserve: float = 0.1
    revoke_retry_seconds: int = 86_400
    refresh_idle_after_seconds: int = 604_800
    refresh_token_lapse_seconds: int = 2_592_000
    ultracart_connect_timeout: float = 3.05
    ultracart_read_timeout: float = 10.0
    state_ttl_seconds: int = 600
    tombstone_ttl_days: int = 90
    assumed_token_lifetime_seconds: int = 3600
    planner_interval_seconds: int = 300
    app_name: str = DEFAULT_APP_NAME
    app_url: str = ""
    support_url: str = ""
    # Only the admin API reads them (its stats and redrive).
    refresh_dead_letter_queue_url: str = ""
    revoke_dead_letter_queue_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse and validate; a missing or malformed variable raises naming it."""
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigurationError(f"environment variable {name} is missing or empty")
            return value

        def optional(name: str) -> str:
            return env.get(name, "").strip()

        def number(name: str, default: float, *, low: float, high: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigurationError(f"environment variable {name} must be a number") from None
            if not low <= value <= high:
                raise ConfigurationError(f"environment variable {name} must be between {low} and {high}")
            return value

        def integer(name: str, default: int, *, low: int, high: int) -> int:
            value = number(name, default, low=low, high=high)
            if value != int(value):
                raise ConfigurationError(f"environment variable {name} must be a whole number")
            return int(value)

        client_id = required("ULTRACART_CLIENT_ID")
        if any(c.isspace() for c in client_id) or len(client_id) > 200:
            raise ConfigurationError("environment variable ULTRACART_CLIENT_ID is malformed")
        return cls(
            stage=optional("STAGE") or "dev",
            table_name=required("TABLE_NAME"),
            kms_key_id=required("KMS_KEY_ID"),
            ultracart_base_url=_url(
                "ULTRACART_BASE_URL", optional("ULTRACART_BASE_URL") or DEFAULT_BASE_URL, allow_empty=False
            ).rstrip("/"),
            ultracart_client_id=client_id,
            ultracart_client_secret_arn=optional("ULTRACART_CLIENT_SECRET_ARN"),
            oauth_redirect_uri=_url("OAUTH_REDIRECT_URI", optional("OAUTH_REDIRECT_URI"), allow_empty=True),
            post_install_redirect_url=_url(
                "POST_INSTALL_REDIRECT_URL", optional("POST_INSTALL_REDIRECT_URL"), allow_empty=True
            ),
            event_bus_name=optional("EVENT_BUS_NAME") or "default",
            refresh_queue_url=required("REFRESH_QUEUE_URL"),
            revoke_queue_url=required("REVOKE_QUEUE_URL"),
            webhook_secret_arn=required("WEBHOOK_SECRET_ARN"),
            region=optional("AWS_REGION") or optional("AWS_DEFAULT_REGION") or "us-east-1",
            due_shards=integer("DUE_SHARDS", 8, low=1, high=256),
            refresh_min_window_seconds=integer("REFRESH_MIN_WINDOW_SECONDS", 900, low=0, high=86_400),
            refresh_window_fraction=number("REFRESH_WINDOW_FRACTION", 0.2, low=0.0, high=0.9),
            inline_refresh_margin_seconds=integer("INLINE_REFRESH_MARGIN_SECONDS", 300, low=0, high=86_400),
            refresh_pace_limit=integer("REFRESH_PACE_LIMIT", 10, low=1, high=100_000),
            refresh_pace_window_seconds=integer("REFRESH_PACE_WINDOW_SECONDS", 60, low=1, high=3600),
            ultracart_hourly_limit=integer("ULTRACART_HOURLY_LIMIT", 900, low=1, high=1_000_000),
            ultracart_daily_limit=integer("ULTRACART_DAILY_LIMIT", 9000, low=1, high=10_000_000),
            ultracart_callback_reserve=number("ULTRACART_CALLBACK_RESERVE", 0.1, low=0.0, high=0.9),
            revoke_retry_seconds=integer("REVOKE_RETRY_SECONDS", 86_400, low=3600, high=14 * 86_400),
            refresh_idle_after_seconds=integer(
                "REFRESH_IDLE_AFTER_SECONDS", 604_800, low=0, high=365 * 86_400
            ),
            refresh_token_lapse_seconds=integer(
                "REFRESH_TOKEN_LAPSE_SECONDS", 2_592_000, low=2 * 86_400, high=365 * 86_400
            ),
            ultracart_connect_timeout=number("ULTRACART_CONNECT_TIMEOUT", 3.05, low=0.05, high=60),
            ultracart_read_timeout=number("ULTRACART_READ_TIMEOUT", 10.0, low=0.05, high=120),
            state_ttl_seconds=integer("STATE_TTL_SECONDS", 600, low=30, high=3600),
            tombstone_ttl_days=integer("TOMBSTONE_TTL_DAYS", 90, low=1, high=3650),
            planner_interval_seconds=_rate_seconds(optional("REFRESH_SCHEDULE_RATE")),
            assumed_token_lifetime_seconds=integer(
                "ASSUMED_TOKEN_LIFETIME_SECONDS", 3600, low=300, high=30 * 86_400
            ),
            app_name=_app_name(optional("APP_NAME")),
            app_url=_link("APP_URL", optional("APP_URL"), mailto=False),
            support_url=_link("SUPPORT_URL", optional("SUPPORT_URL"), mailto=True),
            refresh_dead_letter_queue_url=optional("REFRESH_DEAD_LETTER_QUEUE_URL"),
            revoke_dead_letter_queue_url=optional("REVOKE_DEAD_LETTER_QUEUE_URL"),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed on first use (cold start) and cached."""
    return Settings.from_env()
