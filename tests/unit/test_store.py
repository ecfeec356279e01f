"""InstallationStore, StateStore, WebhookIdStore and PaceCounter against moto (template's table)."""

from __future__ import annotations

import boto3
import pytest

from devstack.resources import LocalResources
from ucoauth.adapters.browser_items import Receipt
from ucoauth.adapters.installations.model import ACTIVE, RECOVERY_GRACE, Recovery, TokenFields
from ucoauth.adapters.services import Services
from ucoauth.base.errors import (
    LeaseBusyError,
    NotDueError,
    NotInstalledError,
    StaleWriteError,
    StateExpiredError,
    StateForeignBrowserError,
    StateInvalidError,
    StateUnknownError,
)

NOW = 1_800_000_000


def fields(due_at: int | None = NOW + 3000, blob: bytes = b"ciphertext") -> TokenFields:
    return TokenFields(
        ciphertext=blob,
        token_type="bearer",
        scope="order_read",
        access_expires_at=None if due_at is None else NOW + 3600,
        token_lifetime=None if due_at is None else 3600,
        due_at=due_at,
    )


def test_install_then_reinstall_bumps_generation_and_version(services: Services) -> None:
    store = services.installations
    first = store.save_installation("DEMO1", fields(), now=NOW)
    assert (first.generation, first.version, first.status) == (1, 1, ACTIVE)
    again = store.save_installation("DEMO1", fields(), now=NOW + 10)
    assert (again.generation, again.version, again.installed_at) == (2, 2, NOW + 10)
    assert store.get("DEMO1") == again


def test_a_reinstall_hands_back_exactly_the_tokens_it_replaced(services: Services) -> None:
    store = services.installations
    first, replaced = store.replace_installation("DEMO1", fields(blob=b"grant-1"), now=NOW)
    assert replaced is None
    store.mark_reauthorization_required("DEMO1", expected_version=first.version, now=NOW + 5)
    again, replaced = store.replace_installation("DEMO1", fields(blob=b"grant-2"), now=NOW + 10)
    assert replaced is not None
    assert (replaced.ciphertext, replaced.generation) == (b"grant-1", 1)
    assert replaced.status == "reauthorization_required"
    # What the write answers is what it stored, though it asked DynamoDB for the item before it.
    assert store.get("DEMO1") == again
    assert (again.status, again.tokens_ciphertext, again.generation) == (ACTIVE, b"grant-2", 2)


def test_a_retried_install_write_counts_one_generation(services: Services) -> None:
    store = services.installations
    first = store.save_installation("DEMO1", fields(), now=NOW, install_id="flow-a")
    # The same request again (its first answer was lost to a timeout): no second generation.
    again = store.save_installation("DEMO1", fields(), now=NOW + 1, install_id="flow-a")
    assert (first.generation, again.generation, again.version) == (1, 1, 1)
    # Another install flow is a reinstall.
    other = store.save_installation("DEMO1", fields(), now=NOW + 2, install_id="flow-b")
    assert (other.generation, other.version) == (2, 2)


def record(generation: int, issued_at: int, blob: bytes) -> Recovery:
    return Recovery(blob, generation, issued_at, expires_in=3600, token_type="bearer", scope="order_read")


def test_recovery_records_of_two_generations_sit_side_by_side(services: Services) -> None:
    store = services.installations
    store.save_installation("DEMO1", fields(), now=NOW)
    store.save_installation("DEMO1", fields(), now=NOW + 1)  # generation 2
    store.keep_recovery("DEMO1", record(1, NOW + 5, b"gen-1"), now=NOW + 5)
    store.keep_recovery("DEMO1", record(2, NOW + 6, b"gen-2"), now=NOW + 6)
    kept = store.get("DEMO1").recoveries  # type: ignore[union-attr]
    assert [(r.generation, r.ciphertext) for r in kept] == [(1, b"gen-1"), (2, b"gen-2")]
    # Within a generation an older record never replaces a newer one; a newer one does.
    store.keep_recovery("DEMO1", record(2, NOW + 2, b"gen-2-older"), now=NOW + 7)
    assert store.get("DEMO1").recovery_of(2).ciphertext == b"gen-2"  # type: ignore[union-attr]
    store.keep_recovery("DEMO1", record(2, NOW + 8, b"gen-2-newer"), now=NOW + 8)
    assert store.get("DEMO1").recovery_of(2).ciphertext == b"gen-2-newer"  # type: ignore[union-attr]
    # Clearing one record leaves the other, and only while it holds the tokens it was read with.
    assert not store.clear_recovery("DEMO1", record(2, NOW + 6, b"gen-2"), active=True)
    assert store.clear_recovery("DEMO1", record(1, NOW + 5, b"gen-1"), active=True)
    kept = store.get("DEMO1").recoveries  # type: ignore[union-attr]
    assert [(r.generation, r.ciphertext) for r in kept] == [(2, b"gen-2-newer")]


def test_a_reinstall_keeps_the_replaced_tokens_on_the_item_by_its_own_write(services: Services) -> None:
    store = services.installations
    store.replace_installation("DEMO1", fields(blob=b"grant-1"), now=NOW)
    again, replaced = store.replace_installation("DEMO1", fields(blob=b"grant-2"), now=NOW + 10)
    assert replaced is not None and replaced.generation == 1
    kept = store.get("DEMO1").recovery_of(1)  # type: ignore[union-attr]
    assert kept is not None and (kept.ciphertext, kept.issued_at) == (b"grant-1", NOW)
    assert again.recovery_of(1) == kept  # the write's answer says so too


def test_the_dead_holder_evidence_survives_releases_and_a_hold_lets_queued_messages_through(
    services: Services,
) -> None:
    store = services.installations
    store.save_installation("DEMO1", fields(), now=NOW)
    store.lease("DEMO1", owner="a", now=NOW, until=NOW + 30)  # "a" dies with it
    taken = store.lease("DEMO1", owner="b", now=NOW + 31, until=NOW + 61)
    assert taken.installation.awaiting_recovery == NOW + 30 + RECOVERY_GRACE
    store.release_lease("DEMO1", owner="b")
    with store.lease("DEMO1", owner="c", now=NOW + 62, until=NOW + 92) as lease:
        assert lease.installation.awaiting_recovery == NOW + 30 + RECOVERY_GRACE  # not wiped
        lease.hold_until(NOW + 500)
    with pytest.raises(LeaseBusyError) as busy:
        store.lease("DEMO1", owner="d", now=NOW + 100, until=NOW + 130)
    assert busy.value.until == NOW + 500
    through = store.lease("DEMO1", owner="e", now=NOW + 100, until=NOW + 130, through_hold=True)
    assert through.installation.lease_owner == "e"
    # A token write settles the evidence.
    store.write_refreshed_tokens(
        "DEMO1", expected_version=through.installation.version, tokens=fields(), now=NOW + 101
    )
    assert store.get("DEMO1").awaiting_recovery is None  # type: ignore[union-attr]


def test_the_lease_is_exclusive_until_it_expires(services: Services) -> None:
    store = services.installations
    store.save_installation("DEMO1", fields(), now=NOW)
    held = store.lease("DEMO1", owner="a", now=NOW, until=NOW + 30)
    assert held.installation.lease_owner == "a" and held.installation.previous_lease_until is None
    with pytest.raises(LeaseBusyError):
        store.lease("DEMO1", owner="b", now=NOW + 29, until=NOW + 60)
    store.release_lease("DEMO1", owner="b")  # not the owner: no effect
    assert store.get("DEMO1").lease_owner == "a"  # type: ignore[union-attr]
    # "a" never released it: the next holder learns until when "a" could have written.
    taken = store.lease("DEMO1", owner="b", now=NOW + 31, until=NOW + 61)
    assert taken.installation.lease_owner == "b"
    assert (taken.installation.previous_lease_owner, taken.installation.previous_lease_until) == (
        "a",
        NOW + 30,
    )
    store.release_lease("DEMO1", owner="b")
    assert store.get("DEMO1").lease_owner is None  # type: ignore[union-attr]


def test_the_lease_is_a_scope_released_on_exit_unless_a_write_cleared_it(services: Services) -> None:
    store = services.installations
    store.save_installation("DEMO1", fields(), now=NOW)
    with pytest.raises(RuntimeError), store.lease("DEMO1", owner="a", now=NOW, until=NOW + 30):
        raise RuntimeError("whatever failed inside")
    assert store.get("DEMO1").lease_owner is None  # type: ignore[union-attr]
    with store.lease("DEMO1", owner="a", now=NOW, until=NOW + 30) as lease:
        version = lease.installation.version
        store.write_refreshed_tokens("DEMO1", expected_version=version, tokens=fields(), now=NOW + 1)
        lease.cleared()
    after = store.get("DEMO1")
    assert after is not None and after.lease_owner is None and after.version == version + 1
    # a clean exit leaves nothing behind for the next holder to wonder about
    with store.lease("DEMO1", owner="b", now=NOW + 2, until=NOW + 32) as again:
        assert again.installation.previous_lease_until is None


def test_a_lease_for_a_refresh_is_refused_when_not_due(services: Services) -> None:
    store = services.installations
    store.save_installation("DEMO1", fields(due_at=NOW + 100), now=NOW)
    with pytest.raises(NotDueError):
        store.lease("DEMO1", owner="a", now=NOW, until=NOW + 30, due_before=NOW)
    assert store.get("DEMO1").lease_owner is None  # type: ignore[union-attr]
    with store.lease("DEMO1", owner="a", now=NOW + 100, until=NOW + 130, due_before=NOW + 100) as lease:
        assert lease.installation.lease_owner == "a"


def test_no_lease_for_a_merchant_never_installed(services: Services) -> None:
    with pytest.raises(NotInstalledError):
        services.installations.lease("NOBODY", owner="a", now=NOW, until=NOW + 30)
    assert services.installations.get("NOBODY") is None


def test_a_token_write_on_a_stale_version_is_refused(services: Services) -> None:
    store = services.installations
    installed = store.save_installation("DEMO1", fields(), now=NOW)
    written = store.write_refreshed_tokens(
        "DEMO1", expected_version=installed.version, tokens=fields(blob=b"new"), now=NOW
    )
    assert written.version == installed.version + 1 and written.tokens_ciphertext == b"new"
    with pytest.raises(StaleWriteError):
        store.write_refreshed_tokens(
            "DEMO1", expected_version=installed.version, tokens=fields(blob=b"old"), now=NOW
        )
    assert store.get("DEMO1").tokens_ciphertext == b"new"  # type: ignore[union-attr]


def test_reauthorization_and_uninstall_leave_the_due_index(services: Services, aws: LocalResources) -> None:
    store = services.installations
    a = store.save_installation("A1", fields(due_at=NOW - 1), now=NOW)
    b = store.save_installation("B1", fields(due_at=NOW - 1), now=NOW)
    assert sorted(services.installation_reads.due_merchants(now=NOW)) == ["A1", "B1"]
    assert store.mark_reauthorization_required("A1", expected_version=a.version, now=NOW)
    assert store.mark_uninstalled(
        "B1", expected_version=b.version, reason="webhook", revoke_confirmed=True, now=NOW, ttl=NOW + 99
    )
    assert list(services.installation_reads.due_merchants(now=NOW)) == []
    tombstone = store.get("B1")
    assert tombstone is not None and tombstone.status == "uninstalled" and tombstone.tokens_ciphertext is None
    raw = boto3.client("dynamodb").get_item(
        TableName=aws.table_name, Key={"pk": {"S": "MERCHANT#B1"}, "sk": {"S": "INSTALLATION"}}
    )
    assert "tokens" not in raw["Item"] and raw["Item"]["ttl"]["N"] == str(NOW + 99)


def test_the_planner_reads_only_what_is_due(services: Services) -> None:
    store = services.installations
    for i in range(60):
        store.save_installation(f"M{i}", fields(due_at=NOW - 10 if i % 6 == 0 else NOW + 5000), now=NOW)
    store.save_installation("NOEXPIRY", fields(due_at=None), now=NOW)
    stats: dict[str, int] = {}
    due = sorted(services.installation_reads.due_merchants(now=NOW, stats=stats))
    assert due == sorted(f"M{i}" for i in range(0, 60, 6))
    assert stats["scanned"] == len(due)
    assert stats["queries"] == services.settings.due_shards


def test_a_limited_plan_takes_the_most_overdue_first(services: Services) -> None:
    store = services.installations
    for i in range(12):
        store.save_installation(f"L{i}", fields(due_at=NOW - 100 + i), now=NOW)
    assert services.installation_reads.due_merchants(now=NOW, limit=3) == ["L0", "L1", "L2"]


def test_state_is_consumed_once_by_the_browser_that_started(services: Services) -> None:
    states = services.states
    states.put("s" * 43, browser_nonce="n" * 43, now=NOW, ttl_seconds=600)
    with pytest.raises(StateForeignBrowserError):
        states.consume("s" * 43, browser_nonce="other", now=NOW)
    states.consume("s" * 43, browser_nonce="n" * 43, now=NOW + 5)
    with pytest.raises(StateUnknownError):
        states.consume("s" * 43, browser_nonce="n" * 43, now=NOW + 6)
    with pytest.raises(StateUnknownError):
        states.consume("never-issued", browser_nonce="n" * 43, now=NOW)


def test_an_expired_state_is_refused_even_before_ttl_deletes_it(services: Services) -> None:
    services.states.put("e" * 43, browser_nonce="n" * 43, now=NOW, ttl_seconds=600)
    with pytest.raises(StateExpiredError):
        services.states.consume("e" * 43, browser_nonce="n" * 43, now=NOW + 600)
    # Timed out wins over a foreign cookie: both are refused, and the state is still there.
    with pytest.raises(StateExpiredError):
        services.states.consume("e" * 43, browser_nonce="other", now=NOW + 600)
    assert all(issubclass(e, StateInvalidError) for e in (StateExpiredError, StateUnknownError))


def test_a_receipt_is_stored_hashed_and_read_until_it_expires(
    services: Services, aws: LocalResources
) -> None:
    receipts = services.receipts
    nonce = "r" * 43
    receipts.put(nonce, Receipt("DEMO1", reinstall=True, state_digest="ab" * 32), now=NOW, ttl_seconds=3600)
    assert receipts.get(nonce, now=NOW + 3599) == Receipt("DEMO1", reinstall=True, state_digest="ab" * 32)
    assert receipts.get(nonce, now=NOW + 3600) is None
    assert receipts.get("x" * 43, now=NOW) is None
    items = boto3.client("dynamodb").scan(TableName=aws.table_name)["Items"]
    assert len(items) == 1 and items[0]["pk"]["S"].startswith("RECEIPT#") and nonce not in repr(items)
    assert int(items[0]["ttl"]["N"]) > NOW + 3600


def test_states_are_stored_hashed(services: Services, aws: LocalResources) -> None:
    services.states.put(
        "visible-state-value-123456", browser_nonce="nonce-value-123456", now=NOW, ttl_seconds=600
    )
    items = boto3.client("dynamodb").scan(TableName=aws.table_name)["Items"]
    dump = repr(items)
    assert "visible-state-value-123456" not in dump and "nonce-value-123456" not in dump


def test_a_webhook_id_is_recorded_once(services: Services) -> None:
    ids = services.webhook_ids
    assert not ids.seen("msg_1", now=NOW)
    assert ids.record("msg_1", now=NOW, ttl_seconds=60)
    assert ids.seen("msg_1", now=NOW + 1)
    assert not ids.record("msg_1", now=NOW + 1, ttl_seconds=60)
    assert not ids.seen("msg_1", now=NOW + 61)  # TTL passed: counts as new
    assert ids.record("msg_1", now=NOW + 61, ttl_seconds=60)


def test_the_pace_allows_limit_calls_per_window(services: Services) -> None:
    pace = services.pace
    window = pace.window
    start = (NOW // window) * window
    results = [pace.try_take(start + 0.5) for _ in range(pace.limit + 2)]
    assert results[: pace.limit] == [0.0] * pace.limit
    assert all(r > 0 for r in results[pace.limit :])
    assert pace.try_take(start + window + 0.1) == 0.0
