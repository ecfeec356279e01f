"""Refresh over real HTTP: moto's server + the UltraCart sandbox, threads and processes racing."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest

from devstack.resources import LocalResources
from tests.support.deadlines import a_deadline
from tests.support.installs import seed_installation, stored_tokens
from tests.support.observer import observed_events
from tests.support.processes import results_of, start_processes
from tests.support.roles import harness_boto3_session
from ucoauth.adapters.installations.model import REAUTHORIZATION_REQUIRED
from ucoauth.adapters.services import Services
from ucoauth.base.errors import GrantUnsettledError, TransientUltraCartError
from ucoauth.core.rotation import RECOVERY_GRACE
from ucoauth.usecases.refresh import plan, refresh_due
from ucsandbox import Sandbox

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("rotate", [True, False])
def test_a_due_token_is_refreshed_with_rotation_on_and_off(
    live: Services, sandbox: Sandbox, rotate: bool
) -> None:
    sandbox.configure(rotate=rotate)
    _, old_refresh = seed_installation(live, sandbox, "ROT1")
    assert refresh_due(live, "ROT1", deadline=a_deadline(live)) == "refreshed"
    tokens = stored_tokens(live, "ROT1")
    assert sandbox.token_is_valid(tokens.access_token)
    assert sandbox.refresh_token_is_valid(tokens.refresh_token or "")
    assert (tokens.refresh_token == old_refresh) is (not rotate)
    assert [r.grant_type for r in sandbox.requests("token")] == ["refresh_token"]


def test_a_refresh_that_omits_the_refresh_token_keeps_the_old_one(live: Services, sandbox: Sandbox) -> None:
    sandbox.configure(rotate="omit")
    _, old_refresh = seed_installation(live, sandbox, "OMIT1")
    assert refresh_due(live, "OMIT1", deadline=a_deadline(live)) == "refreshed"
    assert stored_tokens(live, "OMIT1").refresh_token == old_refresh


@pytest.mark.xdist_group("processes")
def test_eight_workers_threads_and_processes_make_one_ultracart_call(
    live: Services, live_env: dict[str, str], sandbox: Sandbox
) -> None:
    sandbox.configure(rotate=True, latency_ms=200)  # a slow UltraCart widens the race window
    seed_installation(live, sandbox, "RACE1")
    start_at = time.time() + 2.5
    processes = start_processes(live_env, "RACE1", 4, start_at)
    thread_results: list[str] = []

    def worker() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        thread_results.append(refresh_due(live, "RACE1", deadline=a_deadline(live)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    results = thread_results + results_of(processes)
    assert len(results) == 8
    assert results.count("refreshed") == 1, results
    assert set(results) <= {"refreshed", "busy", "not_due"}, results
    assert len(sandbox.requests("token")) == 1
    tokens = stored_tokens(live, "RACE1")
    assert sandbox.refresh_token_is_valid(tokens.refresh_token or "")
    assert stored_tokens(live, "RACE1").access_token == tokens.access_token


@pytest.mark.parametrize("status", [429, 500])
def test_429_and_500_keep_the_stored_tokens(live: Services, sandbox: Sandbox, status: int) -> None:
    access, refresh = seed_installation(live, sandbox, "FAIL1")
    sandbox.add_fault("token", status=status, uc_rest_error="try later")
    with pytest.raises(TransientUltraCartError) as raised:
        refresh_due(live, "FAIL1", deadline=a_deadline(live))
    assert (raised.value.status, raised.value.rest_error) == (status, "try later")
    tokens = stored_tokens(live, "FAIL1")
    assert (tokens.access_token, tokens.refresh_token) == (access, refresh)
    assert live.installations.get("FAIL1").lease_owner is None  # type: ignore[union-attr]
    assert refresh_due(live, "FAIL1", deadline=a_deadline(live)) == "refreshed"  # the retry succeeds


@pytest.mark.xdist_group("processes")
@pytest.mark.parametrize("rotate", [False, True])
def test_a_worker_killed_after_ultracart_answered(
    live: Services, live_env: dict[str, str], sandbox: Sandbox, aws_server: LocalResources, rotate: bool
) -> None:
    sandbox.configure(rotate=rotate)
    seed_installation(live, sandbox, "KILL1")
    (result,) = results_of(start_processes(live_env, "KILL1", 1, time.time(), mode="die_before_write"))
    assert result == "exit:9"
    assert len(sandbox.requests("token")) == 1  # UltraCart did the work; the answer died with the worker
    # The dead worker's lease lasts past its invocation's deadline (120 s + skew), no TTL involved.
    assert refresh_due(live, "KILL1", deadline=a_deadline(live)) == "busy"
    live.clock = lambda: time.time() + 130
    if rotate:
        # The rotated refresh token died with the worker's memory (a crash, not a timeout: a
        # timeout never comes between UltraCart's answer and the write). A dead holder might have
        # sent the tokens to the queue, so nobody declares the grant dead before they could arrive.
        with pytest.raises(GrantUnsettledError) as unsettled:
            refresh_due(live, "KILL1", deadline=a_deadline(live))
        assert unsettled.value.retry_after >= RECOVERY_GRACE - 130
        assert live.installations.get("KILL1").status == "active"  # type: ignore[union-attr]
        live.clock = lambda: time.time() + 130 + RECOVERY_GRACE + 5
        assert refresh_due(live, "KILL1", deadline=a_deadline(live)) == "reauthorization"
        installation = live.installations.get("KILL1")
        assert installation is not None and installation.status == REAUTHORIZATION_REQUIRED
        events = [e for e in observed_events(aws_server) if e["detail-type"] == "Reauthorization Required"]
        assert [e["detail"]["merchant_id"] for e in events] == ["KILL1"]
    else:
        # Nothing was lost: the retry refreshes with the same refresh token.
        assert refresh_due(live, "KILL1", deadline=a_deadline(live)) == "refreshed"
        assert sandbox.token_is_valid(stored_tokens(live, "KILL1").access_token)


def test_the_planner_reads_only_the_due_items(live: Services, aws_server: LocalResources) -> None:
    ddb = harness_boto3_session(aws_server.region).client("dynamodb", endpoint_url=aws_server.endpoint_url)
    now = live.now()
    from ucoauth.adapters.table import due_shard

    items: list[Any] = []
    for i in range(10_000):
        merchant = f"P{i:05d}"
        due_at = now - 5 if i % 100 == 0 else now + 10_000 + i
        items.append(
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": f"MERCHANT#{merchant}"},
                        "sk": {"S": "INSTALLATION"},
                        "merchant_id": {"S": merchant},
                        "status": {"S": "active"},
                        "due_at": {"N": str(due_at)},
                        "due_shard": {"S": due_shard(merchant, live.settings.due_shards)},
                    }
                }
            }
        )
    for start in range(0, len(items), 25):
        ddb.batch_write_item(RequestItems={aws_server.table_name: items[start : start + 25]})
    stats: dict[str, int] = {}
    roomy = dataclasses.replace(live, settings=live.settings.replace(refresh_pace_limit=1000))
    due = plan(roomy, stats=stats)
    assert len(due) == 100
    assert stats["scanned"] == 100  # items read == items due, not 10,000
    assert stats["queries"] == live.settings.due_shards
    # With the default pace (10 per minute, planner every 5 minutes) it queues only the 50 most
    # overdue; the other 50 stay in the index for the next run. Still no more than 100 read.
    stats = {}
    capped = plan(live, stats=stats)
    assert len(capped) == 50
    assert set(capped) <= set(due)
    assert stats["scanned"] <= 100
