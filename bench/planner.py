"""Planner read cost: 100,000 installations, 1 % due, in moto's in-process mock.

Items read are the sum of ``ScannedCount`` over the queries. Two reads of the same table: the
planner itself (``ucoauth.usecases.refresh.plan(stats=)``, which may queue fewer than are due when the pace
allows fewer before its next run) and every due installation
(``InstallationReads.due_merchants(stats=)``). Reads proportional to what is due keep
items read / items due near 1, whatever the number of installations. The admin API's listing
reads the same table through ``StatusIndex``: a page of 50 must read at most 60 items.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from bench.common import REGION, progress, set_process_aws_env, wire_process

TARGET = 1.05
ADMIN_PAGE = 50
ADMIN_TARGET = 60  # items read for a page of 50
_BATCH = 25


@dataclass
class PlannerResult:
    installations: int
    due: int
    planned: int  # what ucoauth.usecases.refresh.plan returned (the planner queues these)
    scanned: int  # its items read
    queries: int
    plan_seconds: float
    all_due: int  # what due_merchants returned without a limit
    all_scanned: int
    all_queries: int
    load_seconds: float
    # The admin API's listing over the same table (StatusIndex): a page of 50, with and without
    # a status.
    admin_items: int = 0
    admin_read: int = 0
    admin_queries: int = 0
    admin_all_read: int = 0
    admin_all_queries: int = 0
    admin_seconds: float = 0.0

    @property
    def ratio(self) -> float:
        """The planner's items read / items due."""
        return self.scanned / self.due if self.due else float("nan")

    @property
    def all_ratio(self) -> float:
        """Items read / items due when every due installation is read."""
        return self.all_scanned / self.due if self.due else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ratio": self.ratio, "all_ratio": self.all_ratio}


def _item(merchant_id: str, *, due_at: int, shards: int, blob: bytes) -> dict[str, Any]:
    """An active installation with the keys the planner's index reads, and a ciphertext-sized blob.

    The other attributes the store writes are left out: ``DueIndex`` projects keys only, so
    they change neither what the planner reads nor ``ScannedCount``, and moto's item-size
    bookkeeping grows with the square of the attribute count (it would only slow the load).
    """
    from ucoauth.adapters.table import due_shard, merchant_key

    return {
        **merchant_key(merchant_id),
        "merchant_id": {"S": merchant_id},
        "status": {"S": "active"},
        "version": {"N": "1"},
        "tokens": {"B": blob},
        "access_expires_at": {"N": str(due_at + 900)},
        "due_shard": {"S": due_shard(merchant_id, shards)},
        "due_at": {"N": str(due_at)},
    }


def measure(installations: int = 100_000, due_fraction: float = 0.01) -> PlannerResult:
    import boto3
    import moto

    from devstack.resources import create_resources
    from ucoauth.usecases import admin
    from ucoauth.usecases.refresh import plan

    set_process_aws_env()
    with moto.mock_aws():
        resources = create_resources(boto3.Session(region_name=REGION), stage="bench")
        env = resources.function_environment("RefreshPlannerFunction")
        env.pop("AWS_ENDPOINT_URL", None)
        os.environ.pop("AWS_ENDPOINT_URL", None)
        services = wire_process(env)
        shards = services.settings.due_shards
        client = boto3.client("dynamodb", region_name=REGION)
        now = int(time.time())
        every = round(1 / due_fraction)
        blob = os.urandom(320)
        started = time.perf_counter()
        due = 0
        batch: list[Any] = []
        for index in range(installations):
            merchant_id = f"M{index:07d}"
            if index % every == 0:
                due_at, due = now - 60 - index % 600, due + 1
            else:
                # Due later today, an hour out at the soonest: none turns due while the bench runs.
                due_at = now + 3600 + (index * 7919) % 82_800
            batch.append(
                {"PutRequest": {"Item": _item(merchant_id, due_at=due_at, shards=shards, blob=blob)}}
            )
            if len(batch) == _BATCH or index == installations - 1:
                pending: dict[str, Any] = {resources.table_name: batch}
                while pending:
                    pending = dict(client.batch_write_item(RequestItems=pending).get("UnprocessedItems", {}))
                batch = []
            if (index + 1) % 25_000 == 0:
                progress(f"planner: {index + 1:,} installations written")
        loaded = time.perf_counter() - started
        stats: dict[str, int] = {}
        started = time.perf_counter()
        planned = list(plan(services, stats=stats))
        plan_seconds = time.perf_counter() - started
        every_due: dict[str, int] = {}
        found = list(services.installation_reads.due_merchants(now=services.now(), stats=every_due))
        listed: dict[str, int] = {}
        started = time.perf_counter()
        page = admin.list_installations(
            services, status="active", limit=ADMIN_PAGE, cursor=None, stats=listed
        )
        admin_seconds = time.perf_counter() - started
        listed_all: dict[str, int] = {}
        admin.list_installations(services, status=None, limit=ADMIN_PAGE, cursor=None, stats=listed_all)
    return PlannerResult(
        installations=installations,
        due=due,
        planned=len(planned),
        scanned=stats.get("scanned", 0),
        queries=stats.get("queries", 0),
        plan_seconds=plan_seconds,
        all_due=len(found),
        all_scanned=every_due.get("scanned", 0),
        all_queries=every_due.get("queries", 0),
        load_seconds=loaded,
        admin_items=len(page.items),
        admin_read=listed.get("read", 0),
        admin_queries=listed.get("queries", 0),
        admin_all_read=listed_all.get("read", 0),
        admin_all_queries=listed_all.get("queries", 0),
        admin_seconds=admin_seconds,
    )


if __name__ == "__main__":
    # Run on its own (``python -m bench.planner``), next to benchmarks that are not timed.
    import json
    import sys

    from bench.common import use_project_paths

    use_project_paths()
    print(json.dumps(measure().as_json()), file=sys.stdout, flush=True)
