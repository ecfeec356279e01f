"""The refresh pace: at most so many background refreshes per window, shared by every worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ucoauth.adapters import aws
from ucoauth.adapters.table import if_condition_holds

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class PaceCounter:
    """A global budget of UltraCart calls per time window, shared by every worker."""

    def __init__(
        self,
        table_name: str,
        *,
        limit: int,
        window_seconds: int,
        name: str = "refresh",
        client: Callable[[], DynamoDBClient] = aws.dynamodb,
    ) -> None:
        self.table_name = table_name
        self.limit = limit
        self.window = window_seconds
        self.name = name
        self._ddb = client

    def try_take(self, now: float | None = None) -> float:
        """Take one call from the current window: 0.0 on success, else seconds until the next."""
        now = time.time() if now is None else now
        start = int(now // self.window) * self.window
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key={"pk": {"S": f"PACE#{self.name}"}, "sk": {"S": str(start)}},
                UpdateExpression="ADD used :one SET #ttl = :ttl",
                ConditionExpression="attribute_not_exists(used) OR used < :limit",
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":limit": {"N": str(self.limit)},
                    ":ttl": {"N": str(start + self.window + 3600)},
                },
            )
        )
        if answer is None:
            return max(0.01, start + self.window - now)
        return 0.0
