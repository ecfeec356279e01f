"""DynamoDB data access: installations, refresh leases, OAuth state, webhook ids, pacing.

One table (see docs/ARCHITECTURE.md). Every write that can race is conditional; the
low-level client is used so each call is exactly one request and nothing is hidden.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ucoauth import aws
from ucoauth.errors import (
    LeaseBusyError,
    NotInstalledError,
    StateExpiredError,
    StateForeignBrowserError,
    StateUnknownError,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ACTIVE = "active"
REAUTHORIZATION_REQUIRED = "reauthorization_required"
UNINSTALLED = "uninstalled"
DUE_INDEX = "DueIndex"
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


class StaleWriteError(Exception):
    """A conditional write lost: the item changed since it was read."""


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

    def save_installation(self, merchant_id: str, tokens: TokenFields, *, now: int) -> Installation:
        """Create or replace (reinstall) an installation: a new generation, status active.

        One UpdateItem sets every field at once, so two installs racing leave one consistent
        installation (the later one), and any in-flight refresh loses its version check.
        """
        names = {"#status": "status", "#ttl": "ttl", "#scope": "scope"}
        values: dict[str, Any] = {
            ":mid": {"S": merchant_id},
            ":active": {"S": ACTIVE},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":now": {"N": str(now)},
        }
        sets = [
            "merchant_id = :mid",
            "#status = :active",
            "generation = if_not_exists(generation, :zero) + :one",
            "version = if_not_exists(version, :zero) + :one",
            "installed_at = :now",
            "refreshed_at = :now",
        ]
        removes = ["lease_owner", "lease_expires_at", "uninstalled_at", "uninstall_reason", "#ttl"]
        self._token_updates(merchant_id, tokens, sets, removes, values, names)
        answer = self._ddb().update_item(
            TableName=self.table_name,
            Key=merchant_key(merchant_id),
            UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return Installation.from_item(answer["Attributes"])

    def write_refreshed_tokens(
        self, merchant_id: str, *, expected_version: int, tokens: TokenFields, now: int
    ) -> Installation:
        """Store refreshed tokens if nobody wrote since ``expected_version``; releases the lease.

        The condition is on the version, not on the lease owner: if our lease ran out while
        UltraCart answered, we still hold the newest tokens and they must be kept.
        """
        names = {"#status": "status", "#scope": "scope"}
        values: dict[str, Any] = {
            ":v": {"N": str(expected_version)},
            ":one": {"N": "1"},
            ":now": {"N": str(now)},
            ":active": {"S": ACTIVE},
        }
        sets = ["version = version + :one", "refreshed_at = :now"]
        removes = ["lease_owner", "lease_expires_at"]
        self._token_updates(merchant_id, tokens, sets, removes, values, names)
        answer = _if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
                ConditionExpression="version = :v AND #status = :active",
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

    def mark_uninstalled(
        self, merchant_id: str, *, expected_version: int, reason: str, now: int, ttl: int
    ) -> int | None:
        """Crypto-shred: delete the ciphertext, keep a tombstone with a TTL.

        Returns the new version, or None when the installation changed since ``expected_version``.
        """
        answer = _if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression=(
                    "SET #status = :gone, version = version + :one, uninstalled_at = :now, "
                    "uninstall_reason = :why, #ttl = :ttl "
                    "REMOVE tokens, due_at, due_shard, lease_owner, lease_expires_at"
                ),
                ConditionExpression="version = :v",
                ExpressionAttributeNames={"#status": "status", "#ttl": "ttl"},
                ExpressionAttributeValues={
                    ":gone": {"S": UNINSTALLED},
                    ":v": {"N": str(expected_version)},
                    ":one": {"N": "1"},
                    ":now": {"N": str(now)},
                    ":why": {"S": reason},
                    ":ttl": {"N": str(ttl)},
                },
                ReturnValues="UPDATED_NEW",
            )
        )
        if answer is None:
            return None
        return _n(answer["Attributes"], "version")

    # -- events that could not be published (a small outbox on the item) -------------------

    def park_event(self, merchant_id: str, *, event: str, version: int, active: bool, now: int) -> bool:
        """Keep an event EventBridge refused on the item, for the refresh worker to publish later.

        An inactive installation is put back in the due index (due now) so the planner brings
        it to a worker; an active one is relayed at its next refresh. False if the state moved on.
        """
        sets = ["pending_event = :e"]
        values: dict[str, Any] = {":e": {"S": event}, ":v": {"N": str(version)}}
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

    # -- refresh lease --------------------------------------------------------------------

    def take_lease(
        self, merchant_id: str, *, owner: str, now: int, seconds: int, due_before: int | None = None
    ) -> Installation | None:
        """Take the merchant's lease (conditional write; owner + expiry, never TTL).

        Returns the installation as written (the re-read comes with the write), or None when
        ``due_before`` is given and the installation is no longer due (a sibling refreshed).
        Raises :class:`LeaseBusyError` when another owner holds an unexpired lease and
        :class:`NotInstalledError` when there is no installation.
        """
        condition = (
            "attribute_exists(pk) AND (attribute_not_exists(lease_expires_at) OR lease_expires_at <= :now)"
        )
        values: dict[str, Any] = {
            ":owner": {"S": owner},
            ":now": {"N": str(now)},
            ":until": {"N": str(now + seconds)},
        }
        if due_before is not None:
            condition += " AND due_at <= :due"
            values[":due"] = {"N": str(due_before)}
        try:
            answer = self._ddb().update_item(
                TableName=self.table_name,
                Key=merchant_key(merchant_id),
                UpdateExpression="SET lease_owner = :owner, lease_expires_at = :until",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _is_conditional_failure(exc):
                raise
            old: Any = exc.response.get("Item")
            if not old:
                raise NotInstalledError(merchant_id) from None
            current = Installation.from_item(old)
            if current.lease_held(now):
                raise LeaseBusyError(merchant_id) from None
            return None  # not due any more
        return Installation.from_item(answer["Attributes"])

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

    # -- planner --------------------------------------------------------------------------

    def due_merchants(
        self, *, now: int, limit: int | None = None, stats: dict[str, int] | None = None
    ) -> list[str]:
        """Merchants whose refresh is due, most overdue first, read from the sparse ``DueIndex``.

        Each shard is queried for ``due_at <= now`` (in due order, at most ``limit`` items), so
        reads are proportional to what is due, never to all installations; with ``limit`` the
        earliest ``limit`` over all shards are returned and the rest stay in the index.
        """
        found: list[tuple[int, str]] = []
        for shard in range(self.shards):
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

    def record(self, webhook_id: str, *, now: int, ttl_seconds: int) -> bool:
        """True the first time an id is seen; False for a repeat (one conditional write)."""
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

    def forget(self, webhook_id: str) -> None:
        """Undo :meth:`record` when the uninstall could not be queued, so a retry acts."""
        self._ddb().delete_item(TableName=self.table_name, Key=self._key(webhook_id))


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
