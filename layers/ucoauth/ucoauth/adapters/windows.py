"""The UltraCart budget's items: calls counted per hour and per UTC day, and the line.

One item per counted party and UTC day: ``BUDGET#ultracart`` for the application, and
``BUDGET#M#<merchant>`` for one merchant's authorization of it (every key under ``BUDGET#``,
which the functions' roles may write), sort key the day's start (epoch seconds). ``used``
counts the day's calls and ``h00``..``h23`` each hour's; ``ttl`` removes the item two days on.

An application item also carries the line: the one UltraCart call in flight for the whole
application (``line``: its holder; ``line_until``: when its hold ends at the latest, should the
holder die before releasing it). Counting a call and taking the line is one conditional
``UpdateItem``, so a call that may not go out neither counts nor holds anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ucoauth.base.errors import BudgetExhaustedError, UltraCartBusyError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

HOUR = 3600
DAY = 86_400
APPLICATION_PK = "BUDGET#ultracart"
MERCHANT_PK_PREFIX = "BUDGET#M#"


def merchant_pk(merchant_id: str) -> str:
    """The partition key of one merchant's windows."""
    return MERCHANT_PK_PREFIX + merchant_id


def day_start(now: float) -> int:
    """The start of ``now``'s UTC day (epoch seconds)."""
    return int(now // DAY) * DAY


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Line:
    """A hold on the application's line: its holder, when it ends at the latest, and the UTC
    days whose items carry it (two in the first minutes of a day: see ``ucoauth.adapters.budget``)."""

    owner: str
    until: float
    days: tuple[int, ...]


def _conditional_failure(exc: ClientError) -> dict[str, Any] | None:
    """The item as the failed condition saw it, or None when ``exc`` is another error."""
    if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
        return None
    old: Any = exc.response.get("Item") or {}
    return dict(old)


class WindowItems:
    """Reads and conditional writes of the budget's items."""

    def __init__(self, table_name: str, client: Callable[[], DynamoDBClient]) -> None:
        self.table_name = table_name
        self._ddb = client

    def _key(self, pk: str, day: int) -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": str(day)}}

    @staticmethod
    def hour_attribute(now: float) -> str:
        return f"h{int(now % DAY // HOUR):02d}"

    def count(self, pk: str, now: float, *, hourly: int, daily: int, line: Line | None = None) -> None:
        """Count one call in ``now``'s hour and day of ``pk``; with ``line``, also take the line
        on that day's item, in the same write. :class:`BudgetExhaustedError` (seconds until the
        spent window resets) or :class:`UltraCartBusyError` (the line is held), nothing written."""
        day = day_start(now)
        update = "ADD used :one, #h :one SET #ttl = :ttl"
        condition = (
            "(attribute_not_exists(used) OR used < :daily) AND (attribute_not_exists(#h) OR #h < :hourly)"
        )
        names = {"#h": self.hour_attribute(now), "#ttl": "ttl"}
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":daily": {"N": str(daily)},
            ":hourly": {"N": str(hourly)},
            ":ttl": {"N": str(day + 2 * DAY)},
        }
        if line is not None:
            update += ", #line = :owner, #until = :until"
            condition += " AND (attribute_not_exists(#until) OR #until < :now)"
            names.update({"#line": "line", "#until": "line_until"})
            values.update(
                {":owner": {"S": line.owner}, ":until": {"N": repr(line.until)}, ":now": {"N": repr(now)}}
            )
        try:
            self._ddb().update_item(
                TableName=self.table_name,
                Key=self._key(pk, day),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            old = _conditional_failure(exc)
            if old is None:
                raise
            if int(old.get("used", {}).get("N", "0")) >= daily:
                raise BudgetExhaustedError(day + DAY - now) from None
            if int(old.get(self.hour_attribute(now), {}).get("N", "0")) >= hourly:
                raise BudgetExhaustedError(int(now // HOUR) * HOUR + HOUR - now) from None
            raise UltraCartBusyError(float(old.get("line_until", {}).get("N", now)) - now) from None

    def give_back(self, pk: str, now: float) -> None:
        """Uncount one call counted at ``now`` (a call that did not go out after all)."""
        self._ddb().update_item(
            TableName=self.table_name,
            Key=self._key(pk, day_start(now)),
            UpdateExpression="ADD used :minus, #h :minus",
            ExpressionAttributeNames={"#h": self.hour_attribute(now)},
            ExpressionAttributeValues={":minus": {"N": "-1"}},
        )

    def hold(self, pk: str, day: int, line: Line, now: float) -> None:
        """Take the line on ``day``'s item of ``pk`` without counting a call there;
        :class:`UltraCartBusyError` when it is held."""
        try:
            self._ddb().update_item(
                TableName=self.table_name,
                Key=self._key(pk, day),
                UpdateExpression="SET #line = :owner, #until = :until, #ttl = if_not_exists(#ttl, :ttl)",
                ConditionExpression="attribute_not_exists(#until) OR #until < :now",
                ExpressionAttributeNames={"#line": "line", "#until": "line_until", "#ttl": "ttl"},
                ExpressionAttributeValues={
                    ":owner": {"S": line.owner},
                    ":until": {"N": repr(line.until)},
                    ":now": {"N": repr(now)},
                    ":ttl": {"N": str(day + 2 * DAY)},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            old = _conditional_failure(exc)
            if old is None:
                raise
            raise UltraCartBusyError(float(old.get("line_until", {}).get("N", now)) - now) from None

    def release(self, pk: str, line: Line, days: tuple[int, ...] | None = None) -> None:
        """Give the line back on each of its days' items (those of ``days`` only, when given),
        where it is still this holder's: one whose hold ended may have been taken since."""
        for day in line.days if days is None else days:
            try:
                self._ddb().update_item(
                    TableName=self.table_name,
                    Key=self._key(pk, day),
                    UpdateExpression="REMOVE #line, #until",
                    ConditionExpression="#line = :owner",
                    ExpressionAttributeNames={"#line": "line", "#until": "line_until"},
                    ExpressionAttributeValues={":owner": {"S": line.owner}},
                )
            except ClientError as exc:
                if _conditional_failure(exc) is None:
                    raise

    def used(self, pk: str, now: float) -> tuple[int, int]:
        """(this hour, today) calls counted so far for ``pk`` (one consistent read)."""
        item = (
            self._ddb()
            .get_item(TableName=self.table_name, Key=self._key(pk, day_start(now)), ConsistentRead=True)
            .get("Item", {})
        )
        hour = int(item.get(self.hour_attribute(now), {}).get("N", "0"))
        return hour, int(item.get("used", {}).get("N", "0"))
