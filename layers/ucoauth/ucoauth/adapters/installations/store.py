"""Installations and their refresh leases, on the installations table.

Every write that can race is conditional, and each explains its own failure (one UpdateItem
answering ``ALL_OLD``/``ALL_NEW``, mapped to a precise domain error).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters import aws
from ucoauth.adapters.installations.model import (
    ACTIVE,
    HOLD_PREFIX,
    LEGACY_RECOVERY,
    REAUTHORIZATION_REQUIRED,
    UNINSTALLED,
    UNINSTALLING,
    Installation,
    Recovery,
    Replaced,
    TokenFields,
    link_account,
    linked_elsewhere,
    relinked,
)
from ucoauth.adapters.installations.parked import ParkedEvents
from ucoauth.adapters.installations.recoveries import RecoverySlots, replaced_record
from ucoauth.adapters.table import (
    Update,
    due_shard,
    if_condition_holds,
    is_conditional_failure,
    merchant_key,
    number,
)
from ucoauth.base.errors import (
    AccountConflictError,
    LeaseBusyError,
    NotDueError,
    NotInstalledError,
    StaleWriteError,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from ucoauth.adapters.browser_items import AccountLink


# What an install clears: the last generation's lease, uninstall, failures and tombstone TTL.
_CLEARED_BY_INSTALL = (
    "lease_owner",
    "lease_expires_at",
    "uninstalled_at",
    "uninstall_reason",
    "revoke_confirmed",
    "revoke_pending_since",
    "last_error",
    "last_error_at",
    "consecutive_failures",
    "ttl",
    "awaiting_recovery",
)
# Installs racing on one item: each re-reads and tries again, at most this often.
_INSTALL_ATTEMPTS = 5


class Lease:
    """A merchant's lease, held for a ``with`` block.

    On exit it is released, unless a write already cleared it (a token write, a reauthorization
    or an uninstall removes the lease in the same request) or it was deliberately held on.
    A failed release is only logged: the lease expires by itself, past the holder's deadline.
    """

    def __init__(self, store: InstallationStore, installation: Installation, owner: str) -> None:
        self.store = store
        self.installation = installation
        self.owner = owner
        self.done = False

    @property
    def merchant_id(self) -> str:
        return self.installation.merchant_id

    def cleared(self) -> None:
        """A write removed the lease with its own request: nothing to release on exit."""
        self.done = True

    def hold_until(self, until: int) -> None:
        """Keep the lease (not released on exit) until ``until``."""
        self.done = self.store.hold_lease(self.merchant_id, owner=self.owner, until=until)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.done:
            return
        try:
            self.store.release_lease(self.merchant_id, owner=self.owner)
        except (ClientError, BotoCoreError):
            # Never hide the original failure behind this one; the lease expires by itself.
            from ucoauth.base.observability import logger

            logger.warning("lease not released; it will expire", merchant_id=self.merchant_id)


class InstallationStore(RecoverySlots, ParkedEvents):
    """Installations and their leases, on the installations table."""

    def __init__(
        self, table_name: str, *, shards: int = 8, client: Callable[[], DynamoDBClient] = aws.dynamodb
    ) -> None:
        self.table_name = table_name
        self.shards = shards
        self._ddb = client

    # -- reads --------------------------------------------------------------------------

    def get(self, merchant_id: str, *, consistent: bool = True) -> Installation | None:
        """The installation, or None when the merchant never installed."""
        answer = self._ddb().get_item(
            TableName=self.table_name, Key=merchant_key(merchant_id), ConsistentRead=consistent
        )
        item = answer.get("Item")
        return Installation.from_item(item) if item else None

    # -- installation lifecycle ----------------------------------------------------------

    def save_installation(
        self, merchant_id: str, tokens: TokenFields, *, now: int, install_id: str | None = None
    ) -> Installation:
        """Create or replace (reinstall) an installation: see :meth:`replace_installation`."""
        return self.replace_installation(merchant_id, tokens, now=now, install_id=install_id)[0]

    def replace_installation(
        self,
        merchant_id: str,
        tokens: TokenFields,
        *,
        now: int,
        install_id: str | None = None,
        began_at: int | None = None,
        link: AccountLink | None = None,
        refuse_relink: bool = False,
    ) -> tuple[Installation, Replaced | None]:
        """Create or replace (reinstall) an installation: a new generation, status active.

        One UpdateItem, conditioned on the item as last seen (none at first; else its version: a
        refused write returns the item), sets every field: racing installs leave one consistent
        installation, an in-flight refresh loses its version check. The replaced tokens stay on
        the item as a recovery record (:mod:`~ucoauth.adapters.installations.recoveries`) by the
        same write, and come back as :class:`Replaced` (``ALL_OLD``) for their revoke.
        ``install_id`` makes a retried write idempotent; ``began_at`` is when the flow began;
        ``link`` (an install session) links the app's account in the same write (without one the
        item keeps its account); with ``refuse_relink`` a link to another account than an
        installed merchant's raises :class:`AccountConflictError` (nothing written).
        """
        before: dict[str, Any] | None = None  # a first install needs no read
        for _ in range(_INSTALL_ATTEMPTS):
            update, condition = self._install_update(merchant_id, tokens, now, install_id, began_at, before)
            if link is not None:
                linked = link_account(update, link, refuse_relink=refuse_relink)
                condition = " AND ".join([condition, *linked])
            try:
                answer = self._ddb().update_item(
                    TableName=self.table_name,
                    Key=merchant_key(merchant_id),
                    ConditionExpression=condition,
                    ReturnValues="ALL_OLD",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    **update.request(),
                )
            except ClientError as exc:
                if not is_conditional_failure(exc):
                    raise
                # The item is not as assumed: it comes back with the refusal, the next try builds
                # on it (no separate read). A retried request finds its own install id there.
                refused: Any = exc.response.get("Item")
                before = refused
                written = (before or {}).get("install_ids", {}).get("SS", [])
                if before is not None and install_id is not None and install_id in written:
                    return Installation.from_item(before), None
                if refuse_relink and link is not None and linked_elsewhere(before, link):
                    raise AccountConflictError(merchant_id) from None
                continue
            old: dict[str, Any] = answer.get("Attributes", {})
            return relinked(Installation.from_item(update.applied_to(old)), old, link), Replaced.of(old)
        raise StaleWriteError(merchant_id)  # installs kept racing: the caller gives the grant back

    def _install_update(
        self,
        merchant_id: str,
        tokens: TokenFields,
        now: int,
        install_id: str | None,
        began_at: int | None,
        before: dict[str, Any] | None,
    ) -> tuple[Update, str]:
        """The install's UpdateItem over the item as read (``before``), and its condition: that
        item unchanged (its version), and this install not written yet (``install_id``)."""
        update = Update().assign(
            merchant_id={"S": merchant_id},
            status={"S": ACTIVE},
            installed_at={"N": str(now)},
            began_at={"N": str(min(now, began_at) if began_at is not None else now)},
            refreshed_at={"N": str(now)},
            last_used_at={"N": str(now)},
        )
        update.increment("generation", "version").remove(*_CLEARED_BY_INSTALL)
        self._assign_tokens(update, merchant_id, tokens)
        # The merchant who just installed counts as using the first lifetime (a fresh history).
        if tokens.access_expires_at is not None:
            update.assign(used_until={"N": str(tokens.access_expires_at)})
        update.remove("previous_used_at")
        conditions = ["attribute_not_exists(pk)"]
        if before is not None:
            update.value(":seen", {"N": str(number(before, "version") or 0)})
            conditions = ["version = :seen"]
            replaced = replaced_record(Installation.from_item(before))
            if replaced is not None:
                # The grant this install replaces stays on the item, by this very write, until it
                # is revoked: an invocation that dies before queueing its revoke loses nothing.
                update.assign(**{replaced.attribute: replaced.as_attribute()})
        if install_id is not None:
            # Every install flow's id is kept (a few bytes per install): a retry whose first
            # attempt was applied finds its id, whatever other install came in between.
            update.add_to_set("install_ids", {"SS": [install_id]}).value(":install", {"S": install_id})
            conditions.append("(attribute_not_exists(install_ids) OR NOT contains(install_ids, :install))")
        return update, " AND ".join(conditions)

    def write_refreshed_tokens(
        self,
        merchant_id: str,
        *,
        expected_version: int,
        tokens: TokenFields,
        now: int,
        recovered: Recovery | None = None,
    ) -> Installation:
        """Store refreshed tokens if nobody wrote since ``expected_version``; releases the lease
        and settles the dead-holder evidence (the grant is known again).

        With ``recovered`` the tokens come from that recovery record: the condition is on its
        generation instead of the status (a live grant UltraCart issued beats a reauthorization
        someone marked meanwhile), and the record, still holding those tokens, is removed with
        the write.
        """
        update = Update().assign(refreshed_at={"N": str(now)}).increment("version")
        update.remove(
            "lease_owner",
            "lease_expires_at",
            "last_error",
            "last_error_at",
            "consecutive_failures",
            "awaiting_recovery",
        )
        update.name("#status", "status").value(":v", {"N": str(expected_version)})
        update.value(":active", {"S": ACTIVE})
        condition = "version = :v AND #status = :active"
        if recovered is not None:
            update.value(":g", {"N": str(recovered.generation)})
            update.value(":reauth", {"S": REAUTHORIZATION_REQUIRED})
            update.name("#slot", recovered.attribute).value(":kept", {"B": recovered.ciphertext})
            update.assign(status={"S": ACTIVE}).remove(recovered.attribute)
            condition = (
                "version = :v AND generation = :g AND #status IN (:active, :reauth) AND #slot.tokens = :kept"
            )
        self._assign_tokens(update, merchant_id, tokens)
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                ConditionExpression=condition,
                ReturnValues="ALL_NEW",
                **update.request(),
            )
        )
        if answer is None:
            raise StaleWriteError(merchant_id)
        return Installation.from_item(answer["Attributes"])

    def _assign_tokens(self, update: Update, merchant_id: str, tokens: TokenFields) -> None:
        """The token write's attributes: set when known, removed when not (nothing stale stays)."""
        update.assign(
            tokens={"B": tokens.ciphertext}, token_type={"S": tokens.token_type}, scope={"S": tokens.scope}
        )
        optional: dict[str, Any] = {
            "access_expires_at": None
            if tokens.access_expires_at is None
            else {"N": str(tokens.access_expires_at)},
            # UltraCart did not say when the token expires: the schedule uses an assumed lifetime.
            "expiry_assumed": {"BOOL": True} if tokens.expiry_assumed else None,
            "token_lifetime": None if tokens.token_lifetime is None else {"N": str(tokens.token_lifetime)},
            # The sparse index: only installations that will need a refresh carry these two.
            "due_at": None if tokens.due_at is None else {"N": str(tokens.due_at)},
            "due_shard": None if tokens.due_at is None else {"S": due_shard(merchant_id, self.shards)},
        }
        if tokens.used_at is not None:
            # A read this write serves is recorded. Its lifetime counts as used (no mark write for
            # it later) when it is due ahead anyway; otherwise a later read of it still records a
            # use, which brings it to being due ahead (see ``ucoauth.usecases.tokens``).
            ahead = tokens.due_at is not None and tokens.due_at < (tokens.access_expires_at or 0)
            optional.update(
                last_used_at={"N": str(tokens.used_at)},
                used_until=optional["access_expires_at"] if ahead else None,
                previous_used_at=None
                if tokens.previous_used_at is None
                else {"N": str(tokens.previous_used_at)},
            )
        for attribute, value in optional.items():
            if value is None:
                update.remove(attribute)
            else:
                update.assign(**{attribute: value})

    def mark_reauthorization_required(
        self, merchant_id: str, *, expected_version: int, now: int
    ) -> int | None:
        """UltraCart refused the grant: out of the due index, lease released.

        Returns the new version, or None when the installation changed since ``expected_version``.
        """
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=(
                    "SET #status = :reauth, version = version + :one, status_changed_at = :now "
                    "REMOVE due_at, due_shard, lease_owner, lease_expires_at, awaiting_recovery"
                ),
                ConditionExpression="version = :v AND #status = :active",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":reauth": {"S": REAUTHORIZATION_REQUIRED},
                    ":active": {"S": ACTIVE},
                    ":v": {"N": str(expected_version)},
                    ":one": {"N": "1"},
                    ":now": {"N": str(now)},
                },
                ReturnValues="UPDATED_NEW",
            )
        )
        if answer is None:
            return None
        return number(answer["Attributes"], "version")

    def record_failure(self, merchant_id: str, *, code: str, now: int) -> None:
        """A refresh failed: the last error (a short code, never a secret) and the count since the
        last stored token, for operators. Best effort: the caller ignores AWS errors."""
        if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=(
                    "SET last_error = :code, last_error_at = :now ADD consecutive_failures :one"
                ),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={
                    ":code": {"S": code[:64]},
                    ":now": {"N": str(now)},
                    ":one": {"N": "1"},
                },
            )
        )

    def mark_used(
        self,
        merchant_id: str,
        *,
        now: int,
        expires: int,
        previous_used_at: int | None,
        due_at: int | None = None,
    ) -> bool:
        """The first read of the lifetime that expires at ``expires``: record it (it drives which
        merchants are refreshed ahead, see ``ucoauth.core.issued.in_demand``); with ``due_at``, the
        lifetime becomes due ahead of its expiry. Conditional: only the first read of a lifetime
        writes, and a lifetime a refresh replaced meanwhile is left alone. False when the
        condition failed (another read marked it first, or the tokens changed)."""
        update = Update().assign(used_until={"N": str(expires)}, last_used_at={"N": str(now)})
        if previous_used_at is not None:
            update.assign(previous_used_at={"N": str(previous_used_at)})
        if due_at is not None:
            update.assign(due_at={"N": str(due_at)}, due_shard={"S": due_shard(merchant_id, self.shards)})
        update.value(":exp", {"N": str(expires)})
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                ConditionExpression=(
                    "access_expires_at = :exp AND (attribute_not_exists(used_until) OR used_until <> :exp)"
                ),
                **update.request(),
            )
        )
        return answer is not None

    def mark_uninstalled(
        self,
        merchant_id: str,
        *,
        expected_version: int,
        reason: str,
        revoke_confirmed: bool,
        now: int,
        ttl: int,
        recoveries: tuple[str, ...] = (),
    ) -> int | None:
        """Crypto-shred: delete the ciphertext (and the recovery records ``recoveries`` names: those
        the uninstall revoked), keep a tombstone with a TTL. A record kept meanwhile stays, and the
        next lease holder revokes it.

        ``revoke_confirmed`` says whether UltraCart confirmed the revoke of every token it held.
        Returns the new version, or None when the installation changed since ``expected_version``.
        """
        names = {"#status": "status", "#ttl": "ttl"} | {f"#k{i}": slot for i, slot in enumerate(recoveries)}
        slots = "".join(f", #k{i}" for i in range(len(recoveries)))
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=(
                    "SET #status = :gone, version = version + :one, uninstalled_at = :now, "
                    "uninstall_reason = :why, revoke_confirmed = :confirmed, #ttl = :ttl "
                    f"REMOVE tokens, {LEGACY_RECOVERY}, due_at, due_shard, lease_owner, lease_expires_at, "
                    f"revoke_pending_since, awaiting_recovery{slots}"
                ),
                ConditionExpression="version = :v",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    ":gone": {"S": UNINSTALLED},
                    ":v": {"N": str(expected_version)},
                    ":one": {"N": "1"},
                    ":now": {"N": str(now)},
                    ":why": {"S": reason},
                    ":confirmed": {"BOOL": revoke_confirmed},
                    ":ttl": {"N": str(ttl)},
                },
                ReturnValues="UPDATED_NEW",
            )
        )
        if answer is None:
            return None
        return number(answer["Attributes"], "version")

    def mark_uninstalling(
        self, merchant_id: str, *, expected_version: int, now: int, pending: Recovery | None
    ) -> int | None:
        """The merchant uninstalled and UltraCart could not be reached to revoke: stop serving and
        refreshing the tokens (out of the due index), keep them only for the revoke retries.

        ``pending`` (the stored tokens as a recovery record of this generation) is kept beside
        them, unless that generation's slot holds a record already: should the merchant reinstall
        before the revoke succeeds, the install replaces ``tokens`` but not the record, and the
        next lease holder revokes the old grant.
        Returns the new version, or None when the installation changed since ``expected_version``.
        """
        sets = (
            "SET #status = :uninstalling, version = version + :one, "
            "revoke_pending_since = if_not_exists(revoke_pending_since, :now)"
        )
        values: dict[str, Any] = {
            ":uninstalling": {"S": UNINSTALLING},
            ":v": {"N": str(expected_version)},
            ":one": {"N": "1"},
            ":now": {"N": str(now)},
        }
        names = {"#status": "status"}
        if pending is not None:
            sets += ", #slot = if_not_exists(#slot, :pending)"
            values[":pending"] = pending.as_attribute()
            names["#slot"] = pending.attribute
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=sets + " REMOVE due_at, due_shard",
                ConditionExpression="version = :v",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        )
        if answer is None:
            return None
        return number(answer["Attributes"], "version")

    # -- refresh lease ----------------------------------------------------------------------

    def lease(
        self,
        merchant_id: str,
        *,
        owner: str,
        now: int,
        until: int,
        due_before: int | None = None,
        through_hold: bool = False,
    ) -> Lease:
        """Take the merchant's lease until ``until`` (conditional write; owner + expiry, never TTL).

        ``until`` lies past the holder's invocation deadline, so nobody takes the lease while the
        holder could still write. Use the result as a scope: ``with store.lease(...) as lease:``
        releases it on exit unless a write already cleared it. The installation comes back with
        the take (no separate read). Raises :class:`LeaseBusyError` when another owner holds an
        unexpired lease, :class:`NotInstalledError` when there is no installation and, when
        ``due_before`` is given, :class:`NotDueError` when it is no longer due.

        ``through_hold``: a ``hold:`` lease does not stand in the way (a queued message the hold
        must not keep waiting: the recovery it waits for, an uninstall, a replaced grant's revoke).
        A lease the previous holder left behind (not a hold) is recorded on the item as the
        dead-holder evidence (``awaiting_recovery``), which no release removes.
        """
        condition, values = _lease_condition(owner, now, until, due_before, through_hold=through_hold)
        try:
            # ALL_OLD: the item as it was, which also tells whether a previous holder left its
            # lease behind (it died, ran out of time or could not write) and until when.
            answer = self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression="SET lease_owner = :owner, lease_expires_at = :until",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            old: Any = exc.response.get("Item")
            if not old:
                raise NotInstalledError(merchant_id) from None
            current = Installation.from_item(old)
            if current.lease_owner == owner:
                # Our own take was applied and its answer lost (a timeout, then botocore's retry).
                return Lease(self, dataclasses.replace(current, previous_lease_until=None), owner)
            if due_before is None or current.lease_held(now):
                raise LeaseBusyError(merchant_id, until=current.lease_expires_at) from None
            raise NotDueError(merchant_id) from None
        before = Installation.from_item(answer["Attributes"])
        installation = dataclasses.replace(
            before,
            lease_owner=owner,
            lease_expires_at=until,
            previous_lease_until=before.lease_expires_at if before.lease_owner else None,
            previous_lease_owner=before.lease_owner,
        )
        return Lease(self, self._note_dead_holder(installation, owner), owner)

    def release_lease(self, merchant_id: str, *, owner: str) -> None:
        """Release the lease if we still own it (a no-op otherwise)."""
        if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression="REMOVE lease_owner, lease_expires_at",
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        )


def _lease_condition(
    owner: str, now: int, until: int, due_before: int | None, *, through_hold: bool
) -> tuple[str, dict[str, Any]]:
    """The lease take's condition and values (see :meth:`InstallationStore.lease`)."""
    free = "attribute_not_exists(lease_expires_at) OR lease_expires_at <= :now"
    values: dict[str, Any] = {
        ":owner": {"S": owner},
        ":now": {"N": str(now)},
        ":until": {"N": str(until)},
    }
    if through_hold:
        free += " OR begins_with(lease_owner, :hold)"
        values[":hold"] = {"S": HOLD_PREFIX}
    condition = f"attribute_exists(pk) AND ({free})"
    if due_before is not None:
        condition += " AND due_at <= :due"
        values[":due"] = {"N": str(due_before)}
    return condition, values
