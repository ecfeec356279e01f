"""The browser's short-lived items: the OAuth state, the success receipt, webhook ids and install
sessions.

Each is stored under the SHA-256 of its secret, expires by TTL, and is written or consumed with
one conditional request.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ucoauth.adapters import aws
from ucoauth.adapters.table import digest, if_condition_holds, is_conditional_failure, number, string
from ucoauth.base.errors import (
    InstallSessionExpiredError,
    InstallSessionUnknownError,
    InstallSessionUsedError,
    StateExpiredError,
    StateForeignBrowserError,
    StateUnknownError,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass(frozen=True, slots=True, eq=False)
class AccountLink:
    """What an install session carries to the installation it completes (no secret but the
    session's digest, kept out of ``repr``)."""

    session_id: str
    app_account_id: str
    metadata: dict[str, str]
    return_url: str | None = None
    session_digest: str = field(default="", repr=False)


def link_attributes(link: AccountLink) -> dict[str, Any]:
    """An account link as item attributes (the session's digest, never its secret)."""
    item: dict[str, Any] = {
        "account": {"S": link.app_account_id},
        "account_metadata": {"M": {k: {"S": v} for k, v in link.metadata.items()}},
    }
    if link.session_id:
        item["session_id"] = {"S": link.session_id}
    if link.session_digest:
        item["session"] = {"S": link.session_digest}
    if link.return_url:
        item["return_url"] = {"S": link.return_url}
    return item


def link_of(item: dict[str, Any]) -> AccountLink | None:
    """The account link an item carries, or None."""
    account = string(item, "account")
    if account is None:
        return None
    metadata = item.get("account_metadata", {}).get("M", {})
    return AccountLink(
        session_id=string(item, "session_id") or "",
        app_account_id=account,
        metadata={k: v["S"] for k, v in metadata.items() if "S" in v},
        return_url=string(item, "return_url"),
        session_digest=string(item, "session") or "",
    )


@dataclass(frozen=True, slots=True, eq=False)
class ConsumedState:
    """What a consumed state said: when it was issued, and the session it was bound to."""

    issued_at: int | None
    link: AccountLink | None = None


class StateStore:
    """One-time OAuth state: stored hashed, bound to a browser, consumed once."""

    def __init__(self, table_name: str, *, client: Callable[[], DynamoDBClient] = aws.dynamodb) -> None:
        self.table_name = table_name
        self._ddb = client

    @staticmethod
    def _key(state: str) -> dict[str, Any]:
        return {"pk": {"S": f"STATE#{digest(state)}"}, "sk": {"S": "STATE"}}

    def put(
        self,
        state: str,
        *,
        browser_nonce: str,
        now: int,
        ttl_seconds: int,
        link: AccountLink | None = None,
    ) -> None:
        """Store the state's hash with its expiry and the hash of the browser's cookie nonce (and,
        for an install through a session, what the session links the installation to)."""
        self._ddb().put_item(
            TableName=self.table_name,
            Item={
                **self._key(state),
                **(link_attributes(link) if link is not None else {}),
                "browser": {"S": digest(browser_nonce)},
                "issued_at": {"N": str(now)},
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

    def consume(self, state: str, *, browser_nonce: str, now: int) -> ConsumedState:
        """Delete the state in one conditional write that checks existence, expiry and browser;
        when the state was issued (epoch seconds; None for a state stored without it) and the
        session it was bound to.

        When the condition fails, the item as it was (``ALL_OLD``) says why, without a second
        read: :class:`StateUnknownError` (none: used, or never issued),
        :class:`StateExpiredError`, or :class:`StateForeignBrowserError` (another cookie nonce).
        """
        try:
            deleted = self._ddb().delete_item(
                TableName=self.table_name,
                Key=self._key(state),
                ConditionExpression="attribute_exists(pk) AND expires_at > :now AND browser = :b",
                ExpressionAttributeValues={":now": {"N": str(now)}, ":b": {"S": digest(browser_nonce)}},
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            old: Any = exc.response.get("Item")
            if not old:
                raise StateUnknownError("unknown or already used state") from None
            if (number(old, "expires_at") or 0) <= now:
                raise StateExpiredError("expired state") from None
            raise StateForeignBrowserError("state bound to another browser nonce") from None
        old_item = deleted.get("Attributes", {})
        return ConsumedState(number(old_item, "issued_at"), link_of(old_item))


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof, held by one browser as a cookie, that it just completed an install (no secret)."""

    merchant_id: str
    reinstall: bool
    # sha256 of the state the install consumed (the same hash the state item was keyed by), so a
    # reload of exactly that callback URL can be recognised; never the state itself.
    state_digest: str = field(default="", repr=False)
    # Where the install link asked the browser to go back to (an install session), or None.
    return_url: str | None = None


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
                **({"return_url": {"S": receipt.return_url}} if receipt.return_url else {}),
                "expires_at": {"N": str(now + ttl_seconds)},
                "ttl": {"N": str(now + ttl_seconds + 3600)},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get(self, nonce: str, *, now: int) -> Receipt | None:
        """The receipt the nonce proves, or None when unknown or expired (TTL deletion is lazy)."""
        item = self._ddb().get_item(TableName=self.table_name, Key=self._key(nonce)).get("Item")
        if not item or (number(item, "expires_at") or 0) <= now:
            return None
        return Receipt(
            merchant_id=string(item, "merchant_id") or "",
            reinstall=bool(item.get("reinstall", {}).get("BOOL", False)),
            state_digest=string(item, "state") or "",
            return_url=string(item, "return_url"),
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
        answer = if_condition_holds(
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


class InstallSessionStore:
    """Install sessions: stored under the hash of their secret until they expire (TTL), marked
    used by the one install they complete (a conditional write)."""

    def __init__(self, table_name: str, *, client: Callable[[], DynamoDBClient] = aws.dynamodb) -> None:
        self.table_name = table_name
        self._ddb = client

    @staticmethod
    def _key(secret: str) -> dict[str, Any]:
        return {"pk": {"S": f"SESSION#{digest(secret)}"}, "sk": {"S": "SESSION"}}

    def put(self, secret: str, link: AccountLink, *, now: int, ttl_seconds: int) -> None:
        """Store a new session until ``now + ttl_seconds``."""
        self._ddb().put_item(
            TableName=self.table_name,
            Item={
                **self._key(secret),
                **link_attributes(link),
                "issued_at": {"N": str(now)},
                "expires_at": {"N": str(now + ttl_seconds)},
                "ttl": {"N": str(now + ttl_seconds + 3600)},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def usable(self, secret: str, *, now: int) -> AccountLink:
        """The link of a session that may start an install now. Raises
        :class:`InstallSessionUnknownError`, :class:`InstallSessionUsedError` or
        :class:`InstallSessionExpiredError`."""
        item = (
            self._ddb()
            .get_item(TableName=self.table_name, Key=self._key(secret), ConsistentRead=True)
            .get("Item")
        )
        link = link_of(item) if item else None
        if item is None or link is None:
            raise InstallSessionUnknownError("unknown install session")
        _check(item, now)
        return AccountLink(
            link.session_id,
            link.app_account_id,
            link.metadata,
            link.return_url,
            session_digest=digest(secret),
        )

    def mark_used(self, session_digest: str, *, by: str, now: int) -> None:
        """Mark the session used by the install ``by`` (a state's digest) in one conditional write
        (exists, unused or already ours, unexpired). Raises as :meth:`usable` does."""
        key = {"pk": {"S": f"SESSION#{session_digest}"}, "sk": {"S": "SESSION"}}
        try:
            self._ddb().update_item(
                TableName=self.table_name,
                Key=key,
                UpdateExpression="SET used_at = :now, used_by = :by",
                ConditionExpression=(
                    "attribute_exists(pk) AND expires_at > :now "
                    "AND (attribute_not_exists(used_by) OR used_by = :by)"
                ),
                ExpressionAttributeValues={":now": {"N": str(now)}, ":by": {"S": by}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            old: Any = exc.response.get("Item")
            if not old:
                raise InstallSessionUnknownError("unknown install session") from None
            _check(old, now)
            raise InstallSessionUsedError("install session already used") from None

    def release(self, session_digest: str, *, by: str) -> None:
        """Undo :meth:`mark_used` for an install that did not complete (only if still ours)."""
        key = {"pk": {"S": f"SESSION#{session_digest}"}, "sk": {"S": "SESSION"}}
        if_condition_holds(
            lambda: self._ddb().update_item(
                TableName=self.table_name,
                Key=key,
                UpdateExpression="REMOVE used_at, used_by",
                ConditionExpression="used_by = :by",
                ExpressionAttributeValues={":by": {"S": by}},
            )
        )


def _check(item: dict[str, Any], now: int) -> None:
    if "used_by" in item:
        raise InstallSessionUsedError("install session already used")
    if (number(item, "expires_at") or 0) <= now:
        raise InstallSessionExpiredError("install session expired")
