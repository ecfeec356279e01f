"""Lowering DueShards on a later deploy strands nobody: the planner keeps reading the shards it
read before until they are empty (moto, the fake UltraCart, the real flows)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import boto3

from devstack.resources import LocalResources
from tests.support import faults
from tests.support.calls import AwsCallCounter
from tests.support.clock import Clock
from tests.support.deadlines import a_deadline
from tests.support.fake_ultracart import FakeUltraCart
from tests.support.installs import install
from ucoauth.adapters.installations.store import InstallationStore
from ucoauth.adapters.services import Services
from ucoauth.adapters.shards import DRAIN_SECONDS, MARK_KEY, DueShards
from ucoauth.adapters.table import due_shard, merchant_key
from ucoauth.usecases import admin
from ucoauth.usecases.refresh import plan, refresh_due


def _merchants_in_shard(shard: int, *, shards: int, count: int, prefix: str = "S") -> list[str]:
    """``count`` merchant ids that land in ``shard`` of ``shards``."""
    candidates = (f"{prefix}{i}" for i in itertools.count())
    return list(itertools.islice((m for m in candidates if due_shard(m, shards) == str(shard)), count))


def _deployed_with(services: Services, shards: int) -> Services:
    """The same stack after a deploy that set DueShards to ``shards`` (every function's DUE_SHARDS)."""
    return dataclasses.replace(
        services,
        settings=services.settings.replace(due_shards=shards),
        installations=InstallationStore(services.settings.table_name, shards=shards),
    )


def test_installations_in_a_dropped_shard_are_still_planned(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    # Given installations written while DueShards was 8, three of them in shard 7, and the planner
    # running with 8 (nothing due yet)
    assert services.settings.due_shards == 8
    fake_uc.expires_in = 3600
    stranded = _merchants_in_shard(7, shards=8, count=3)
    for merchant in stranded:
        install(services, fake_uc, merchant)
    assert plan(services) == []
    # When a deploy lowers DueShards to 2 and their tokens come due
    lowered = _deployed_with(services, 2)
    clock.now += 3600
    # Then the planner still queues them for refresh
    assert sorted(plan(lowered)) == sorted(stranded)


def _mark(aws: LocalResources) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(TableName=aws.table_name, Key=MARK_KEY, ConsistentRead=True)
    return {k: int(v["N"]) for k, v in item.get("Item", {}).items() if "N" in v}


def _shard_of(aws: LocalResources, merchant_id: str) -> str | None:
    item = boto3.client("dynamodb").get_item(TableName=aws.table_name, Key=merchant_key(merchant_id))["Item"]
    return item["due_shard"]["S"] if "due_shard" in item else None


def test_the_dropped_shards_are_read_until_they_stay_empty_then_no_more(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    # Given merchants stranded in shard 7 after DueShards went from 8 to 2, and their tokens due
    fake_uc.expires_in = 3600
    stranded = _merchants_in_shard(7, shards=8, count=2)
    for merchant in stranded:
        install(services, fake_uc, merchant)
    plan(services)
    lowered = _deployed_with(services, 2)
    clock.now += 3600
    # When the planner queues them and the workers refresh them
    for merchant in plan(lowered):
        assert refresh_due(lowered, merchant, deadline=a_deadline(lowered)) == "refreshed"
    # Then their new due time is in the new range, and the old shard is empty
    assert {_shard_of(aws, m) for m in stranded} <= {"0", "1"}
    # The planner still reads all 8 shards: the first time it finds 2..7 empty is only noted
    stats: dict[str, int] = {}
    assert plan(lowered, stats=stats) == []
    assert stats["shards"] == 8
    assert _mark(aws) == {"shards": 8, "drained_at": clock.now, "drained_to": 2}
    clock.now += DRAIN_SECONDS - 1
    plan(lowered, stats=stats)
    assert _mark(aws)["shards"] == 8
    # and once they are still empty DRAIN_SECONDS later, the mark comes down to DueShards
    clock.now += 1
    plan(lowered)
    assert _mark(aws) == {"shards": 2}
    stats = {}
    plan(lowered, stats=stats)
    assert (stats["shards"], stats["queries"]) == (2, 2)


def test_a_write_into_a_dropped_shard_while_it_drains_is_still_planned(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    # Given a planner at 8 shards, then a deploy lowering DueShards to 2: the dropped shards are
    # empty, and the planner notes it
    plan(services)
    lowered = _deployed_with(services, 2)
    plan(lowered)
    assert _mark(aws)["drained_at"] == clock.now
    # When a function still running with the old DueShards (the deploy is under way) installs a
    # merchant into shard 7, whose token is soon due
    (late,) = _merchants_in_shard(7, shards=8, count=1, prefix="LATE")
    fake_uc.expires_in = 600
    install(services, fake_uc, late)
    assert _shard_of(aws, late) == "7"
    # Then, DRAIN_SECONDS after the first look, the planner finds it: queued, and shard 7 still read
    clock.now += DRAIN_SECONDS
    stats: dict[str, int] = {}
    assert plan(lowered, stats=stats) == [late]
    assert stats["shards"] == 8
    assert _mark(aws)["shards"] == 8


def test_raising_due_shards_reads_the_new_shards_at_once(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    plan(services)
    assert _mark(aws) == {"shards": 8}
    raised = _deployed_with(services, 16)
    fake_uc.expires_in = 60
    (merchant,) = _merchants_in_shard(12, shards=16, count=1)
    install(raised, fake_uc, merchant)
    stats: dict[str, int] = {}
    assert plan(raised, stats=stats) == [merchant]
    assert stats["shards"] == 16
    assert _mark(aws) == {"shards": 16}


def test_a_raise_is_never_undone_by_a_planner_still_lowering(
    services: Services, clock: Clock, aws: LocalResources
) -> None:
    # Given a mark of 8 whose dropped shards were found empty long ago by a planner at 2
    table = services.settings.table_name
    DueShards(table, configured=8).to_read()
    lowering = DueShards(table, configured=2)
    lowering.retire_dropped(lowering.to_read(), now=services.now())
    clock.now += DRAIN_SECONDS
    read_before = lowering.to_read()
    # When a planner deployed with 16 raises the mark between that planner's read and its write
    DueShards(table, configured=16).to_read()
    # Then the lowering write is refused: the mark stays 16
    assert lowering.retire_dropped(read_before, now=services.now()) is False
    assert _mark(aws) == {"shards": 16}


def test_a_drain_noted_for_another_due_shards_does_not_count(
    services: Services, clock: Clock, aws: LocalResources
) -> None:
    # Given a drain noted while DueShards was 4 (shards 4..7 empty), long ago
    table = services.settings.table_name
    DueShards(table, configured=8).to_read()
    at_four = DueShards(table, configured=4)
    at_four.retire_dropped(at_four.to_read(), now=services.now())
    clock.now += 2 * DRAIN_SECONDS
    # When DueShards is lowered further, to 2, the first look is a new first look
    at_two = DueShards(table, configured=2)
    assert at_two.retire_dropped(at_two.to_read(), now=services.now()) is False
    assert _mark(aws) == {"shards": 8, "drained_at": clock.now, "drained_to": 2}
    # and a deploy back to 8 forgets the drain altogether
    DueShards(table, configured=8).to_read()
    assert _mark(aws) == {"shards": 8}


def test_the_planner_reads_one_mark_and_writes_it_only_when_it_grows(services: Services) -> None:
    counter = AwsCallCounter()
    plan(services)  # the first run ever records the mark
    assert counter.by_operation() == {
        "dynamodb.GetItem": 2,  # the UltraCart budget, the shard mark
        "dynamodb.UpdateItem": 1,  # the mark, recorded
        "dynamodb.Query": services.settings.due_shards,
    }
    counter.reset()
    plan(services)
    assert counter.by_operation() == {"dynamodb.GetItem": 2, "dynamodb.Query": services.settings.due_shards}


def test_the_operators_due_count_includes_the_dropped_shards(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    fake_uc.expires_in = 1800  # due within the hour
    (merchant,) = _merchants_in_shard(7, shards=8, count=1)
    install(services, fake_uc, merchant)
    plan(services)
    lowered = _deployed_with(services, 2)
    assert admin.stats(lowered)["due_within_hour"] == 1


def test_a_failed_look_into_the_dropped_shards_never_fails_the_run(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    # Given a due merchant, and DueShards lowered from 8 to 2
    fake_uc.expires_in = 60
    install(services, fake_uc, "DUE1")
    plan(services)
    lowered = _deployed_with(services, 2)

    # When DynamoDB refuses the look into the dropped shards (a Query without a due time)
    def look(params: Mapping[str, Any]) -> bool:
        return "due_at" not in params.get("KeyConditionExpression", "")

    with faults.aws_faults(faults.throttle("dynamodb", "Query", match=look)) as (refused,):
        planned = plan(lowered)
    # Then the run still queues what is due, and the mark stays up for the next run to look again
    assert refused.hits >= 1
    assert planned == ["DUE1"]
    assert _mark(aws) == {"shards": 8}


def test_a_deploy_that_brings_the_mark_and_lowers_due_shards_from_the_default_strands_nobody(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    # Given installations written with the default 8 shards by a planner that kept no mark
    fake_uc.expires_in = 60
    stranded = _merchants_in_shard(7, shards=8, count=2)
    for merchant in stranded:
        install(services, fake_uc, merchant)
    assert _mark(aws) == {}
    # When the first planner run with a mark is also the first with DueShards 2
    planned = plan(_deployed_with(services, 2))
    # Then it reads the default's 8 shards, and finds them
    assert sorted(planned) == sorted(stranded)
    assert _mark(aws) == {"shards": 8}
