"""Fixtures for integration tests: real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devstack.resources import LocalResources
from ucoauth import aws as uc_aws
from ucoauth.crypto import TokenSet
from ucoauth.services import Services, set_services
from ucoauth.settings import Settings
from ucoauth.tokens import token_fields
from ucoauth.ultracart import TokenResponse, set_client
from ucoauth.uninstall import reset_webhook_secret_cache
from ucsandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Sandbox]:
    """One local UltraCart per test session (per xdist worker), on a free port."""
    with Sandbox() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Iterator[Sandbox]:
    """The started sandbox, fresh for each test: default settings, no faults, tokens or log."""
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.reset()


# -- the package wired to moto's server and the sandbox, over real HTTP --------------------------


@pytest.fixture
def live_env(aws_server: LocalResources, sandbox: Sandbox) -> dict[str, str]:
    """The functions' environment from template.yaml, pointed at moto's server and the sandbox."""
    env = aws_server.function_environment(
        "RefreshWorkerFunction",
        overrides={
            "ULTRACART_BASE_URL": sandbox.base_url,
            "ULTRACART_CLIENT_ID": sandbox.client_id,
            "OAUTH_REDIRECT_URI": "http://localhost:3000/oauth/callback",
            "ULTRACART_CONNECT_TIMEOUT": "1",
            "ULTRACART_READ_TIMEOUT": "2",
        },
    )
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    return env


@pytest.fixture
def live(live_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    """Services as a Lambda would build them, talking to moto's server and the sandbox."""
    for name, value in live_env.items():
        monkeypatch.setenv(name, value)
    uc_aws.reset_clients()
    set_client(None)
    reset_webhook_secret_cache()
    services = Services.from_settings(Settings.from_env(live_env))
    set_services(services)
    yield services
    set_services(None)
    set_client(None)
    uc_aws.reset_clients()


def seed_installation(
    services: Services, sandbox: Sandbox, merchant_id: str, *, expires_in: int = 60
) -> tuple[str, str]:
    """An installation whose tokens the sandbox really issued; returns (access, refresh)."""
    pair = sandbox.issue_tokens(merchant_id, expires_in=expires_in)
    answer = TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=expires_in,
        merchant_id=merchant_id,
    )
    fields = token_fields(services, merchant_id, TokenSet(pair.access_token, pair.refresh_token), answer)
    services.installations.save_installation(merchant_id, fields, now=services.now())
    return pair.access_token, pair.refresh_token


def stored_tokens(services: Services, merchant_id: str) -> TokenSet:
    installation = services.installations.get(merchant_id)
    assert installation is not None
    assert installation.tokens_ciphertext is not None
    return services.cipher.decrypt(merchant_id, installation.tokens_ciphertext)


def observed_events(resources: LocalResources) -> list[dict[str, Any]]:
    """What the code published on EventBridge, via the local observer queue."""
    sqs = boto3.client("sqs", region_name=resources.region, endpoint_url=resources.endpoint_url)
    out: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=resources.events_observer_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return out
        for message in messages:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(
                QueueUrl=resources.events_observer_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
