"""Settings: parsed once, and a bad environment fails at cold start with a message naming it."""

from __future__ import annotations

import pytest

from ucoauth.errors import ConfigurationError
from ucoauth.settings import Settings

BASE = {
    "TABLE_NAME": "t",
    "KMS_KEY_ID": "alias/k",
    "ULTRACART_CLIENT_ID": "client-1",
    "REFRESH_QUEUE_URL": "https://sqs/refresh",
    "REVOKE_QUEUE_URL": "https://sqs/revoke",
    "WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:x",
}


def test_defaults_apply_when_optional_values_are_absent() -> None:
    settings = Settings.from_env(BASE)
    assert settings.ultracart_base_url == "https://secure.ultracart.com/rest/v2"
    assert settings.oauth_redirect_uri == ""
    assert settings.refresh_min_window_seconds == 900
    assert settings.inline_refresh_margin_seconds == 300
    assert settings.event_bus_name == "default"


@pytest.mark.parametrize("name", sorted(BASE))
def test_a_missing_required_variable_is_named(name: str) -> None:
    env = {k: v for k, v in BASE.items() if k != name}
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env(env)


@pytest.mark.parametrize("name", sorted(BASE))
def test_an_empty_required_variable_is_named(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({**BASE, name: "  "})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ULTRACART_BASE_URL", "secure.ultracart.com/rest/v2"),
        ("ULTRACART_BASE_URL", "ftp://secure.ultracart.com"),
        ("OAUTH_REDIRECT_URI", "not a url"),
        ("POST_INSTALL_REDIRECT_URL", "https://example.com/done?next=evil"),
        ("ULTRACART_CLIENT_ID", "has space"),
        ("DUE_SHARDS", "zero"),
        ("DUE_SHARDS", "0"),
        ("REFRESH_PACE_LIMIT", "1.5"),
        ("ULTRACART_READ_TIMEOUT", "-1"),
    ],
)
def test_malformed_values_fail_with_the_variable_name(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({**BASE, name: value})


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(BASE)
    with pytest.raises(AttributeError):
        settings.table_name = "other"  # type: ignore[misc]


def test_the_app_branding_has_defaults_and_is_validated() -> None:
    settings = Settings.from_env(BASE)
    assert settings.app_name == "Your UltraCart app"
    assert settings.app_url == "" and settings.support_url == ""
    branded = Settings.from_env(
        {
            **BASE,
            "APP_NAME": "Acme Sync",
            "APP_URL": "https://app.acme.example/",
            "SUPPORT_URL": "mailto:help@acme.example",
        }
    )
    assert (branded.app_name, branded.app_url, branded.support_url) == (
        "Acme Sync",
        "https://app.acme.example/",
        "mailto:help@acme.example",
    )
    assert Settings.from_env({**BASE, "SUPPORT_URL": "https://acme.example/help"}).support_url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_NAME", "a" * 81),
        ("APP_NAME", "Acme\nSync"),
        ("APP_URL", "javascript:alert(1)"),
        ("APP_URL", "http://app.acme.example/"),
        ("SUPPORT_URL", "javascript:alert(1)"),
        ("SUPPORT_URL", "mailto:"),
        ("SUPPORT_URL", "ftp://acme.example"),
    ],
)
def test_bad_branding_fails_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({**BASE, name: value})
