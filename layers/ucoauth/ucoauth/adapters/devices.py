"""Device authorizations (RFC 8628) on the table: one ``DEVICE#<authorization id>`` item each,
its device code encrypted, its polls claimed one at a time by conditional writes (the use case is
:mod:`ucoauth.usecases.device`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ucoauth.adapters import aws
from ucoauth.adapters.browser_items import link_attributes, link_of

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from ucoauth.adapters.browser_items import AccountLink

PENDING = "pending"
INSTALLED = "installed"
DENIED = "denied"
EXPIRED = "expired"
STATUSES = (PENDING, INSTALLED, DENIED, EXPIRED)

# secrets.token_urlsafe(32): 256 bits.
AUTHORIZATION_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")
# How long the final status stays readable after the authorization ended (or expired).
KEEP_SECONDS = 86_400
PK_PREFIX = "DEVICE#"
_SK = "DEVICE"


def is_authorization_id(value: str) -> bool:
    return AUTHORIZATION_ID.fullmatch(value) is not None


# -- the table item ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceAuthorizationItem:
    """A device authorization as stored. Never ``status`` (only installations carry it: StatusIndex)."""

    authorization_id: str
    device_status: str
    ciphertext: bytes | None = field(repr=False)
    scope: str
    interval: int
    created_at: int
    expires_at: int
    poll_seq: int
    merchant_id: str | None = None
    claim_owner: str | None = None
    link: AccountLink | None = None  # the app's account the installation is to be linked to

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> DeviceAuthorizationItem:
        blob = item.get("device_code")
        merchant = item.get("merchant_id")
        owner = item.get("claim_owner")
        return cls(
            authorization_id=item["pk"]["S"].removeprefix(PK_PREFIX),
            device_status=item["device_status"]["S"],
            ciphertext=bytes(blob["B"]) if blob else None,
            scope=item.get("scope", {}).get("S", ""),
            interval=int(item["interval"]["N"]),
            created_at=int(item["created_at"]["N"]),
            expires_at=int(item["expires_at"]["N"]),
            poll_seq=int(item["poll_seq"]["N"]),
            merchant_id=merchant["S"] if merchant else None,
            claim_owner=owner["S"] if owner else None,
            link=link_of(item),
        )


class PollSkipped(Exception):
    """The claim found nothing to do for this message: ``absent``, ``done`` (no longer pending),
    ``stale`` (a later poll is queued), ``early`` (the previous poll has not moved on yet) or
    ``busy`` (another delivery holds the claim)."""

    def __init__(self, reason: str, item: DeviceAuthorizationItem | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.item = item


class DeviceAuthorizationStore:
    """``DEVICE#<authorization_id>`` items of the installations table."""

    def __init__(self, table_name: str, *, client: Callable[[], DynamoDBClient] = aws.dynamodb) -> None:
        self.table_name = table_name
        self._ddb = client

    @staticmethod
    def key(authorization_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"{PK_PREFIX}{authorization_id}"}, "sk": {"S": _SK}}

    def create(self, item: DeviceAuthorizationItem) -> None:
        assert item.ciphertext is not None
        self._ddb().put_item(
            TableName=self.table_name,
            Item={
                **self.key(item.authorization_id),
                "device_status": {"S": item.device_status},
                "device_code": {"B": item.ciphertext},
                "scope": {"S": item.scope},
                "interval": {"N": str(item.interval)},
                "created_at": {"N": str(item.created_at)},
                "expires_at": {"N": str(item.expires_at)},
                "poll_seq": {"N": str(item.poll_seq)},
                "ttl": {"N": str(item.expires_at + KEEP_SECONDS)},
                **(link_attributes(item.link) if item.link is not None else {}),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get(self, authorization_id: str) -> DeviceAuthorizationItem | None:
        item = (
            self._ddb()
            .get_item(TableName=self.table_name, Key=self.key(authorization_id), ConsistentRead=True)
            .get("Item")
        )
        return DeviceAuthorizationItem.from_item(item) if item else None

    def claim(
        self, authorization_id: str, *, seq: int, owner: str, now: int, until: int
    ) -> DeviceAuthorizationItem:
        """Take poll ``seq`` of a pending authorization for this delivery until ``until`` (one
        conditional write); :class:`PollSkipped` says why not."""
        try:
            answer = self._ddb().update_item(
                TableName=self.table_name,
                Key=self.key(authorization_id),
                UpdateExpression="SET claim_owner = :owner, claim_until = :until",
                ConditionExpression=(
                    "device_status = :pending AND poll_seq = :seq AND "
                    "(attribute_not_exists(claim_until) OR claim_until <= :now)"
                ),
                ExpressionAttributeValues={
                    ":owner": {"S": owner},
                    ":until": {"N": str(until)},
                    ":pending": {"S": PENDING},
                    ":seq": {"N": str(seq)},
                    ":now": {"N": str(now)},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            old: Any = exc.response.get("Item")
            if not old:
                raise PollSkipped("absent", None) from None
            current = DeviceAuthorizationItem.from_item(old)
            if current.device_status == PENDING and current.poll_seq == seq and current.claim_owner == owner:
                return current  # our own claim landed and its answer was lost (botocore retried it)
            if current.device_status != PENDING:
                raise PollSkipped("done", current) from None
            if current.poll_seq > seq:
                raise PollSkipped("stale", current) from None
            if current.poll_seq < seq:
                raise PollSkipped("early", current) from None
            raise PollSkipped("busy", current) from None
        return DeviceAuthorizationItem.from_item(answer["Attributes"])

    def _conditional(
        self, authorization_id: str, update: str, values: dict[str, Any], *, seq: int, owner: str
    ) -> bool:
        try:
            self._ddb().update_item(
                TableName=self.table_name,
                Key=self.key(authorization_id),
                UpdateExpression=update,
                ConditionExpression="poll_seq = :seq AND claim_owner = :owner",
                ExpressionAttributeValues={**values, ":seq": {"N": str(seq)}, ":owner": {"S": owner}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def advance(self, authorization_id: str, *, seq: int, owner: str, interval: int) -> bool:
        """Move to poll ``seq + 1`` (already queued) at ``interval``, releasing the claim."""
        try:
            self._ddb().update_item(
                TableName=self.table_name,
                Key=self.key(authorization_id),
                UpdateExpression=(
                    "SET poll_seq = :next, #interval = :interval REMOVE claim_owner, claim_until"
                ),
                ConditionExpression="poll_seq = :seq AND claim_owner = :owner",
                ExpressionAttributeNames={"#interval": "interval"},
                ExpressionAttributeValues={
                    ":next": {"N": str(seq + 1)},
                    ":interval": {"N": str(interval)},
                    ":seq": {"N": str(seq)},
                    ":owner": {"S": owner},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release(self, authorization_id: str, *, seq: int, owner: str) -> bool:
        """Give the claim back without polling (the same poll comes again, later)."""
        return self._conditional(
            authorization_id, "REMOVE claim_owner, claim_until", {}, seq=seq, owner=owner
        )

    def note_merchant(self, authorization_id: str, *, seq: int, owner: str, merchant_id: str) -> bool:
        """UltraCart issued tokens for ``merchant_id``: noted before they are stored, so a redelivery
        after a crash can tell a spent device code that was ours from one that was not."""
        return self._conditional(
            authorization_id, "SET merchant_id = :mid", {":mid": {"S": merchant_id}}, seq=seq, owner=owner
        )

    def finish(
        self,
        authorization_id: str,
        *,
        seq: int,
        owner: str,
        status: str,
        now: int,
        merchant_id: str | None = None,
    ) -> bool:
        """End the authorization (``installed``, ``denied``, ``expired``): the device code's
        ciphertext is deleted and the status stays readable for a day."""
        sets = ["device_status = :status", "#ttl = :ttl"]
        values: dict[str, Any] = {":status": {"S": status}, ":ttl": {"N": str(now + KEEP_SECONDS)}}
        if merchant_id is not None:
            sets.append("merchant_id = :mid")
            values[":mid"] = {"S": merchant_id}
        try:
            self._ddb().update_item(
                TableName=self.table_name,
                Key=self.key(authorization_id),
                UpdateExpression=f"SET {', '.join(sets)} REMOVE device_code, claim_owner, claim_until",
                ConditionExpression="poll_seq = :seq AND claim_owner = :owner AND device_status = :pending",
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues={
                    **values,
                    ":seq": {"N": str(seq)},
                    ":owner": {"S": owner},
                    ":pending": {"S": PENDING},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True
