"""Two stages of template.yaml side by side in one account and region (moto's server).

What a real account shows when dev and prod share it: no physical name collides, one stage's
uninstall event reaches only that stage's revoke queue, the app's own published events reach
neither, another account's event matches nothing, and each stage's alarms read only its own
metrics.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.events.models import EventPattern

from devstack.resources import EVENT_SOURCE, LocalResources, create_resources

if TYPE_CHECKING:
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

pytestmark = pytest.mark.integration

REGION = "us-east-1"
OTHER_ACCOUNT = "111122223333"


@pytest.fixture
def fresh_moto(aws_env: None, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def two_stages(fresh_moto: str) -> Callable[..., tuple[LocalResources, LocalResources]]:
    def create(a: Mapping[str, str], b: Mapping[str, str]) -> tuple[LocalResources, LocalResources]:
        session = boto3.Session(region_name=REGION)
        return (
            create_resources(session, endpoint_url=fresh_moto, stage="a", parameters=a),
            create_resources(session, endpoint_url=fresh_moto, stage="b", parameters=b),
        )

    return create


def _uninstall(source: str, bus: str, merchant_id: str) -> PutEventsRequestEntryTypeDef:
    return {
        "Source": source,
        "DetailType": "App Uninstalled",
        "Detail": json.dumps({"merchant_id": merchant_id}),
        "EventBusName": bus,
    }


def _merchants_in(queue_url: str) -> list[str]:
    sqs = boto3.client("sqs", region_name=REGION)
    found: list[str] = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            found.append(json.loads(message["Body"])["detail"]["merchant_id"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return sorted(found)


def _physical_names(stage: LocalResources) -> set[str]:
    names = set(stage.refs.values()) | set(stage.attributes.values())
    names.discard("default")  # the account's default bus is shared by design, not created
    return names


def _alarms_of(stage: LocalResources) -> list[dict[str, Any]]:
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    alarms: list[dict[str, Any]] = cloudwatch.describe_alarms(AlarmNamePrefix=f"{stage.stack_name}-")[
        "MetricAlarms"
    ]
    return alarms


def test_two_stages_on_the_default_bus_keep_their_names_events_and_alarms_apart(
    two_stages: Callable[..., tuple[LocalResources, LocalResources]],
) -> None:
    # Given two stages in one account, on the default bus, each listening to its app's source
    a, b = two_stages(
        {"UninstallEventSources": "com.example.app-a"}, {"UninstallEventSources": "com.example.app-b"}
    )
    assert a.event_bus_name == b.event_bus_name == "default"

    # Then nothing either created has the other's name
    assert _physical_names(a) & _physical_names(b) == set()

    # When each app uninstalls a merchant, and the stack itself publishes events
    boto3.client("events", region_name=REGION).put_events(
        Entries=[
            _uninstall("com.example.app-a", "default", "ONLY-A"),
            _uninstall("com.example.app-b", "default", "ONLY-B"),
            _uninstall(EVENT_SOURCE, "default", "OWN-SOURCE"),
            _uninstall("com.example.someone-else", "default", "NOBODY"),
        ]
    )

    # Then each stage revokes only its own app's merchant
    assert _merchants_in(a.revoke_queue_url) == ["ONLY-A"]
    assert _merchants_in(b.revoke_queue_url) == ["ONLY-B"]


def test_a_bus_per_stage_isolates_stages_that_share_a_source(
    two_stages: Callable[..., tuple[LocalResources, LocalResources]],
) -> None:
    # Given two stages with a bus of their own and the same (default) uninstall source
    a, b = two_stages({"CreateEventBus": "true"}, {"CreateEventBus": "true"})
    assert a.event_bus_name == a.stack_name and b.event_bus_name == b.stack_name
    assert _physical_names(a) & _physical_names(b) == set()
    source = a.parameters["UninstallEventSources"]
    assert source == b.parameters["UninstallEventSources"]

    # When the app uninstalls a merchant on stage A's bus
    boto3.client("events", region_name=REGION).put_events(
        Entries=[
            _uninstall(source, a.event_bus_name, "ON-A"),
            _uninstall(EVENT_SOURCE, a.event_bus_name, "OWN"),
        ]
    )

    # Then only stage A revokes it; the functions publish to their own stage's bus
    assert _merchants_in(a.revoke_queue_url) == ["ON-A"]
    assert _merchants_in(b.revoke_queue_url) == []
    assert a.function_environment("OAuthBrowserFunction")["EVENT_BUS_NAME"] == a.stack_name


def test_an_event_from_another_account_matches_neither_stage(
    two_stages: Callable[..., tuple[LocalResources, LocalResources]],
) -> None:
    # moto's server delivers only events of its own account, and does not implement
    # TestEventPattern: the rule's pattern, as stored, is matched with moto's own matcher.
    a, b = two_stages({}, {})
    events = boto3.client("events", region_name=REGION)
    for stage in (a, b):
        (rule,) = [
            r
            for r in events.list_rules(NamePrefix=stage.stack_name)["Rules"]
            if "App Uninstalled" in r.get("EventPattern", "")
        ]
        pattern = EventPattern.load(rule["EventPattern"])
        source = stage.parameters["UninstallEventSources"]

        def event(account: str, source: str = source) -> Any:
            return {
                "id": "1",
                "version": "0",
                "detail-type": "App Uninstalled",
                "source": source,
                "account": account,
                "time": "2026-11-30T10:00:00Z",
                "region": REGION,
                "resources": [],
                "detail": {"merchant_id": "DEMO1"},
            }

        assert pattern.matches_event(event(stage.account_id))
        assert not pattern.matches_event(event(OTHER_ACCOUNT))
        assert not pattern.matches_event(event(stage.account_id, source=EVENT_SOURCE))


def test_each_stages_alarms_read_only_its_own_metrics(
    two_stages: Callable[..., tuple[LocalResources, LocalResources]],
) -> None:
    a, b = two_stages({}, {})
    for stage, other in ((a, b), (b, a)):
        service = stage.function_environment("RefreshWorkerFunction")["POWERTOOLS_SERVICE_NAME"]
        assert service == stage.stack_name != other.stack_name
        alarms = _alarms_of(stage)
        names = {alarm["AlarmName"] for alarm in alarms}
        assert not names & {alarm["AlarmName"] for alarm in _alarms_of(other)}
        custom = [alarm for alarm in alarms if alarm["Namespace"] == "UltraCartOAuth"]
        assert custom
        assert {d["Value"] for alarm in custom for d in alarm["Dimensions"] if d["Name"] == "service"} == {
            service
        }
        # Every AWS metric an alarm reads names one of this stage's own resources.
        own = _physical_names(stage)
        for alarm in alarms:
            if alarm["Namespace"] != "UltraCartOAuth":
                assert {d["Value"] for d in alarm["Dimensions"]} <= own, alarm["AlarmName"]
