"""Settings: parsed once, and a bad environment fails at cold start with a message naming it."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest

import ucoauth
from devstack.resources import LocalResources
from tests.support.installs import store_installation
from ucoauth.adapters.services import Services
from ucoauth.base.errors import ConfigurationError
from ucoauth.base.settings import (
    ACCESS_TOKEN_SECTIONS,
    ENVIRONMENT,
    FUNCTION_SECTIONS,
    SECTIONS,
    Settings,
    function_variables,
    variables_of,
)
from ucoauth.usecases.tokens import get_access_token

BASE = {
    "TABLE_NAME": "t",
    "KMS_KEY_ID": "alias/k",
    "ULTRACART_CLIENT_ID": "client-1",
    "REFRESH_QUEUE_URL": "https://sqs/refresh",
    "REVOKE_QUEUE_URL": "https://sqs/revoke",
    "WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:x",
    "REFRESH_DEAD_LETTER_QUEUE_URL": "https://sqs/refresh-dlq",
    "REVOKE_DEAD_LETTER_QUEUE_URL": "https://sqs/revoke-dlq",
    "DEVICE_SCOPE": "crm",
    "DEVICE_QUEUE_URL": "https://sqs/device",
    "DEVICE_KEY_ID": "arn:aws:kms:us-east-1:1:key/device",
}
EVERY_SECTION = tuple(SECTIONS)


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
        Settings.from_env(env, sections=EVERY_SECTION)


@pytest.mark.parametrize("name", sorted(BASE))
def test_an_empty_required_variable_is_named(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({**BASE, name: "  "}, sections=EVERY_SECTION)


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
        Settings.from_env({**BASE, name: value}, sections=EVERY_SECTION)


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(BASE)
    with pytest.raises(AttributeError):
        settings.table_name = "other"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        settings.section("core").table_name = "other"


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
        Settings.from_env({**BASE, name: value}, sections=EVERY_SECTION)


# -- sections: each function parses only what it uses ---------------------------------------------


def test_a_section_is_parsed_when_first_read_and_names_its_missing_variable() -> None:
    # The webhook's variables are absent: everything else still reads, and the webhook's value
    # fails naming its variable only when something reads it.
    env = {k: v for k, v in BASE.items() if k != "WEBHOOK_SECRET_ARN"}
    settings = Settings.from_env(env)
    assert settings.table_name == "t" and settings.refresh_queue_url == "https://sqs/refresh"
    with pytest.raises(ConfigurationError, match="WEBHOOK_SECRET_ARN"):
        _ = settings.webhook_secret_arn
    with pytest.raises(ConfigurationError, match="WEBHOOK_SECRET_ARN"):
        Settings.for_function("UninstallWebhookFunction", env)


def test_each_function_parses_with_exactly_its_sections_variables() -> None:
    for logical_id in FUNCTION_SECTIONS:
        own = {name: value for name, value in BASE.items() if name in function_variables(logical_id)}
        settings = Settings.for_function(logical_id, own)  # no other section's variable needed
        assert settings.table_name == "t"


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_a_section_reads_only_its_own_variables_and_gives_its_declared_values(name: str) -> None:
    read: list[str] = []

    class Recording(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            read.append(key)
            return super().get(key, default)

    values = SECTIONS[name].parse(Recording(BASE))
    assert set(read) - {"AWS_REGION", "AWS_DEFAULT_REGION"} <= set(SECTIONS[name].variables)
    assert isinstance(values, SECTIONS[name].values)
    settings = Settings.from_env(BASE)
    assert {field: getattr(settings, field) for field in SECTIONS[name].fields} == vars(values)


def test_every_variable_is_in_exactly_one_section() -> None:
    names = [variable for section in SECTIONS.values() for variable in section.variables]
    assert len(names) == len(set(names)) == len(ENVIRONMENT)
    # and each value is a field of exactly one section (Settings reads it by its name alone)
    values = [value for section in SECTIONS.values() for value in section.fields]
    assert len(values) == len(set(values))


def test_an_apps_own_lambda_gets_a_token_with_only_the_token_sections(
    services: Services, aws: LocalResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an installation, and a Lambda of the app's own whose environment has only what
    # get_access_token reads (no queue, no webhook secret, no page settings)
    store_installation(services, "DEMO1")
    env = aws.every_function_environment()
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    for name in variables_of(ACCESS_TOKEN_SECTIONS):
        monkeypatch.setenv(name, env[name])
    assert "REFRESH_QUEUE_URL" not in variables_of(ACCESS_TOKEN_SECTIONS)
    assert "WEBHOOK_SECRET_ARN" not in variables_of(ACCESS_TOKEN_SECTIONS)
    ucoauth.reset()
    # When it asks for a token / Then it gets the stored one
    token = get_access_token("DEMO1", cache_seconds=0)
    assert (token.merchant_id, token.access_token) == ("DEMO1", "access-DEMO1")
