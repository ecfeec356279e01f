"""/admin/*: what operators see and do, at the handler (moto in process, a fake UltraCart)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest

from devstack.resources import LocalResources
from tests.support.fake_ultracart import FakeUltraCart, transient
from tests.support.installs import install, store_installation
from tests.support.lambdas import invoke, load_event, sqs_event
from tests.support.observer import published_events
from ucoauth.adapters.installations.model import Recovery
from ucoauth.adapters.services import Services
from ucoauth.usecases import admin

FN = "AdminApiFunction"
SECRET_FIELDS = {"tokens", "recovery", "lease_owner", "lease_expires_at", "access_token", "refresh_token"}


@pytest.fixture
def admin_services(services: Services, aws: LocalResources) -> Services:
    # The admin function's own environment adds the dead-letter queues.
    environment = aws.function_environment(FN)
    services.settings = services.settings.replace(
        refresh_dead_letter_queue_url=environment["REFRESH_DEAD_LETTER_QUEUE_URL"],
        revoke_dead_letter_queue_url=environment["REVOKE_DEAD_LETTER_QUEUE_URL"],
    )
    return services


def call(
    event_name: str, *, path: str | None = None, query: dict[str, str] | None = None, **params: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    event = load_event(event_name)
    if params:
        event["pathParameters"] = params
        if "merchant_id" in params and path is None:
            path = event["rawPath"].replace("/DEMO1", "/" + params["merchant_id"])
    if path is not None:
        event["rawPath"] = path
        event["requestContext"]["http"]["path"] = path
    if query is not None:
        event["queryStringParameters"] = query or None
        event["rawQueryString"] = urlencode(query)
    response = invoke(FN, event)
    body = json.loads(response["body"])
    assert response["headers"]["Cache-Control"] == "no-store"
    assert not SECRET_FIELDS & set(body), body
    return response["statusCode"], body, response["headers"]


def test_an_installation_is_listed_and_shown_without_any_secret(
    admin_services: Services, fake_uc: FakeUltraCart
) -> None:
    install(admin_services, fake_uc)
    status, body, _ = call("admin-installations-list.json")
    assert status == 200 and body["next_cursor"] is None
    [item] = body["items"]
    assert item["merchant_id"] == "DEMO1" and item["status"] == "active" and item["generation"] == 1
    assert set(item) == {
        "merchant_id",
        "status",
        "generation",
        "installed_at",
        "access_expires_at",
        "next_refresh_at",
        "last_refreshed_at",
        "last_error",
        "consecutive_failures",
        "revoke_confirmed",
        "pending_event",
        "uninstalled_at",
    }
    assert item["installed_at"].endswith("Z") and item["access_expires_at"].endswith("Z")
    status, shown, _ = call("admin-installations-show.json")
    # Installed without an install session: linked to none of the app's accounts.
    unlinked: dict[str, Any] = {"app_account_id": None, "metadata": {}, "install_session_id": None}
    assert status == 200 and shown == {**item, "has_recovery_record": False, **unlinked}
    # A record is kept in its generation's own attribute: the show still says so (never its contents).
    kept = Recovery(b"kept", 1, 1, expires_in=None, token_type="bearer", scope="")
    admin_services.installations.keep_recovery("DEMO1", kept, now=admin_services.now())
    status, shown, _ = call("admin-installations-show.json")
    assert status == 200 and shown["has_recovery_record"] is True
    text = json.dumps(shown)
    assert not any(token in text for token in [*fake_uc.access_owner, *fake_uc.live_refresh])


def test_pages_follow_the_cursor_one_status_after_the_other(
    admin_services: Services, fake_uc: FakeUltraCart
) -> None:
    for n in range(5):
        install(admin_services, fake_uc, f"M{n}")
    m3 = admin_services.installations.get("M3")
    assert m3 is not None
    admin_services.installations.mark_reauthorization_required(
        "M3", expected_version=m3.version, now=admin_services.now()
    )
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        status, body, _ = call("admin-installations-list.json", query=query)
        assert status == 200 and len(body["items"]) <= 2
        seen += [(i["status"], i["merchant_id"]) for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [
        ("active", "M0"),
        ("active", "M1"),
        ("active", "M2"),
        ("active", "M4"),
        ("reauthorization_required", "M3"),
    ]
    status, body, _ = call("admin-installations-list.json", query={"status": "reauthorization_required"})
    assert [i["merchant_id"] for i in body["items"]] == ["M3"]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"status": "deleted"}, "invalid_status"),
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "101"}, "invalid_limit"),
        ({"limit": "five"}, "invalid_limit"),
        ({"limit": "-1"}, "invalid_limit"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"cursor": admin.encode_cursor("active", {"pk": {"S": "x"}})}, "invalid_cursor"),
        ({"status": "active", "cursor": admin.encode_cursor("uninstalled", None)}, "invalid_cursor"),
        ({"sort": "merchant_id"}, "unknown_parameter"),
    ],
)
def test_bad_list_parameters_are_400(admin_services: Services, query: dict[str, str], error: str) -> None:
    status, body, _ = call("admin-installations-list.json", query=query)
    assert (status, body) == (400, {"error": error})


def test_unknown_merchants_bad_ids_unknown_routes_and_parameters(admin_services: Services) -> None:
    assert call("admin-installations-show.json", merchant_id="NOPE")[:2] == (404, {"error": "not_installed"})
    assert call("admin-installations-show.json", merchant_id="bad id<>")[:2] == (
        400,
        {"error": "invalid_merchant_id"},
    )
    assert call("admin-installations-refresh.json", merchant_id="NOPE")[:2] == (
        404,
        {"error": "not_installed"},
    )
    assert call("admin-installations-uninstall.json", merchant_id="NOPE")[:2] == (
        404,
        {"error": "not_installed"},
    )
    assert call("admin-stats.json", query={"x": "1"})[:2] == (400, {"error": "unknown_parameter"})
    assert call("admin-stats.json", path="/admin/nothing-here")[:2] == (404, {"error": "not_found"})
    assert call("admin-dead-letters-redrive.json", path="/admin/dead-letters/other/redrive", queue="other")[
        :2
    ] == (404, {"error": "not_found"})


def test_refresh_now_rotates_a_token_that_is_not_due_and_says_who_asked(
    admin_services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    install(admin_services, fake_uc)
    published_events(aws)
    before = admin_services.installations.get("DEMO1")
    status, body, _ = call("admin-installations-refresh.json")
    assert (status, body) == (200, {"merchant_id": "DEMO1", "result": "refreshed"})
    after = admin_services.installations.get("DEMO1")
    assert before is not None and after is not None
    assert after.version > before.version and after.lease_owner is None
    assert fake_uc.calls.count("refresh") == 1
    [event] = published_events(aws)
    assert event["detail-type"] == "Operator Action"
    assert event["detail"] == {
        "action": "refresh",
        "caller": "arn:aws:sts::123456789012:assumed-role/operator/alice",
        "merchant_id": "DEMO1",
        "result": "refreshed",
    }


def test_refresh_now_maps_ultracart_and_the_lease_to_statuses(
    admin_services: Services, fake_uc: FakeUltraCart
) -> None:
    install(admin_services, fake_uc)
    fake_uc.fail_next = [transient(503)]
    status, body, headers = call("admin-installations-refresh.json")
    assert (status, body) == (503, {"error": "upstream_unavailable"}) and int(headers["Retry-After"]) > 0
    lease = admin_services.installations.lease(
        "DEMO1", owner="someone", now=admin_services.now(), until=admin_services.now() + 60
    )
    status, body, headers = call("admin-installations-refresh.json")
    assert (status, body, headers["Retry-After"]) == (503, {"error": "lease_busy"}, "5")
    lease.__exit__(None, None, None)
    fake_uc.live_refresh.clear()  # UltraCart no longer knows the grant
    status, body, _ = call("admin-installations-refresh.json")
    assert (status, body) == (409, {"error": "reauthorization_required"})
    assert call("admin-installations-refresh.json")[:2] == (409, {"error": "reauthorization_required"})


def test_refresh_now_stays_within_the_ultracart_budget(
    admin_services: Services, fake_uc: FakeUltraCart
) -> None:
    install(admin_services, fake_uc)
    admin_services.budget.hourly = 2  # the install used 1: the background share (1) is spent
    status, body, headers = call("admin-installations-refresh.json")
    assert (status, body) == (503, {"error": "budget_exhausted"}) and int(headers["Retry-After"]) >= 1
    assert fake_uc.calls.count("refresh") == 0


def test_uninstall_goes_the_webhook_way_and_ends_revoked(
    admin_services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    install(admin_services, fake_uc)
    published_events(aws)
    status, body, _ = call("admin-installations-uninstall.json")
    assert (status, body) == (202, {"merchant_id": "DEMO1", "result": "queued"})
    sqs = boto3.client("sqs", region_name=aws.region)
    [message] = sqs.receive_message(QueueUrl=aws.revoke_queue_url, MaxNumberOfMessages=10)["Messages"]
    queued = json.loads(message["Body"])
    assert queued["source"] == "admin" and queued["detail-type"] == "App Uninstalled"
    assert queued["detail"] == {"merchant_id": "DEMO1"}
    assert invoke("RevokeWorkerFunction", sqs_event(queued)) == {"batchItemFailures": []}
    status, shown, _ = call("admin-installations-show.json")
    assert status == 200 and shown["status"] == "uninstalled" and shown["revoke_confirmed"] is True
    assert fake_uc.live_grants("DEMO1") == []
    kinds = [(e["detail-type"], e["detail"].get("action")) for e in published_events(aws)]
    assert ("Operator Action", "uninstall") in kinds and ("Installation Removed", None) in kinds
    # An uninstalled merchant cannot be uninstalled or refreshed again.
    assert call("admin-installations-uninstall.json")[:2] == (404, {"error": "not_installed"})
    assert call("admin-installations-refresh.json")[:2] == (404, {"error": "not_installed"})


def test_redrive_moves_every_dead_letter_back(admin_services: Services, aws: LocalResources) -> None:
    sqs = boto3.client("sqs", region_name=aws.region)
    dlq = admin_services.settings.refresh_dead_letter_queue_url
    for n in range(13):
        sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"merchant_id": f"M{n}"}))
    status, body, _ = call("admin-dead-letters-redrive.json")
    assert (status, body) == (202, {"queue": "refresh", "moved": 13})
    moved = []
    while batch := sqs.receive_message(QueueUrl=aws.refresh_queue_url, MaxNumberOfMessages=10).get(
        "Messages"
    ):
        moved += [json.loads(m["Body"])["merchant_id"] for m in batch]
        for m in batch:
            sqs.delete_message(QueueUrl=aws.refresh_queue_url, ReceiptHandle=m["ReceiptHandle"])
    assert sorted(moved) == sorted(f"M{n}" for n in range(13))
    assert sqs.receive_message(QueueUrl=dlq).get("Messages") is None
    status, body, _ = call(
        "admin-dead-letters-redrive.json", path="/admin/dead-letters/revoke/redrive", queue="revoke"
    )
    assert (status, body) == (202, {"queue": "revoke", "moved": 0})


def test_stats_count_statuses_due_budget_and_queues(
    admin_services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    fake_uc.expires_in = 1800  # due within the hour
    install(admin_services, fake_uc, "M1")
    fake_uc.expires_in = 86_400
    install(admin_services, fake_uc, "M2")
    sqs = boto3.client("sqs", region_name=aws.region)
    sqs.send_message(QueueUrl=admin_services.settings.revoke_dead_letter_queue_url, MessageBody="{}")
    status, body, _ = call("admin-stats.json")
    assert status == 200
    assert body["installations"] == {
        "active": 2,
        "reauthorization_required": 0,
        "uninstalling": 0,
        "uninstalled": 0,
    }
    assert body["due_within_hour"] == 1
    hour = body["ultracart_budget"]["hour"]
    assert hour["used"] == 2 and hour["limit"] == 900 and hour["background_limit"] == 810
    assert body["ultracart_budget"]["scope"] == "application"
    assert body["dead_letters"] == {"refresh": 0, "revoke": 1}
    assert set(body["queues"]) == {"refresh", "revoke"}
    assert body["queues"]["refresh"]["depth"] == 0


def test_listing_50_reads_at_most_60_items(admin_services: Services) -> None:
    for n in range(60):
        store_installation(admin_services, f"M{n:03d}")
    counted: dict[str, int] = {}
    page = admin.list_installations(admin_services, status="active", limit=50, cursor=None, stats=counted)
    assert len(page.items) == 50 and page.next_cursor is not None
    assert counted["read"] <= 60 and counted["queries"] == 1


def test_an_item_shows_the_last_refresh_failure_until_a_token_is_stored(
    admin_services: Services, fake_uc: FakeUltraCart
) -> None:
    from tests.support.deadlines import a_deadline
    from ucoauth.base.errors import TransientUltraCartError
    from ucoauth.usecases.refresh import refresh_now

    install(admin_services, fake_uc)
    fake_uc.fail_next.extend([transient(503), transient(502)])
    for status in (503, 502):
        with pytest.raises(TransientUltraCartError) as raised:
            refresh_now(admin_services, "DEMO1", deadline=a_deadline(admin_services))
        assert raised.value.status == status
    status, shown, _ = call("admin-installations-show.json")
    assert status == 200 and shown["consecutive_failures"] == 2
    assert shown["last_error"]["code"] == "http_502" and shown["last_error"]["at"].endswith("Z")
    refresh_now(admin_services, "DEMO1", deadline=a_deadline(admin_services))
    status, shown, _ = call("admin-installations-show.json")
    assert shown["consecutive_failures"] == 0 and shown["last_error"] is None
