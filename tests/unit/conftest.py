"""Unit fixtures: the package's Services wired to moto's in-process mock and a fake UltraCart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devstack.resources import LocalResources
from tests.support.fake_ultracart import FakeUltraCart
from ucoauth import aws as uc_aws
from ucoauth.services import Services, set_services
from ucoauth.settings import Settings
from ucoauth.uninstall import reset_webhook_secret_cache


class Clock:
    """A controllable clock (epoch seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_uc() -> FakeUltraCart:
    return FakeUltraCart()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(aws: LocalResources) -> Settings:
    return Settings.from_env(aws.function_environment("RefreshWorkerFunction"))


@pytest.fixture
def services(
    aws: LocalResources, settings: Settings, fake_uc: FakeUltraCart, clock: Clock
) -> Iterator[Services]:
    uc_aws.reset_clients()
    reset_webhook_secret_cache()
    built = Services.from_settings(settings)
    built.ultracart_factory = lambda: fake_uc
    built.clock = clock
    built.sleep = clock.sleep
    set_services(built)
    yield built
    set_services(None)
    uc_aws.reset_clients()


def published_events(resources: LocalResources) -> list[dict[str, Any]]:
    """Everything the code published on EventBridge (read from the local observer queue)."""
    sqs = boto3.client("sqs", region_name=resources.region)
    out: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=resources.events_observer_queue_url, MaxNumberOfMessages=10)
        messages = answer.get("Messages", [])
        if not messages:
            return out
        for message in messages:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(
                QueueUrl=resources.events_observer_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
