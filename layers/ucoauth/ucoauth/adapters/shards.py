"""How many ``DueIndex`` shards the planner reads: never fewer than still hold installations.

Every write puts a due installation in shard ``due_shard(merchant_id, DUE_SHARDS)``. A deploy
that lowers ``DUE_SHARDS`` changes where the next writes land, not the items already written: an
installation in a shard at or above the new count stays there until it is rewritten (refreshed,
used, uninstalled), and a planner reading only the new shards would never queue it again; its
refresh token would lapse with no alarm.

So the planner keeps a high-water mark in one item (``SHARDS#due``): the most shards it has run
with. It reads shards ``0 .. max(mark, DUE_SHARDS) - 1`` (the dropped ones empty as their
installations are rewritten into the new range). The mark

- grows, with one write conditional on it being lower, on the first run whose ``DUE_SHARDS`` is
  above it. The first run ever records at least :data:`UNRECORDED_SHARDS`: a stack that ran
  before the mark existed wrote with an unknown count, most likely the template's default, so a
  deploy that brings the mark and lowers ``DUE_SHARDS`` from the default at once strands nobody
  either (a stack that ran with more than that should run this version once before lowering);
- comes down to ``DUE_SHARDS`` only when every dropped shard is found empty twice,
  :data:`DRAIN_SECONDS` apart, with the same ``DUE_SHARDS`` (the first look is noted on the item,
  with the count it was for). A function still running with the old ``DUE_SHARDS`` while a deploy
  is under way could write into a dropped shard after the first look; the second look sees it.
  A note made for another ``DUE_SHARDS`` does not count. Each write is conditional on the item as
  it was read, so two runs never undo each other's step.

Reads stay proportional to what is due: a dropped shard is queried for what is due like any
other, and, while it is still counted, looked into for at most one item (``Limit`` 1), stopping
at the first dropped shard that is not empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters import aws
from ucoauth.adapters.table import DUE_INDEX
from ucoauth.base.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MARK_KEY: dict[str, Any] = {"pk": {"S": "SHARDS#due"}, "sk": {"S": "SHARDS"}}
# Longer than a stack update takes plus the longest function timeout: by then no function runs
# with the old DUE_SHARDS.
DRAIN_SECONDS = 3600
# What a stack without a mark may have written with: DueShards' default in template.yaml.
UNRECORDED_SHARDS = 8


@dataclass(frozen=True, slots=True)
class ShardMark:
    """The mark as read: the most shards the planner has run with (0: never recorded), and when
    the shards from ``drained_to`` up were first found empty (None: not yet)."""

    shards: int
    drained_at: int | None = None
    drained_to: int | None = None


class DueShards:
    """The shard high-water mark, and the looks into dropped shards that bring it down."""

    def __init__(
        self, table_name: str, *, configured: int, client: Callable[[], DynamoDBClient] = aws.dynamodb
    ) -> None:
        self.table_name = table_name
        self.configured = configured
        self._ddb = client

    def read(self) -> ShardMark:
        """The mark (one consistent GetItem)."""
        answer = self._ddb().get_item(TableName=self.table_name, Key=MARK_KEY, ConsistentRead=True)
        item = answer.get("Item", {})

        def number(name: str) -> int | None:
            value = item.get(name, {}).get("N")
            return None if value is None else int(value)

        return ShardMark(number("shards") or 0, number("drained_at"), number("drained_to"))

    def in_use(self) -> int:
        """How many shards may hold installations (one read, no write): what the planner reads."""
        return max(self.read().shards, self.configured)

    def to_read(self, stats: dict[str, int] | None = None) -> ShardMark:
        """Read the mark, raise it to ``DUE_SHARDS`` if that is higher; the mark this run goes by
        (its ``shards`` is how many shards to read)."""
        mark = self.read()
        if mark.shards > self.configured or (mark.shards == self.configured and mark.drained_at is None):
            if stats is not None:
                stats["shards"] = mark.shards
            return mark
        # Grown (or the first run), or back to the mark: a drain noted before counts no more.
        shards = max(self.configured, UNRECORDED_SHARDS if mark.shards == 0 else 0)
        self._write(
            "SET shards = :n REMOVE drained_at, drained_to",
            "attribute_not_exists(shards) OR shards <= :n",
            {":n": {"N": str(shards)}},
        )
        if mark.shards < self.configured:
            logger.info("due shards recorded", shards=shards, previous=mark.shards)
        if stats is not None:
            stats["shards"] = shards
        return ShardMark(shards)

    def retire_dropped(self, mark: ShardMark, *, now: int, stats: dict[str, int] | None = None) -> bool:
        """After a run that read ``mark.shards``: bring the mark down to ``DUE_SHARDS`` if every
        shard above it is empty and was already empty :data:`DRAIN_SECONDS` ago. True when lowered.

        Never fails the run: an AWS error only leaves the mark where it is (the dropped shards are
        read once more), and the next run looks again."""
        if mark.shards <= self.configured:
            return False
        try:
            return self._retire(mark, now=now, stats=stats)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("could not look into the dropped due shards", error=type(exc).__name__)
            return False

    def _retire(self, mark: ShardMark, *, now: int, stats: dict[str, int] | None) -> bool:
        if not all(self._is_empty(shard, stats) for shard in range(self.configured, mark.shards)):
            logger.info(
                "dropped due shards still hold installations", shards=mark.shards, configured=self.configured
            )
            return False
        values = {":n": {"N": str(self.configured)}, ":m": {"N": str(mark.shards)}}
        if mark.drained_at is None or mark.drained_to != self.configured:
            # The first look (for this DUE_SHARDS): noted; the mark comes down after the second.
            noted = "attribute_not_exists(drained_at)"
            if mark.drained_at is not None:
                noted, values[":d"] = "drained_at = :d", {"N": str(mark.drained_at)}
            self._write(
                "SET drained_at = :now, drained_to = :n",
                f"shards = :m AND {noted}",
                {**values, ":now": {"N": str(now)}},
            )
            return False
        if now - mark.drained_at < DRAIN_SECONDS:
            return False
        lowered = self._write(
            "SET shards = :n REMOVE drained_at, drained_to",
            "shards = :m AND drained_at = :d AND drained_to = :n",
            {**values, ":d": {"N": str(mark.drained_at)}},
        )
        if lowered:
            logger.info(
                "dropped due shards are empty: no longer read", shards=self.configured, previous=mark.shards
            )
        return lowered

    def _is_empty(self, shard: int, stats: dict[str, int] | None) -> bool:
        page = self._ddb().query(
            TableName=self.table_name,
            IndexName=DUE_INDEX,
            KeyConditionExpression="due_shard = :s",
            ExpressionAttributeValues={":s": {"S": str(shard)}},
            Limit=1,
        )
        if stats is not None:
            stats["queries"] = stats.get("queries", 0) + 1
            stats["scanned"] = stats.get("scanned", 0) + page.get("ScannedCount", 0)
        return not page.get("Items")

    def _write(self, update: str, condition: str, values: dict[str, Any]) -> bool:
        """One conditional UpdateItem of the mark; False when another run changed it first."""
        try:
            self._ddb().update_item(
                TableName=self.table_name,
                Key=MARK_KEY,
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True
