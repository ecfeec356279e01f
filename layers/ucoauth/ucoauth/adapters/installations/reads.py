"""Reads of many installations at once, from the table's sparse indexes (never a Scan): the
planner's due items (``DueIndex``) and the admin API's pages, counts and single views
(``StatusIndex``, projected GetItem). Nothing here returns a token, a ciphertext or a lease owner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ucoauth.adapters import aws
from ucoauth.adapters.table import ACCOUNT_INDEX, DUE_INDEX, STATUS_INDEX, merchant_key, number, string

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Item = dict[str, Any]


class InstallationReads:
    """Index reads over the installations of one table."""

    def __init__(
        self, table_name: str, *, shards: int = 8, client: Callable[[], DynamoDBClient] = aws.dynamodb
    ) -> None:
        self.table_name = table_name
        self.shards = shards
        self._ddb = client

    def due_merchants(
        self,
        *,
        now: int,
        limit: int | None = None,
        stats: dict[str, int] | None = None,
        shards: int | None = None,
    ) -> list[str]:
        """Merchants whose refresh is due, most overdue first, read from the sparse ``DueIndex``.

        Each shard is queried for ``due_at <= now`` (in due order, at most ``limit`` items), so
        reads are proportional to what is due, never to all installations; with ``limit`` the
        earliest ``limit`` over all shards are returned and the rest stay in the index. ``shards``
        (default: the shards written to) is how many to read (``ucoauth.adapters.shards``).
        """
        found: list[tuple[int, str]] = []
        for shard in range(self.shards if shards is None else shards):
            kwargs: dict[str, Any] = {
                "TableName": self.table_name,
                "IndexName": DUE_INDEX,
                "KeyConditionExpression": "due_shard = :s AND due_at <= :now",
                "ExpressionAttributeValues": {":s": {"S": str(shard)}, ":now": {"N": str(now)}},
            }
            taken = 0
            while limit is None or taken < limit:
                if limit is not None:
                    kwargs["Limit"] = limit - taken
                page = self._ddb().query(**kwargs)
                if stats is not None:
                    stats["queries"] = stats.get("queries", 0) + 1
                    stats["scanned"] = stats.get("scanned", 0) + page.get("ScannedCount", 0)
                for item in page.get("Items", []):
                    pk = string(item, "pk") or ""
                    if pk.startswith("MERCHANT#"):
                        found.append((number(item, "due_at") or 0, pk.removeprefix("MERCHANT#")))
                        taken += 1
                last = page.get("LastEvaluatedKey")
                if not last:
                    break
                kwargs["ExclusiveStartKey"] = dict(last)
        found.sort()
        return [merchant for _, merchant in (found if limit is None else found[:limit])]

    def projected(self, merchant_id: str, attributes: tuple[str, ...]) -> Item | None:
        """The named attributes of a merchant's installation item (a consistent read), or None."""
        answer = self._ddb().get_item(
            TableName=self.table_name,
            Key=merchant_key(merchant_id),
            ConsistentRead=True,
            **_projection(attributes),
        )
        item = answer.get("Item")
        return dict(item) if item else None

    def status_page(
        self,
        status: str,
        *,
        limit: int,
        start: Item | None,
        attributes: tuple[str, ...],
        stats: dict[str, int] | None = None,
    ) -> tuple[list[Item], Item | None]:
        """Up to ``limit`` installations of one status in merchant order (``StatusIndex``), from
        ``start`` (a previous page's last key); returns them and the key to go on from."""
        key = ("#status = :s", {":s": {"S": status}})
        return self._index_page(
            STATUS_INDEX, key, limit=limit, start=start, attributes=attributes, stats=stats
        )

    def account_page(
        self, app_account_id: str, *, limit: int, start: Item | None, attributes: tuple[str, ...]
    ) -> tuple[list[Item], Item | None]:
        """Up to ``limit`` installations linked to one of the app's accounts, in merchant order
        (``AccountIndex``), from ``start``; returns them and the key to go on from."""
        key = ("app_account_id = :a", {":a": {"S": app_account_id}})
        return self._index_page(ACCOUNT_INDEX, key, limit=limit, start=start, attributes=attributes)

    def _index_page(
        self,
        index: str,
        key: tuple[str, dict[str, Any]],
        *,
        limit: int,
        start: Item | None,
        attributes: tuple[str, ...],
        stats: dict[str, int] | None = None,
    ) -> tuple[list[Item], Item | None]:
        """One Query of an index (its key condition and values), from ``start``; counted in
        ``stats`` (queries, items read) when given."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": key[0],
            "ExpressionAttributeValues": key[1],
            "Limit": limit,
            **_projection(attributes),
        }
        if start is not None:
            kwargs["ExclusiveStartKey"] = start
        page = self._ddb().query(**kwargs)
        if stats is not None:
            stats["queries"] = stats.get("queries", 0) + 1
            stats["read"] = stats.get("read", 0) + page.get("ScannedCount", 0)
        last = page.get("LastEvaluatedKey")
        return [dict(item) for item in page.get("Items", [])], dict(last) if last else None

    def count_status(self, status: str) -> int:
        """How many installations have ``status`` (reads that status's whole partition)."""
        return self._count(
            IndexName=STATUS_INDEX,
            KeyConditionExpression="#status = :s",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":s": {"S": status}},
        )

    def count_due(self, *, until: int, shards: int | None = None) -> int:
        """How many installations are due by ``until``, over ``shards`` shards (default: written)."""
        return sum(
            self._count(
                IndexName=DUE_INDEX,
                KeyConditionExpression="due_shard = :s AND due_at <= :t",
                ExpressionAttributeValues={":s": {"S": str(shard)}, ":t": {"N": str(until)}},
            )
            for shard in range(self.shards if shards is None else shards)
        )

    def _count(self, **query: Any) -> int:
        total = 0
        kwargs: dict[str, Any] = {"TableName": self.table_name, "Select": "COUNT", **query}
        while True:
            page = self._ddb().query(**kwargs)
            total += int(page.get("Count", 0))
            last = page.get("LastEvaluatedKey")
            if not last:
                return total
            kwargs["ExclusiveStartKey"] = last


def _projection(names: tuple[str, ...]) -> dict[str, Any]:
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": {"#status": "status"}}
