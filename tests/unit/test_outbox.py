"""Events EventBridge refused are parked on the item and relayed by the refresh worker."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.resources import LocalResources
from tests.support.clock import Clock
from tests.support.deadlines import a_deadline
from tests.support.fake_ultracart import FakeUltraCart
from tests.support.installs import install
from tests.support.observer import published_events
from ucoauth.adapters.events import EventPublisher
from ucoauth.adapters.services import Services
from ucoauth.base.errors import ReauthorizationRequiredError
from ucoauth.usecases.refresh import plan, refresh_due
from ucoauth.usecases.tokens import access_token
from ucoauth.usecases.uninstall import process_uninstall


class FlakyPublisher(EventPublisher):
    """The real publisher, refusing the first ``failures`` events (as a throttled EventBridge)."""

    def __init__(self, real: EventPublisher, failures: int) -> None:
        super().__init__(real.bus_name)
        self.failures = failures

    def publish(self, detail_type: str, detail: dict[str, Any]) -> bool:
        if self.failures > 0:
            self.failures -= 1
            return False
        return super().publish(detail_type, detail)


def relay_due(services: Services) -> list[str]:
    return [refresh_due(services, m, deadline=a_deadline(services)) for m in list(plan(services))]


def test_a_refused_reauthorization_event_is_relayed_by_the_planner_and_worker(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc)
    published_events(aws)
    fake_uc.live_refresh.clear()
    services.events = FlakyPublisher(services.events, failures=1)
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "reauthorization"
    assert published_events(aws) == []
    parked = services.installations.get("DEMO1")
    assert parked is not None and parked.pending_event is not None
    assert relay_due(services) == ["inactive"]
    events = published_events(aws)
    assert [e["detail-type"] for e in events] == ["Reauthorization Required"]
    cleared = services.installations.get("DEMO1")
    assert cleared is not None
    assert cleared.pending_event is None and cleared.due_at is None and cleared.lease_owner is None
    assert list(plan(services)) == []  # nothing left to relay


def test_a_refused_removal_event_is_relayed_from_the_tombstone(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, clock: Clock
) -> None:
    install(services, fake_uc)
    published_events(aws)
    services.events = FlakyPublisher(services.events, failures=1)
    message = {
        "id": "x",
        "source": "webhook",
        "detail-type": "App Uninstalled",
        "time": "2100-01-01T00:00:00Z",
        "detail": {"merchant_id": "DEMO1"},
    }
    assert process_uninstall(services, message, deadline=a_deadline(services)) == "removed"
    assert published_events(aws) == []
    assert relay_due(services) == ["inactive"]
    assert [e["detail-type"] for e in published_events(aws)] == ["Installation Removed"]
    tombstone = services.installations.get("DEMO1")
    assert tombstone is not None and tombstone.status == "uninstalled" and tombstone.pending_event is None


def test_a_refused_install_event_goes_out_with_the_next_refresh(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    fake_uc.expires_in = 60
    services.events = FlakyPublisher(services.events, failures=1)
    install(services, fake_uc)
    assert published_events(aws) == []
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "refreshed"
    assert [e["detail-type"] for e in published_events(aws)] == ["Installation Completed"]
    assert services.installations.get("DEMO1").pending_event is None  # type: ignore[union-attr]


def test_an_undecryptable_row_is_marked_at_once_by_the_token_api(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    install(services, fake_uc, "DEMO1")
    install(services, fake_uc, "OTHER")
    published_events(aws)
    import boto3

    ddb = boto3.client("dynamodb")
    other = ddb.get_item(
        TableName=aws.table_name, Key={"pk": {"S": "MERCHANT#OTHER"}, "sk": {"S": "INSTALLATION"}}
    )
    ddb.update_item(  # a ciphertext copied onto another merchant's row
        TableName=aws.table_name,
        Key={"pk": {"S": "MERCHANT#DEMO1"}, "sk": {"S": "INSTALLATION"}},
        UpdateExpression="SET tokens = :t",
        ExpressionAttributeValues={":t": other["Item"]["tokens"]},
    )
    with pytest.raises(ReauthorizationRequiredError):
        access_token(services, "DEMO1", deadline=a_deadline(services, 29))
    assert services.installations.get("DEMO1").status == "reauthorization_required"  # type: ignore[union-attr]
    assert [e["detail"]["reason"] for e in published_events(aws)] == ["undecryptable"]
