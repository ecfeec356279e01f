"""DynamoDB data access: installations, refresh leases, OAuth state, webhook ids, pacing.

One table (see docs/ARCHITECTURE.md). Every write that can race is conditional; the
low-level client is used so each call is exactly one request and nothing is hidden.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth import aws
from ucoauth.errors import (
    LeaseBusyError,
    NotDueError,
    NotInstalledError,
    StaleWriteError,
    StateExpiredError,
    StateForeignBrowserError,
    StateUnknownError,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ACTIVE = "active"
REAUTHORIZATION_REQUIRED = "reauthorization_required"
# Uninstalled by the merchant; the revoke at UltraCart is still being retried (tokens kept only
# for that, the token API answers not_installed).
UNINSTALLING = "uninstalling"
UNINSTALLED = "uninstalled"
DUE_INDEX = "DueIndex"
HOLD_PREFIX = "hold:"
_INSTALLATION_SK = "INSTALLATION"


def merchant_key(merchant_id: str) -> dict[str, Any]:
    """Primary key of a merchant's installation item."""
    return {"pk": {"S": f"MERCHANT#{merchant_id}"}, "sk": {"S": _INSTALLATION_SK}}


def digest(value: str) -> str:
    """SHA-256 hex of a secret: what the table stores instead of the secret."""
    return hashlib.sha256(value.encode()).hexdigest()


def due_shard(merchant_id: str, shards: int) -> str:
    """Stable write shard of ``DueIndex`` for a merchant."""
    return str(int(hashlib.blake2b(merchant_id.encode(), digest_size=4).hexdigest(), 16) % shards)


def _is_conditional_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _if_condition_holds(write: Callable[[], Any]) -> Any | None:
    """Run a conditional write; None when its condition failed (someone else got there first)."""
    try:
        return write()
    except ClientError as exc:
        if _is_conditional_failure(exc):
            return None
        raise


def _n(item: dict[str, Any], name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else None


def _s(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value["S"] if value and "S" in value else None


@dataclass(frozen=True, slots=True)
class Recovery:
    """Tokens UltraCart issued that could not be written to the installation, kept encrypted.

    ``generation`` is the installation they belong to: the next lease holder adopts them when
    it is still the current generation, and revokes them at UltraCart otherwise.
    """

    ciphertext: bytes = field(repr=False)
    generation: int
    issued_at: int
    expires_in: int | None
    token_type: str
    scope: str

    def as_attribute(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "tokens": {"B": self.ciphertext},
            "generation": {"N": str(self.generation)},
            "issued_at": {"N": str(self.issued_at)},
            "token_type": {"S": self.token_type},
            "scope": {"S": self.scope},
        }
        if self.expires_in is not None:
            value["expires_in"] = {"N": str(self.expires_in)}
        return {"M": value}

    @classmethod
    def from_attribute(cls, attribute: Any) -> Recovery | None:
        if not attribute or "M" not in attribute:
            return None
        value = attribute["M"]
        return cls(
            ciphertext=bytes(value["tokens"]["B"]),
            generation=_n(value, "generation") or 0,
            issued_at=_n(value, "issued_at") or 0,
            expires_in=_n(value, "expires_in"),
            token_type=_s(value, "token_type") or "bearer",
            scope=_s(value, "scope") or "",
        )


@dataclass(frozen=True, slots=True)
class Installation:
    """A merchant's installation as stored (the tokens stay encrypted)."""

    merchant_id: str
    status: str
    generation: int
    version: int
    installed_at: int
    tokens_ciphertext: bytes | None = field(repr=False)
    token_type: str
    scope: str
    access_expires_at: int | None
    token_lifetime: int | None
    due_at: int | None
    lease_owner: str | None
    lease_expires_at: int | None
    refreshed_at: int | None
    uninstalled_at: int | None
    uninstall_reason: str | None
    expiry_assumed: bool = False
    pending_event: str | None = None
    recovery: Recovery | None = None
    revoke_confirmed: bool | None = None
    revoke_pending_since: int | None = None
    last_used_at: int | None = None
    # Set only on the installation a lease take returns: the horizon and owner of a lease the
    # previous holder never released (it died, ran out of time, or could not write), else None.
    previous_lease_until: int | None = None
    previous_lease_owner: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Installation:
        """Build from a DynamoDB item (low-level attribute values)."""
        blob = item.get("tokens")
        return cls(
            merchant_id=_s(item, "merchant_id") or "",
            status=_s(item, "status") or ACTIVE,
            generation=_n(item, "generation") or 0,
            version=_n(item, "version") or 0,
            installed_at=_n(item, "installed_at") or 0,
            tokens_ciphertext=bytes(blob["B"]) if blob else None,
            token_type=_s(item, "token_type") or "bearer",
            scope=_s(item, "scope") or "",
            access_expires_at=_n(item, "access_expires_at"),
            token_lifetime=_n(item, "token_lifetime"),
            due_at=_n(item, "due_at"),
            lease_owner=_s(item, "lease_owner"),
            lease_expires_at=_n(item, "lease_expires_at"),
            refreshed_at=_n(item, "refreshed_at"),
            uninstalled_at=_n(item, "uninstalled_at"),
            uninstall_reason=_s(item, "uninstall_reason"),
            expiry_assumed=bool(item.get("expiry_assumed", {}).get("BOOL", False)),
            pending_event=_s(item, "pending_event"),
            recovery=Recovery.from_attribute(item.get("recovery")),
            revoke_confirmed=item["revoke_confirmed"]["BOOL"] if "revoke_confirmed" in item else None,
            revoke_pending_since=_n(item, "revoke_pending_since"),
            last_used_at=_n(item, "last_used_at"),
        )

    def lease_held(self, now: float) -> bool:
        """Someone holds an unexpired refresh lease."""
        return self.lease_owner is not None and (self.lease_expires_at or 0) > now


@dataclass(frozen=True, slots=True)
class TokenFields:
    """What a token write stores besides the ciphertext."""

    ciphertext: bytes = field(repr=False)
    token_type: str
    scope: str
    access_expires_at: int | None
    token_lifetime: int | None
    due_at: int | None
    expiry_assumed: bool = False


@dataclass(frozen=True, slots=True)
class Replaced:
    """Tokens a reinstall took off the item: a grant still live at UltraCart until revoked."""

    ciphertext: bytes = field(repr=False)
    generation: int
    status: str

    @classmethod
    def of(cls, old: dict[str, Any]) -> Replaced | None:
        blob = old.get("tokens")
        if not blob:
            return None
        return cls(bytes(blob["B"]), _n(old, "generation") or 0, _s(old, "status") or ACTIVE)


def _after_update(
    old: dict[str, Any], sets: list[str], removes: list[str], values: dict[str, Any], names: dict[str, str]
) -> Installation:
    """The installation an install's UpdateItem left, from the item before it and the update's
    own parts (the write answers ``ALL_OLD``, which the caller needs for the replaced tokens)."""
    removed = {names.get(r, r) for r in removes}
    item = {k: v for k, v in old.items() if k not in removed}
    for action in sets:
        target, operand = (part.strip() for part in action.split("=", 1))
        if operand in values:
            item[names.get(target, target)] = values[operand]
    for counter in ("generation", "version"):
        item[counter] = {"N": str((_n(old, counter) or 0) + 1)}
    return Installation.from_item(item)


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
            from ucoauth.observability import logger

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
        self, merchant_id: str, tokens: TokenFields, *, now: int, install_id: str | None = None
    ) -> tuple[Installation, Replaced | None]:
        """Create or replace (reinstall) an installation: a new generation, status active.

        One UpdateItem sets every field at once, so two installs racing leave one consistent
        installation (the later one), and any in-flight refresh loses its version check.
        ``install_id`` (a digest unique to one install flow) makes a retried write idempotent: a
        write whose first attempt was applied but whose answer was lost does not count a second
        generation.

        The item as it was comes back with the write (``ALL_OLD``): tokens it held are returned as
        :class:`Replaced`, exactly those this write took off the item (even when two installs
        race), so the caller can have that grant revoked at UltraCart instead of dropping it.
        """
        names = {"#status": "status", "#ttl": "ttl", "#scope": "scope"}
        values: dict[str, Any] = {
            ":mid": {"S": merchant_id},
            ":active": {"S": ACTIVE},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":now": {"N": str(now)},
        }
        condition: dict[str, Any] = {}
        sets = [
            "merchant_id = :mid",
            "#status = :active",
            "generation = if_not_exists(generation, :zero) + :one",
            "version = if_not_exists(version, :zero) + :one",
            "installed_at = :now",
            "refreshed_at = :now",
            "last_used_at = :now",
        ]
        removes = [
            "lease_owner",
            "lease_expires_at",
            "uninstalled_at",
            "uninstall_reason",
            "revoke_confirmed",
            "revoke_pending_since",
            "last_error",
            "last_error_at",
            "consecutive_failures",
            "#ttl",
        ]
        self._token_updates(merchant_id, tokens, sets, removes, values, names)
        adds = ""
        if install_id is not None:
            # Every install flow's id is kept (a few bytes per install): a retry whose first
            # attempt was applied finds its id, whatever other install came in between.
            values[":install"] = {"S": install_id}
            values[":installs"] = {"SS": [install_id]}
            adds = " ADD install_ids :installs"
            first_time = "attribute_not_exists(install_ids) OR NOT contains(install_ids, :install)"
            condition = {"ConditionExpression": first_time}
        answer = _if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}{adds}",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
                **condition,
            )
        )
        if answer is None:  # this very install was already written (a retried request)
            done = self.get(merchant_id)
            assert done is not None
            return done, None
        old: dict[str, Any] = answer.get("Attributes", {})
        return _after_update(old, sets, removes, values, names), Replaced.of(old)

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
        names = {"#status": "status", "#scope": "scope"}
        values: dict[str, Any] = {
            ":v": {"N": str(expected_version)},
            ":one": {"N": "1"},
            ":now": {"N": str(now)},
            ":active": {"S": ACTIVE},
        }
        sets = ["version = version + :one", "refreshed_at = :now"]
        removes = ["lease_owner", "lease_expires_at", "last_error", "last_error_at", "consecutive_failures"]
        condition = "version = :v AND #status = :active"
        if recovered_generation is not None:
            values[":g"] = {"N": str(recovered_generation)}
            values[":reauth"] = {"S": REAUTHORIZATION_REQUIRED}
            sets.append("#status = :active")
            removes.append("recovery")
            condition = "version = :v AND generation = :g AND #status IN (:active, :reauth)"
        self._token_updates(merchant_id, tokens, sets, removes, values, names)
        answer = _if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        )
        if answer is None:
            raise StaleWriteError(merchant_id)
        return Installation.from_item(answer["Attributes"])

    def _token_updates(
        self,
        merchant_id: str,
        tokens: TokenFields,
        sets: list[str],
        removes: list[str],
        values: dict[str, Any],
        names: dict[str, str],
    ) -> None:
        values[":tokens"] = {"B": tokens.ciphertext}
        values[":tt"] = {"S": tokens.token_type}
        values[":scope"] = {"S": tokens.scope}
        sets += ["tokens = :tokens", "token_type = :tt", "#scope = :scope"]
        if tokens.access_expires_at is not None:
            values[":exp"] = {"N": str(tokens.access_expires_at)}
            sets.append("access_expires_at = :exp")
        else:
            removes.append("access_expires_at")
        if tokens.expiry_assumed:
            # UltraCart did not say when the token expires: the schedule uses an assumed lifetime.
            values[":assumed"] = {"BOOL": True}
            sets.append("expiry_assumed = :assumed")
        else:
            removes.append("expiry_assumed")
        if tokens.token_lifetime is not None:
            values[":life"] = {"N": str(tokens.token_lifetime)}
            sets.append("token_lifetime = :life")
        else:
            removes.append("token_lifetime")
        if tokens.due_at is not None:
            # The sparse index: only installations that will need a refresh carry these two.
            values[":due"] = {"N": str(tokens.due_at)}
            values[":shard"] = {"S": due_shard(merchant_id, self.shards)}
            sets += ["due_at = :due", "due_shard = :shard"]
        else:
            removes += ["due_at", "due_shard"]

    def mark_reauthorization_required(
        self, merchant_id: str, *, expected_version: int, now: int
    ) -> int | None:
        """UltraCart refused the grant: out of the due index, lease released.

        Returns the new version, or None when the installation changed since ``expected_version``.
        """
        answer = _if_condition_holds(
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
        return _n(answer["Attributes"], "version")

    def record_failure(self, merchant_id: str, *, code: str, now: int) -> None:
        """A refresh failed: the last error (a short code, never a secret) and the count since the
        last stored token, for operators. Best effort: the caller ignores AWS errors."""
        _if_condition_holds(
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
        _if_condition_holds(
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
        answer = _if_condition_holds(
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
        return _n(answer["Attributes"], "version")

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
        answer = _if_condition_holds(
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
        return _n(answer["Attributes"], "version")

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
        _if_condition_holds(
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
        answer = _if_condition_holds(
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
        _if_condition_holds(
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
            if not _is_conditional_failure(exc):
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
        _if_condition_holds(
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
        answer = _if_condition_holds(
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

    # -- planner --------------------------------------------------------------------------

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
        (default: the shards written to) is how many to read (``ucoauth.shards``).
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
                    pk = _s(item, "pk") or ""
                    if pk.startswith("MERCHANT#"):
                        found.append((_n(item, "due_at") or 0, pk.removeprefix("MERCHANT#")))
                        taken += 1
                last = page.get("LastEvaluatedKey")
                if not last:
                    break
                kwargs["ExclusiveStartKey"] = dict(last)
        found.sort()
        return [merchant for _, merchant in (found if limit is None else found[:limit])]


class StateStore:
    """One-time OAuth state: stored hashed, bound to a browser, consumed once."""

    def __init__(self, table_name: str, *, client: Callable[[], DynamoDBClient] = aws.dynamodb) -> None:
        self.table_name = table_name
        self._ddb = client

    @staticmethod
    def _key(state: str) -> dict[str, Any]:
        return {"pk": {"S": f"STATE#{digest(state)}"}, "sk": {"S": "STATE"}}

    def put(self, state: str, *, browser_nonce: str, now: int, ttl_seconds: int) -> None:
        """Store the state's hash with its expiry and the hash of the browser's cookie nonce."""
        self._ddb().put_item(
            TableName=self.table_name,
            Item={
                **self._key(state),
                "browser": {"S": digest(browser_nonce)},
                "expires_at": {"N": str(now + ttl_seconds)},
                "ttl": {"N": str(now + ttl_seconds + 3600)},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def issued_to(self, state: str, *, browser_nonce: str) -> bool:
        """Whether ``state`` is stored and was issued to the browser holding ``browser_nonce``."""
        found = self._ddb().get_item(
            TableName=self.table_name, Key=self._key(state), ProjectionExpression="browser"
        )
        stored = found.get("Item", {}).get("browser", {}).get("S")
        return stored is not None and secrets.compare_digest(stored, digest(browser_nonce))

    def consume(self, state: str, *, browser_nonce: str, now: int) -> None:
        """Delete the state in one conditional write that checks existence, expiry and browser.

        When the condition fails, the item as it was (``ALL_OLD``) says why, without a second
        read: :class:`StateUnknownError` (none: used, or never issued),
        :class:`StateExpiredError`, or :class:`StateForeignBrowserError` (another cookie nonce).
        """
        try:
            self._ddb().delete_item(
                TableName=self.table_name,
                Key=self._key(state),
                ConditionExpression="attribute_exists(pk) AND expires_at > :now AND browser = :b",
                ExpressionAttributeValues={":now": {"N": str(now)}, ":b": {"S": digest(browser_nonce)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _is_conditional_failure(exc):
                raise
            old: Any = exc.response.get("Item")
            if not old:
                raise StateUnknownError("unknown or already used state") from None
            if (_n(old, "expires_at") or 0) <= now:
                raise StateExpiredError("expired state") from None
            raise StateForeignBrowserError("state bound to another browser nonce") from None


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof, held by one browser as a cookie, that it just completed an install (no secret)."""

    merchant_id: str
    reinstall: bool
    # sha256 of the state the install consumed (the same hash the state item was keyed by), so a
    # reload of exactly that callback URL can be recognised; never the state itself.
    state_digest: str = field(default="", repr=False)


class ReceiptStore:
    """Short-lived success receipts, so the success page survives a reload without code or state.

    The browser holds a random nonce in a ``__Host-`` cookie; the table holds only its hash.
    """

    def __init__(self, table_name: str, *, client: Callable[[], DynamoDBClient] = aws.dynamodb) -> None:
        self.table_name = table_name
        self._ddb = client

    @staticmethod
    def _key(nonce: str) -> dict[str, Any]:
        return {"pk": {"S": f"RECEIPT#{digest(nonce)}"}, "sk": {"S": "RECEIPT"}}

    def put(self, nonce: str, receipt: Receipt, *, now: int, ttl_seconds: int) -> None:
        """Store the receipt under the nonce's hash until ``now + ttl_seconds``."""
        self._ddb().put_item(
            TableName=self.table_name,
            Item={
                **self._key(nonce),
                "merchant_id": {"S": receipt.merchant_id},
                "reinstall": {"BOOL": receipt.reinstall},
                "state": {"S": receipt.state_digest},
                "expires_at": {"N": str(now + ttl_seconds)},
                "ttl": {"N": str(now + ttl_seconds + 3600)},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get(self, nonce: str, *, now: int) -> Receipt | None:
        """The receipt the nonce proves, or None when unknown or expired (TTL deletion is lazy)."""
        item = self._ddb().get_item(TableName=self.table_name, Key=self._key(nonce)).get("Item")
        if not item or (_n(item, "expires_at") or 0) <= now:
            return None
        return Receipt(
            merchant_id=_s(item, "merchant_id") or "",
            reinstall=bool(item.get("reinstall", {}).get("BOOL", False)),
            state_digest=_s(item, "state") or "",
        )


class WebhookIdStore:
    """Webhook ids already acted on, so a redelivery is acknowledged but not acted on twice."""

    def __init__(self, table_name: str, *, client: Callable[[], DynamoDBClient] = aws.dynamodb) -> None:
        self.table_name = table_name
        self._ddb = client

    @staticmethod
    def _key(webhook_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"WEBHOOK#{digest(webhook_id)}"}, "sk": {"S": "WEBHOOK"}}

    def seen(self, webhook_id: str, *, now: int) -> bool:
        """Whether an uninstall with this id was already queued (an expired record counts as absent)."""
        item = (
            self._ddb()
            .get_item(TableName=self.table_name, Key=self._key(webhook_id), ConsistentRead=True)
            .get("Item")
        )
        return item is not None and int(item.get("ttl", {}).get("N", "0")) >= now

    def record(self, webhook_id: str, *, now: int, ttl_seconds: int) -> bool:
        """Remember an id whose uninstall is queued; False if it was already recorded."""
        answer = _if_condition_holds(
            lambda: self._ddb().put_item(
                TableName=self.table_name,
                Item={**self._key(webhook_id), "ttl": {"N": str(now + ttl_seconds)}},
                # TTL deletion is lazy: an expired record counts as absent.
                ConditionExpression="attribute_not_exists(pk) OR #ttl < :now",
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        )
        return answer is not None


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
        answer = _if_condition_holds(
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
