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
    REAUTHORIZATION_REQUIRED,
    UNINSTALLED,
    UNINSTALLING,
    Installation,
    Recovery,
    Replaced,
    TokenFields,
    link_account,
)
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

    from ucoauth.usecases.install_sessions import AccountLink


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
)


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


class InstallationStore:
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

        One UpdateItem sets every field at once, so two installs racing leave one consistent
        installation (the later one), and any in-flight refresh loses its version check.
        ``install_id`` (a digest unique to one install flow) makes a retried write idempotent: a
        write whose first attempt was applied but whose answer was lost does not count a second
        generation. ``began_at`` is when the install flow began. ``link`` (an install session)
        links the installation to the app's account in the same write; without one the item keeps
        the account it has. With ``refuse_relink``, a link to another account than the one an
        installed merchant has raises :class:`AccountConflictError` (nothing written).

        The item as it was comes back with the write (``ALL_OLD``): tokens it held are returned as
        :class:`Replaced`, exactly those this write took off the item (even when two installs
        race), so the caller can have that grant revoked at UltraCart instead of dropping it.
        """
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
        conditions: list[str] = []
        if install_id is not None:
            # Every install flow's id is kept (a few bytes per install): a retry whose first
            # attempt was applied finds its id, whatever other install came in between.
            update.add_to_set("install_ids", {"SS": [install_id]}).value(":install", {"S": install_id})
            conditions.append("(attribute_not_exists(install_ids) OR NOT contains(install_ids, :install))")
        if link is not None:
            conditions += link_account(update, link, refuse_relink=refuse_relink)
        old = self._install_write(merchant_id, update, conditions, install_id)
        if old is None:  # this very install was already written (a retried request)
            done = self.get(merchant_id)
            assert done is not None
            return done, None
        installation = Installation.from_item(update.applied_to(old))
        before = old.get("app_account_id", {}).get("S")
        if link is not None and before is not None and before != link.app_account_id:
            installation = dataclasses.replace(installation, relinked_from=before)
        return installation, Replaced.of(old)

    def _install_write(
        self, merchant_id: str, update: Update, conditions: list[str], install_id: str | None
    ) -> dict[str, Any] | None:
        """The install's one UpdateItem: the item as it was, or None when this very install was
        already written. Raises :class:`AccountConflictError` when the relink condition failed."""
        condition: dict[str, Any] = {"ConditionExpression": " AND ".join(conditions)} if conditions else {}
        try:
            answer = self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **update.request(),
                **condition,
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            held: Any = exc.response.get("Item") or {}
            if install_id is not None and install_id in held.get("install_ids", {}).get("SS", []):
                return None
            raise AccountConflictError(merchant_id) from None
        old: dict[str, Any] = answer.get("Attributes", {})
        return old

    def write_refreshed_tokens(
        self,
        merchant_id: str,
        *,
        expected_version: int,
        tokens: TokenFields,
        now: int,
        recovered_generation: int | None = None,
    ) -> Installation:
        """Store refreshed tokens if nobody wrote since ``expected_version``; releases the lease.

        With ``recovered_generation`` the tokens come from a recovery record: the condition is
        on that generation instead of the status (a live grant UltraCart issued beats a
        reauthorization someone marked meanwhile), and the record is removed with the write.
        """
        update = Update().assign(refreshed_at={"N": str(now)}).increment("version")
        update.remove(
            "lease_owner", "lease_expires_at", "last_error", "last_error_at", "consecutive_failures"
        )
        update.name("#status", "status").value(":v", {"N": str(expected_version)})
        update.value(":active", {"S": ACTIVE})
        condition = "version = :v AND #status = :active"
        if recovered_generation is not None:
            update.value(":g", {"N": str(recovered_generation)})
            update.value(":reauth", {"S": REAUTHORIZATION_REQUIRED})
            update.assign(status={"S": ACTIVE}).remove("recovery")
            condition = "version = :v AND generation = :g AND #status IN (:active, :reauth)"
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
                    "REMOVE due_at, due_shard, lease_owner, lease_expires_at"
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

    def mark_used(self, merchant_id: str, *, now: int, due_at: int | None = None) -> None:
        """Someone asked for the merchant's token now (drives which merchants are refreshed ahead);
        with ``due_at``, an idle schedule is brought back to refreshing ahead of expiry."""
        sets = "SET last_used_at = :now"
        values: dict[str, Any] = {":now": {"N": str(now)}}
        if due_at is not None:
            sets += ", due_at = :due, due_shard = :shard"
            values[":due"] = {"N": str(due_at)}
            values[":shard"] = {"S": due_shard(merchant_id, self.shards)}
        if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=sets,
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=values,
            )
        )

    def mark_uninstalled(
        self,
        merchant_id: str,
        *,
        expected_version: int,
        reason: str,
        revoke_confirmed: bool,
        now: int,
        ttl: int,
    ) -> int | None:
        """Crypto-shred: delete the ciphertext (and any recovery record), keep a tombstone with a TTL.

        ``revoke_confirmed`` says whether UltraCart confirmed the revoke of every token it held.
        Returns the new version, or None when the installation changed since ``expected_version``.
        """
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=(
                    "SET #status = :gone, version = version + :one, uninstalled_at = :now, "
                    "uninstall_reason = :why, revoke_confirmed = :confirmed, #ttl = :ttl "
                    "REMOVE tokens, recovery, due_at, due_shard, lease_owner, lease_expires_at, "
                    "revoke_pending_since"
                ),
                ConditionExpression="version = :v",
                ExpressionAttributeNames={"#status": "status", "#ttl": "ttl"},
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
        them: should the merchant reinstall before the revoke succeeds, the install replaces
        ``tokens`` but not the record, and the next lease holder revokes the old grant.
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
        if pending is not None:
            sets += ", recovery = :pending"
            values[":pending"] = pending.as_attribute()
        answer = if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=sets + " REMOVE due_at, due_shard",
                ConditionExpression="version = :v",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        )
        if answer is None:
            return None
        return number(answer["Attributes"], "version")

    # -- tokens that could not be written (recovery record) --------------------------------

    def keep_recovery(self, merchant_id: str, recovery: Recovery, *, now: int) -> None:
        """Keep tokens UltraCart issued beside the installation (no version condition: it is a
        side slot that the next lease holder reconciles). The item is put back in the due index
        (due now), so the planner brings it to a worker soon. Raises AWS errors."""
        self._ddb().update_item(
            TableName=self.table_name,
            Key=merchant_key(merchant_id),
            UpdateExpression="SET recovery = :r, due_at = :now, due_shard = :shard",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={
                ":r": recovery.as_attribute(),
                ":now": {"N": str(now)},
                ":shard": {"S": due_shard(merchant_id, self.shards)},
            },
        )

    def clear_recovery(self, merchant_id: str, *, issued_at: int, active: bool) -> None:
        """Forget a recovery record once it was adopted or revoked (only that one); an inactive
        installation also leaves the due index it was put in for the record."""
        removes = "REMOVE recovery" + ("" if active else ", due_at, due_shard")
        if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=removes,
                ConditionExpression="recovery.issued_at = :t",
                ExpressionAttributeValues={":t": {"N": str(issued_at)}},
            )
        )

    # -- events that could not be published (a small outbox on the item) -------------------

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

    # -- refresh lease ----------------------------------------------------------------------

    def lease(
        self, merchant_id: str, *, owner: str, now: int, until: int, due_before: int | None = None
    ) -> Lease:
        """Take the merchant's lease until ``until`` (conditional write; owner + expiry, never TTL).

        ``until`` lies past the holder's invocation deadline, so nobody takes the lease while the
        holder could still write. Use the result as a scope: ``with store.lease(...) as lease:``
        releases it on exit unless a write already cleared it. The installation comes back with
        the take (no separate read). Raises :class:`LeaseBusyError` when another owner holds an
        unexpired lease, :class:`NotInstalledError` when there is no installation and, when
        ``due_before`` is given, :class:`NotDueError` when it is no longer due.
        """
        condition = (
            "attribute_exists(pk) AND (attribute_not_exists(lease_expires_at) OR lease_expires_at <= :now)"
        )
        values: dict[str, Any] = {
            ":owner": {"S": owner},
            ":now": {"N": str(now)},
            ":until": {"N": str(until)},
        }
        if due_before is not None:
            condition += " AND due_at <= :due"
            values[":due"] = {"N": str(due_before)}
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
                raise LeaseBusyError(merchant_id) from None
            raise NotDueError(merchant_id) from None
        before = Installation.from_item(answer["Attributes"])
        installation = dataclasses.replace(
            before,
            lease_owner=owner,
            lease_expires_at=until,
            previous_lease_until=before.lease_expires_at if before.lease_owner else None,
            previous_lease_owner=before.lease_owner,
        )
        return Lease(self, installation, owner)

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
