"""Recovery records and the dead-holder evidence, on the installation item.

A recovery record keeps tokens UltraCart issued that are not (or no longer) the installation's
own: a rotation whose write failed, the grant a reinstall replaced, the tokens an uninstall still
has to revoke. Each lives in an attribute of its generation (``recovery_<generation>``), so
records of several generations sit side by side and none is written over another's; within one
generation a newer record supersedes an older one (a rotation spends the refresh token it
rotated), never the other way round. Each record ends adopted (its tokens become the stored
ones, by the token write itself) or revoked at UltraCart and then cleared, only if it is still
the record that was revoked.

The dead-holder evidence (``awaiting_recovery``) says until when a recovery message of a holder
that died with the lease may still arrive. It is written when a lease is taken from such a
holder and survives every lease release; only a write that settles the grant removes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ucoauth.adapters.installations.model import HOLD_PREFIX, RECOVERY_GRACE, Installation, Recovery
from ucoauth.adapters.table import due_shard, if_condition_holds, is_conditional_failure, merchant_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class RecoverySlots:
    """The recovery records and the dead-holder evidence of :class:`InstallationStore`."""

    table_name: str
    shards: int
    _ddb: Callable[[], DynamoDBClient]

    def keep_recovery(self, merchant_id: str, recovery: Recovery, *, now: int) -> None:
        """Keep tokens UltraCart issued beside the installation, in their generation's slot, unless
        that slot holds a newer record of the generation (no version condition: it is a side slot
        the next lease holder reconciles). The item is put back in the due index (due now), so the
        planner brings it to a worker soon. Raises AWS errors (a ConditionalCheckFailedException
        when there is no item)."""
        try:
            self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression="SET #slot = :r, due_at = :now, due_shard = :shard",
                ConditionExpression=(
                    "attribute_exists(pk) AND (attribute_not_exists(#slot) OR #slot.issued_at <= :t)"
                ),
                ExpressionAttributeNames={"#slot": recovery.attribute},
                ExpressionAttributeValues={
                    ":r": recovery.as_attribute(),
                    ":t": {"N": str(recovery.issued_at)},
                    ":now": {"N": str(now)},
                    ":shard": {"S": due_shard(merchant_id, self.shards)},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if is_conditional_failure(exc) and exc.response.get("Item"):
                return  # a newer record of this generation is kept: these tokens are spent
            raise

    def clear_recovery(self, merchant_id: str, recovery: Recovery, *, active: bool) -> bool:
        """Forget a recovery record once it was adopted or revoked, only if its slot still holds
        those very tokens; an inactive installation also leaves the due index it was put in for
        the record. False when the slot holds something else (nothing removed)."""
        removes = "REMOVE #slot" + ("" if active else ", due_at, due_shard")
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=removes,
                ConditionExpression="#slot.tokens = :tokens",
                ExpressionAttributeNames={"#slot": recovery.attribute},
                ExpressionAttributeValues={":tokens": {"B": recovery.ciphertext}},
            )
        )
        return answer is not None

    def note_awaited_recovery(self, merchant_id: str, *, owner: str, until: int) -> None:
        """Record the dead-holder evidence: a recovery message may arrive until ``until``. Written
        under our lease (``owner``), never moved earlier. Raises AWS errors: the caller's lease
        then stays unreleased, which is itself that evidence for the next taker."""
        values: dict[str, Any] = {":owner": {"S": owner}, ":until": {"N": str(until)}}
        if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression="SET awaiting_recovery = :until",
                ConditionExpression=(
                    "lease_owner = :owner AND "
                    "(attribute_not_exists(awaiting_recovery) OR awaiting_recovery < :until)"
                ),
                ExpressionAttributeValues=values,
            )
        )

    def _note_dead_holder(self, installation: Installation, owner: str) -> Installation:
        """Keep the evidence of a holder that died with the lease on the item (see :meth:`lease`)."""
        left = installation.previous_lease_until
        if left is None or (installation.previous_lease_owner or "").startswith(HOLD_PREFIX):
            return installation
        awaited = left + RECOVERY_GRACE
        if awaited <= (installation.awaiting_recovery or 0):
            return installation
        self.note_awaited_recovery(installation.merchant_id, owner=owner, until=awaited)
        return dataclasses.replace(installation, awaiting_recovery=awaited)

    def hold_lease(self, merchant_id: str, *, owner: str, until: int) -> bool:
        """Keep our lease until ``until`` under a ``hold:`` owner (nobody else acts on the merchant
        meanwhile, and whoever takes it next knows it was a deliberate hold, not a dead holder)."""
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression="SET lease_owner = :hold, lease_expires_at = :until",
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues={
                    ":owner": {"S": owner},
                    ":hold": {"S": HOLD_PREFIX + owner},
                    ":until": {"N": str(until)},
                },
            )
        )
        return answer is not None


def replaced_record(before: Installation) -> Recovery | None:
    """The stored tokens of ``before`` as a recovery record of its generation, for the install
    that replaces them; None when it holds none, or its slot keeps a record at least as new
    (those tokens, or a rotation that spent them)."""
    if before.tokens_ciphertext is None:
        return None
    issued_at = before.refreshed_at or before.installed_at
    kept = before.recovery_of(before.generation)
    if kept is not None and kept.issued_at >= issued_at:
        return None
    return Recovery(
        ciphertext=before.tokens_ciphertext,
        generation=before.generation,
        issued_at=issued_at,
        expires_in=before.token_lifetime,
        token_type=before.token_type,
        scope=before.scope,
    )
