"""Events EventBridge refused, parked on the installation item for a later relay (the outbox's
storage; :mod:`ucoauth.core.outbox` decides what to park and when to relay)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ucoauth.adapters.table import due_shard, if_condition_holds, merchant_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class ParkedEvents:
    """The parked events of :class:`~ucoauth.adapters.installations.store.InstallationStore`."""

    table_name: str
    shards: int
    _ddb: Callable[[], DynamoDBClient]

    def park_events(self, merchant_id: str, *, events: str, version: int, active: bool, now: int) -> bool:
        """Keep events EventBridge refused (a JSON list, oldest first) on the item, for a later relay.

        An inactive installation is put back in the due index (due now) so the planner brings
        it to a worker; an active one is relayed at its next refresh. False if the state moved on.
        """
        sets = ["pending_event = :e"]
        values: dict[str, Any] = {":e": {"S": events}, ":v": {"N": str(version)}}
        if not active:
            sets += ["due_at = :now", "due_shard = :shard"]
            values[":now"] = {"N": str(now)}
            values[":shard"] = {"S": due_shard(merchant_id, self.shards)}
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="version = :v",
                ExpressionAttributeValues=values,
            )
        )
        return answer is not None

    def clear_event(self, merchant_id: str, *, version: int, active: bool) -> None:
        """The parked event was published: forget it (and, when inactive, the due entry and lease)."""
        removes = ["pending_event"]
        if not active:
            removes += ["due_at", "due_shard", "lease_owner", "lease_expires_at"]
        if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression="REMOVE " + ", ".join(removes),
                ConditionExpression="version = :v",
                ExpressionAttributeValues={":v": {"N": str(version)}},
            )
        )
