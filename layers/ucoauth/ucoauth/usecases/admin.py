"""The operators' use cases behind ``/admin/*``: list, show, refresh now, uninstall, redrive, stats.

Nothing here knows HTTP (the admin function maps errors to statuses). What an operator sees of
an installation is read with a projection that leaves out the tokens, the recovery record's
ciphertext and the lease owner, so no secret ever reaches this code's answers.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ucoauth.adapters import aws
from ucoauth.adapters.installations.model import ACTIVE, REAUTHORIZATION_REQUIRED, UNINSTALLED, UNINSTALLING
from ucoauth.adapters.shards import DueShards
from ucoauth.adapters.table import number, string
from ucoauth.base.errors import NotInstalledError, UcOAuthError
from ucoauth.base.observability import logger
from ucoauth.core.outbox import parked_events
from ucoauth.usecases.uninstall import UNINSTALL_DETAIL_TYPE

if TYPE_CHECKING:
    from ucoauth.adapters.services import Services
    from ucoauth.base.timing import Deadline
    from ucoauth.usecases.refresh import RefreshResult

STATUSES = (ACTIVE, REAUTHORIZATION_REQUIRED, UNINSTALLING, UNINSTALLED)
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_CURSOR = 2048
OPERATOR_ACTION = "Operator Action"
DeadLetterQueue = Literal["refresh", "revoke"]
# What a listed item shows (the StatusIndex projection holds exactly these, with the keys).
_LISTED = (
    "merchant_id",
    "#status",
    "generation",
    "installed_at",
    "access_expires_at",
    "expiry_assumed",
    "due_at",
    "refreshed_at",
    "revoke_confirmed",
    "pending_event",
    "uninstalled_at",
    "last_error",
    "last_error_at",
    "consecutive_failures",
)
# One installation also says whether it holds a recovery record (never its contents): records
# live one attribute per generation, so the last ones are asked for by name; and the app's account
# it is linked to, with that link's metadata and install session.
_SHOWN = (*_LISTED, "recovery.issued_at", "app_account_id", "account_metadata", "install_session_id")
_SHOWN_GENERATIONS = 20
# Listed by account (``AccountIndex``, which projects these): the account too.
_LISTED_BY_ACCOUNT = (*_LISTED, "app_account_id")
_ACCOUNT_CURSOR_KEYS = {"pk", "sk", "app_account_id", "merchant_id"}
_CURSOR_KEYS = {"pk", "sk", "status", "merchant_id"}
# A redrive stops this long before its deadline (one more batch and the answer).
_REDRIVE_MARGIN = 4.0


class AdminRequestError(UcOAuthError):
    """A malformed request (400); ``code`` is the error the caller gets."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Page:
    """One page of installations and the cursor of the next (None at the end)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def _iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


def view(item: dict[str, Any], *, detailed: bool = False) -> dict[str, Any]:
    """An installation as an operator sees it (no token, ciphertext or lease owner).

    ``last_error`` is the last refresh failure (code and time) since the last stored token, and
    ``consecutive_failures`` how many refreshes failed since then.
    """
    assumed = bool(item.get("expiry_assumed", {}).get("BOOL", False))
    pending = [detail_type for detail_type, _ in parked_events(string(item, "pending_event"))]
    revoke = item.get("revoke_confirmed")
    shown: dict[str, Any] = {
        "merchant_id": string(item, "merchant_id"),
        "status": string(item, "status"),
        "generation": number(item, "generation"),
        "installed_at": _iso(number(item, "installed_at")),
        "access_expires_at": None if assumed else _iso(number(item, "access_expires_at")),
        "next_refresh_at": _iso(number(item, "due_at")),
        "last_refreshed_at": _iso(number(item, "refreshed_at")),
        "last_error": (
            {"code": string(item, "last_error"), "at": _iso(number(item, "last_error_at"))}
            if "last_error" in item
            else None
        ),
        "consecutive_failures": number(item, "consecutive_failures") or 0,
        "revoke_confirmed": revoke["BOOL"] if isinstance(revoke, dict) and "BOOL" in revoke else None,
        "pending_event": ", ".join(pending) if pending else None,
        "uninstalled_at": _iso(number(item, "uninstalled_at")),
    }
    if "app_account_id" in item or detailed:
        shown["app_account_id"] = string(item, "app_account_id")
    if detailed:
        shown["has_recovery_record"] = any(
            name == "recovery" or name.startswith("recovery_") for name in item
        )
        metadata = item.get("account_metadata", {}).get("M", {})
        shown["metadata"] = {k: v["S"] for k, v in metadata.items() if "S" in v}
        shown["install_session_id"] = string(item, "install_session_id")
    return shown


def show(services: Services, merchant_id: str) -> dict[str, Any]:
    """One installation (uninstalled tombstones too). Raises NotInstalledError."""
    item = services.installation_reads.projected(merchant_id, _SHOWN)
    if not item or "status" not in item:
        raise NotInstalledError(merchant_id)
    latest = number(item, "generation") or 0
    generations = range(max(1, latest - _SHOWN_GENERATIONS + 1), latest + 1)
    if latest:
        slots = ("#status", *(f"recovery_{g}.issued_at" for g in generations))
        item |= services.installation_reads.projected(merchant_id, slots) or {}
    return view(item, detailed=True)


# -- listing -----------------------------------------------------------------------------------


def parse_limit(raw: str | None) -> int:
    """``limit`` as given (1-100, default 50). Raises AdminRequestError."""
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or len(raw) > 3 or not 1 <= int(raw) <= MAX_LIMIT:
        raise AdminRequestError("invalid_limit")
    return int(raw)


def parse_status(raw: str | None) -> str | None:
    """``status`` as given (one of STATUSES) or None. Raises AdminRequestError."""
    if raw is None:
        return None
    if raw not in STATUSES:
        raise AdminRequestError("invalid_status")
    return raw


def encode_cursor(status: str, last_key: dict[str, Any] | None) -> str:
    """Opaque cursor: base64url of the status being read and DynamoDB's LastEvaluatedKey."""
    raw = json.dumps({"s": status, "k": last_key}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, dict[str, Any] | None]:
    """(status, LastEvaluatedKey) from a cursor this module made. Raises AdminRequestError."""
    if not cursor or len(cursor) > MAX_CURSOR:
        raise AdminRequestError("invalid_cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parsed = json.loads(raw)
    except (binascii.Error, ValueError):
        raise AdminRequestError("invalid_cursor") from None
    if not isinstance(parsed, dict) or set(parsed) != {"s", "k"} or parsed["s"] not in STATUSES:
        raise AdminRequestError("invalid_cursor")
    key = parsed["k"]
    if key is None:
        return parsed["s"], None
    valid = (
        isinstance(key, dict)
        and set(key) == _CURSOR_KEYS
        and all(
            isinstance(v, dict) and list(v) == ["S"] and isinstance(v["S"], str) and 0 < len(v["S"]) <= 300
            for v in key.values()
        )
        and key["status"]["S"] == parsed["s"]
    )
    if not valid:
        raise AdminRequestError("invalid_cursor")
    return parsed["s"], key


def list_installations(
    services: Services,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
    stats: dict[str, int] | None = None,
) -> Page:
    """A page of installations, one status after the other (``StatusIndex``, merchant order).

    Each page reads at most ``limit`` items plus one empty query per status it finishes: never a
    Scan, whatever the size of the table. With ``status`` only that status is read.
    """
    order = [status] if status is not None else list(STATUSES)
    current, start = (order[0], None) if cursor is None else decode_cursor(cursor)
    if current not in order:
        raise AdminRequestError("invalid_cursor")
    items: list[dict[str, Any]] = []
    for position in range(order.index(current), len(order)):
        current = order[position]
        while len(items) < limit:
            found, start = services.installation_reads.status_page(
                current, limit=limit - len(items), start=start, attributes=_LISTED, stats=stats
            )
            items.extend(view(item) for item in found)
            if not start:
                break
        if len(items) >= limit:
            if start:
                return Page(items, encode_cursor(current, start))
            following = position + 1
            return Page(items, encode_cursor(order[following], None) if following < len(order) else None)
        start = None
    return Page(items, None)


def encode_account_cursor(app_account_id: str, last_key: dict[str, Any]) -> str:
    """Opaque cursor of a listing by account: base64url of the account and the last key."""
    raw = json.dumps({"a": app_account_id, "k": last_key}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_account_cursor(cursor: str, app_account_id: str) -> dict[str, Any]:
    """The last key of a listing of ``app_account_id``'s installations. Raises AdminRequestError."""
    if not cursor or len(cursor) > MAX_CURSOR:
        raise AdminRequestError("invalid_cursor")
    try:
        parsed = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise AdminRequestError("invalid_cursor") from None
    key = parsed.get("k") if isinstance(parsed, dict) and set(parsed) == {"a", "k"} else None
    valid = (
        parsed.get("a") == app_account_id
        and isinstance(key, dict)
        and set(key) == _ACCOUNT_CURSOR_KEYS
        and all(
            isinstance(v, dict) and list(v) == ["S"] and isinstance(v["S"], str) and 0 < len(v["S"]) <= 300
            for v in key.values()
        )
        and key["app_account_id"]["S"] == app_account_id
    )
    if not valid:
        raise AdminRequestError("invalid_cursor")
    assert isinstance(key, dict)
    return key


def list_by_account(services: Services, app_account_id: str, *, limit: int, cursor: str | None) -> Page:
    """A page of the installations linked to one of the app's accounts (``AccountIndex``, merchant
    order): a Query that reads at most ``limit`` items, never a Scan."""
    start = None if cursor is None else decode_account_cursor(cursor, app_account_id)
    items: list[dict[str, Any]] = []
    while len(items) < limit:
        found, start = services.installation_reads.account_page(
            app_account_id, limit=limit - len(items), start=start, attributes=_LISTED_BY_ACCOUNT
        )
        items.extend(view(item) for item in found)
        if not start:
            break
    return Page(items, encode_account_cursor(app_account_id, start) if start else None)


# -- actions -----------------------------------------------------------------------------------


def _status_of(services: Services, merchant_id: str) -> str | None:
    return string(services.installation_reads.projected(merchant_id, ("#status",)) or {}, "status")


def refresh(services: Services, merchant_id: str, *, deadline: Deadline) -> RefreshResult:
    """Refresh now under the lease, within the budget (see :func:`ucoauth.usecases.refresh.refresh_now`)."""
    from ucoauth.usecases.refresh import refresh_now

    return refresh_now(services, merchant_id, deadline=deadline)


def uninstall(services: Services, merchant_id: str, *, caller: str) -> str:
    """Queue the uninstall exactly as the webhook does (the revoke worker revokes, then shreds).

    Returns the queued request's id. Raises NotInstalledError for an unknown or already
    uninstalled merchant (nothing queued).
    """
    if _status_of(services, merchant_id) in (None, UNINSTALLED):
        raise NotInstalledError(merchant_id)
    request_id = f"admin:{uuid.uuid4()}"
    message = {
        "id": request_id,
        "source": "admin",
        "detail-type": UNINSTALL_DETAIL_TYPE,
        "time": _iso(services.now()),
        "detail": {"merchant_id": merchant_id},
    }
    aws.sqs().send_message(QueueUrl=services.settings.revoke_queue_url, MessageBody=json.dumps(message))
    logger.info("uninstall queued by an operator", merchant_id=merchant_id, caller=caller)
    return request_id


def _dead_letter_route(services: Services, queue: DeadLetterQueue) -> tuple[str, str]:
    settings = services.settings
    if queue == "refresh":
        return settings.refresh_dead_letter_queue_url, settings.refresh_queue_url
    return settings.revoke_dead_letter_queue_url, settings.revoke_queue_url


def redrive(services: Services, queue: DeadLetterQueue, *, deadline: Deadline) -> int:
    """Move the dead letters of ``queue`` back to it, ten at a time, until the dead-letter queue
    is empty or the deadline is near. Each message is sent before it is deleted (a failure in
    between leaves a duplicate, which both workers handle, never a loss). Returns the count."""
    source, target = _dead_letter_route(services, queue)
    if not source:
        raise AdminRequestError("dead_letter_queue_not_configured")
    sqs = aws.sqs()
    moved = 0
    while deadline.allows(_REDRIVE_MARGIN):
        answer = sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10, VisibilityTimeout=30)
        messages = answer.get("Messages", [])
        if not messages:
            break
        for message in messages:
            sqs.send_message(QueueUrl=target, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=source, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return moved


# -- stats -------------------------------------------------------------------------------------


def _queue(url: str) -> dict[str, Any]:
    if not url:
        return {"depth": None, "in_flight": None, "delayed": None, "oldest_age_seconds": None}
    attributes = (
        aws.sqs()
        .get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        .get("Attributes", {})
    )
    return {
        "depth": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        # SQS reports the oldest message's age only as a CloudWatch metric (on the dashboard).
        "oldest_age_seconds": None,
    }


def stats(services: Services) -> dict[str, Any]:
    """Installations per status, due within the next hour, the UltraCart budget, the queues."""
    settings = services.settings
    now = services.now()
    reads = services.installation_reads
    per_status = {status: reads.count_status(status) for status in STATUSES}
    # Every shard the planner reads: a lowered DUE_SHARDS leaves installations above it.
    shards = DueShards(settings.table_name, configured=settings.due_shards).in_use()
    due = reads.count_due(until=now + 3600, shards=shards)
    hour_used, day_used = services.budget.used(now)
    hourly, daily = services.budget.limits("callback")
    background_hourly, background_daily = services.budget.limits("background")
    refresh_dlq = _queue(settings.refresh_dead_letter_queue_url)
    revoke_dlq = _queue(settings.revoke_dead_letter_queue_url)
    return {
        "installations": per_status,
        "due_within_hour": due,
        "ultracart_budget": {
            # The application's windows; in the merchant scope, only calls made before a merchant
            # was known count there (each merchant has windows of its own).
            "scope": services.budget.scope,
            "hour": {"used": hour_used, "limit": hourly, "background_limit": background_hourly},
            "day": {"used": day_used, "limit": daily, "background_limit": background_daily},
        },
        "queues": {
            "refresh": _queue(settings.refresh_queue_url),
            "revoke": _queue(settings.revoke_queue_url),
        },
        "dead_letters": {"refresh": refresh_dlq["depth"], "revoke": revoke_dlq["depth"]},
    }


def announce(services: Services, action: str, *, caller: str, **detail: Any) -> None:
    """Log an operator's action with the caller's IAM identity and publish it (never a secret)."""
    logger.info("operator action", action=action, caller=caller, **detail)
    services.events.publish(OPERATOR_ACTION, {"action": action, "caller": caller, **detail})
