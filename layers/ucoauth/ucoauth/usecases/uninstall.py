"""Uninstall: accept a signed webhook (or an EventBridge event), then revoke and crypto-shred.

The webhook function only verifies, queues and then records the webhook id; the revoke worker
does the slow part (UltraCart revoke under the merchant's lease), so a sender gets a fast 202.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ucoauth.adapters.events import INSTALLATION_REMOVED
from ucoauth.adapters.installations.model import (
    UNINSTALLED,
    UNINSTALLING,
    Installation,
    Recovery,
    parse_installation_id,
)
from ucoauth.base.errors import (
    AppCredentialsRejectedError,
    LeaseBusyError,
    LeaseHeldError,
    NotInstalledError,
    RevokePendingError,
    StaleWriteError,
    TokenDecryptError,
    WebhookPayloadError,
    WebhookSignatureError,
)
from ucoauth.base.observability import logger, metrics
from ucoauth.base.retry import retry_within
from ucoauth.base.validation import is_merchant_id
from ucoauth.core.outbox import announce
from ucoauth.usecases.superseded import revoke_backoff, revoke_period_start

if TYPE_CHECKING:
    from ucoauth.adapters.installations.store import Lease
    from ucoauth.adapters.services import Services
    from ucoauth.base.timing import Deadline

UNINSTALL_DETAIL_TYPE = "App Uninstalled"
WEBHOOK_TYPE = "app.uninstalled"
MAX_WEBHOOK_BODY = 8 * 1024
WEBHOOK_ID_TTL_SECONDS = 7 * 86_400  # far beyond the 5-minute signature tolerance
# An uninstall that names no installation is for the current one unless it is stamped before
# that installation's flow began (its state issued, its device authorization created) by more
# than this: the sender's clock and ours may disagree by this much.
UNINSTALL_CLOCK_SKEW = 60


@dataclass(frozen=True, slots=True)
class UninstallRequest:
    """A parsed uninstall, whichever way it came."""

    merchant_id: str
    requested_at: datetime
    source: str
    request_id: str
    # The generation the uninstall names (its ``installation_id``), or None when it names none.
    generation: int | None = None

    def is_late_for(self, installation: Installation) -> bool:
        """Whether this uninstall is not for ``installation`` (an earlier one's, arriving late).

        Naming an installation, it is for that one only. Naming none, it is late only when
        stamped before the installation's flow began, less ``UNINSTALL_CLOCK_SKEW``: UltraCart
        can stamp an uninstall between issuing the grant and our write of it."""
        if self.generation is not None:
            return self.generation != installation.generation
        began = installation.began_at if installation.began_at is not None else installation.installed_at
        return self.requested_at.timestamp() < began - UNINSTALL_CLOCK_SKEW


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def named_generation(merchant_id: str, value: Any) -> int | bool | None:
    """The generation an uninstall's ``installation_id`` names: None when absent, False when
    malformed or another merchant's."""
    if value is None:
        return None
    parsed = parse_installation_id(value)
    if parsed is None or parsed[0] != merchant_id:
        return False
    return parsed[1]


def parse_uninstall_message(body: Any) -> UninstallRequest | None:
    """The revoke queue's message (EventBridge event shape), or None when malformed."""
    if not isinstance(body, dict) or body.get("detail-type") != UNINSTALL_DETAIL_TYPE:
        return None
    detail = body.get("detail")
    if not isinstance(detail, dict):
        return None
    merchant_id = detail.get("merchant_id")
    when = _parse_time(body.get("time"))
    if not isinstance(merchant_id, str) or not is_merchant_id(merchant_id) or when is None:
        return None
    generation = named_generation(merchant_id, detail.get("installation_id"))
    if generation is False:
        return None
    return UninstallRequest(
        merchant_id=merchant_id,
        requested_at=when,
        source=str(body.get("source") or "unknown")[:128],
        request_id=str(body.get("id") or "")[:128],
        generation=generation if isinstance(generation, int) else None,
    )


# -- webhook --------------------------------------------------------------------------------

_secret_lock = threading.Lock()
# (the secrets accepted, current first; their verifier; time.monotonic() when they were read)
_verifier: tuple[tuple[str, ...], _Verifier, float] | None = None
SECRET_MAX_AGE = 300
# A signature none of the cached secrets verifies has the secrets read again, at most this often:
# a sender that switched to a rotated secret before this process noticed is not refused, and a
# flood of bad signatures costs at most one read per this many seconds.
SECRET_REREAD_AFTER_FAILURE = 10
_secret_clock = time.monotonic  # tests move it


class _Verifier:
    """Standard Webhooks verification with each accepted secret in turn (the current one first;
    the previous one for a day after a rotation, see ``ucoauth.adapters.app_secrets``)."""

    def __init__(self, webhooks: tuple[Any, ...]) -> None:
        self.webhooks = webhooks

    def verifies(self, text: str, headers: dict[str, str]) -> bool:
        for webhook in self.webhooks:
            try:
                webhook.verify(text, headers, json_parse=False)
            except Exception:  # noqa: BLE001, S112 - the library raises several types for malformed headers
                continue
            return True
        return False


def _webhook_verifier(services: Services, *, after_failure: bool = False) -> _Verifier:
    """The verifier for the accepted secrets, read from Secrets Manager at most once per
    ``SECRET_MAX_AGE`` seconds (and, ``after_failure``, once per ``SECRET_REREAD_AFTER_FAILURE``).

    The cache lives for the whole process, so a warm invocation makes no Secrets Manager call.
    (GetSecretValue rather than Powertools' SecretsProvider: the parameters package imports boto3
    and every provider, SSM, AppConfig and DynamoDB included, which costs the webhook's cold start
    more than the rest of its code.)
    """
    global _verifier
    from standardwebhooks.webhooks import Webhook

    from ucoauth.adapters.app_secrets import webhook_secrets

    with _secret_lock:
        now = _secret_clock()
        cached = _verifier
        if cached is not None:
            age = now - cached[2]
            if age < SECRET_MAX_AGE and not (after_failure and age >= SECRET_REREAD_AFTER_FAILURE):
                return cached[1]
        accepted = tuple(webhook_secrets(services.settings.webhook_secret_arn, now=services.clock()))
        known = dict(zip(cached[0], cached[1].webhooks, strict=True)) if cached is not None else {}
        verifier = _Verifier(tuple(known.get(s) or Webhook(s) for s in accepted))
        _verifier = (accepted, verifier, now)
        return verifier


def _signed_by_the_sender(services: Services, text: str, headers: dict[str, str]) -> bool:
    """Whether one of the accepted secrets signed the webhook (the secrets read again, within
    limits, before a signature is refused)."""
    verifier = _webhook_verifier(services)
    if verifier.verifies(text, headers):
        return True
    again = _webhook_verifier(services, after_failure=True)
    return again is not verifier and again.verifies(text, headers)


def reset_webhook_secret_cache() -> None:
    """Forget the cached secrets and verifier (tests; a rotation needs no reset)."""
    global _verifier
    with _secret_lock:
        _verifier = None


def accept_webhook(
    services: Services, body: bytes, headers: dict[str, str]
) -> Literal["queued", "duplicate"]:
    """Verify a Standard Webhooks uninstall (a body already bounded by ``MAX_WEBHOOK_BODY``
    where it was read), queue it, then record its id.

    Raises :class:`WebhookSignatureError` (id, signature, timestamp) or
    :class:`WebhookPayloadError` (body); nothing is recorded or queued then.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    if not webhook_id or len(webhook_id) > 256:
        raise WebhookSignatureError("missing or malformed webhook-id")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookPayloadError("body is not UTF-8") from None
    if not _signed_by_the_sender(services, text, lowered):
        metrics.add_metric(name="WebhookRejected", unit="Count", value=1)
        raise WebhookSignatureError("signature verification failed")
    try:
        payload = json.loads(text)
    except ValueError:
        raise WebhookPayloadError("body is not JSON") from None
    if not isinstance(payload, dict) or payload.get("type") != WEBHOOK_TYPE:
        raise WebhookPayloadError(f"type must be {WEBHOOK_TYPE}")
    data = payload.get("data")
    merchant_id = data.get("merchant_id") if isinstance(data, dict) else None
    if not isinstance(merchant_id, str) or not is_merchant_id(merchant_id):
        raise WebhookPayloadError("data.merchant_id is missing or malformed")
    when = _parse_time(payload.get("timestamp"))
    if when is None:
        raise WebhookPayloadError("timestamp must be ISO-8601")
    assert isinstance(data, dict)
    named = data.get("installation_id")
    if named_generation(merchant_id, named) is False:
        raise WebhookPayloadError("data.installation_id is malformed or another merchant's")

    now = services.now()
    if services.webhook_ids.seen(webhook_id, now=now):
        logger.info("duplicate webhook acknowledged", merchant_id=merchant_id)
        return "duplicate"
    message = {
        "id": f"webhook:{webhook_id}",
        "source": "webhook",
        "detail-type": UNINSTALL_DETAIL_TYPE,
        "time": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "detail": {"merchant_id": merchant_id} | ({"installation_id": named} if named is not None else {}),
    }
    from ucoauth.adapters import aws

    # Queue first, record after: a function that dies in between leaves the id unrecorded, so
    # the sender's retry queues the uninstall again (the revoke worker is idempotent), and no
    # 202 is ever answered for an uninstall that is not queued.
    aws.sqs().send_message(QueueUrl=services.settings.revoke_queue_url, MessageBody=json.dumps(message))
    services.webhook_ids.record(webhook_id, now=now, ttl_seconds=WEBHOOK_ID_TTL_SECONDS)
    metrics.add_metric(name="UninstallQueued", unit="Count", value=1)
    logger.info("uninstall queued", merchant_id=merchant_id)
    return "queued"


# -- revoke worker --------------------------------------------------------------------------

RevokeResult = Literal["removed", "not_installed", "already_uninstalled", "late", "invalid"]


def _ignore_late(
    services: Services, lease: Lease, deadline: Deadline, request: UninstallRequest
) -> RevokeResult:
    """An uninstall for an earlier installation: the current one stays; the earlier generation's
    tokens still kept on the item (a recovery record) are revoked now."""
    from ucoauth.core.rotation import reconcile

    installation = lease.installation
    logger.info(
        "late uninstall ignored: it is for an earlier installation",
        merchant_id=installation.merchant_id,
        generation=installation.generation,
        named=request.generation,
    )
    metrics.add_metric(name="LateUninstallIgnored", unit="Count", value=1)
    for record in installation.recoveries:
        if record.generation != installation.generation:
            reconcile(services, lease, deadline, record)
    return "late"


def process_uninstall(services: Services, body: Any, *, deadline: Deadline) -> RevokeResult:
    """Revoke at UltraCart, delete the ciphertext, keep a tombstone. Idempotent.

    While UltraCart cannot confirm the revoke, the installation is ``uninstalling`` (no longer
    served or refreshed; tokens kept only to revoke them) and :class:`RevokePendingError` asks
    for the message to come back later; only once ``REVOKE_RETRY_SECONDS`` have passed since the
    first attempt is the ciphertext shredded without a confirmed revoke. A revoke UltraCart
    refuses with the app's own credentials is never confirmed and never given up on: the
    uninstall waits (:class:`RevokePendingError` with ``app_refused_at``), and that time does not
    count toward the period. A ``hold:`` lease does not stop it (an uninstall settles the grant
    whatever recovery the hold waits for: a recovery message arriving later finds the tombstone
    and is revoked); a busy lease raises :class:`LeaseHeldError` (the message comes back when it
    ends, spending none of its receives). Raises (so the message is retried) on too little time
    left, a KMS fault or an AWS error.
    """
    # Deferred: the revoke path's modules are the worker's; the webhook only queues.
    from ucoauth.core.rotation import reconcile

    request = parse_uninstall_message(body)
    if request is None:
        logger.warning("malformed uninstall message dropped")
        metrics.add_metric(name="UninstallMalformed", unit="Count", value=1)
        return "invalid"
    merchant_id = request.merchant_id
    retry_since = revoke_period_start(services, body)
    try:
        # The lease comes back with the item: no separate read (and no refresh can start now).
        lease = services.installations.lease(
            merchant_id,
            owner=f"revoke:{uuid.uuid4()}",
            now=services.now(),
            until=deadline.lease_until,
            through_hold=True,
        )
    except NotInstalledError:
        logger.info("uninstall for a merchant never installed", merchant_id=merchant_id)
        return "not_installed"
    except LeaseBusyError as busy:
        raise LeaseHeldError.of(busy, services.now()) from busy
    with lease:
        installation = lease.installation
        if installation.status == UNINSTALLED:
            for record in installation.recoveries:
                reconcile(services, lease, deadline, record)
            return "already_uninstalled"
        if request.is_late_for(installation):
            return _ignore_late(services, lease, deadline, request)
        try:
            confirmed, failure = _revoke_everything(services, deadline, installation)
        except AppCredentialsRejectedError as exc:
            _stop_serving(services, installation)
            raise RevokePendingError(
                exc.retry_after, retry_since=retry_since, app_refused_at=services.now()
            ) from exc
        if not confirmed and failure == "":
            if services.now() - retry_since < services.settings.revoke_retry_seconds:
                _stop_serving(services, installation)
                raise RevokePendingError(revoke_backoff(services, retry_since), retry_since=retry_since)
            failure = "revoke_unconfirmed"
        return _shred(services, lease, deadline, request, confirmed=confirmed, failure=failure)


def _revoke_everything(
    services: Services, deadline: Deadline, installation: Installation
) -> tuple[bool, str]:
    """Revoke the stored tokens and any recovered ones. (True, "") when UltraCart confirmed every
    revoke; (False, "") when it could not be asked now; (False, reason) when it never can.
    Raises :class:`AppCredentialsRejectedError` when UltraCart refused the app itself."""
    from ucoauth.core.rotation import revoke_tokens

    merchant_id = installation.merchant_id
    blobs = [installation.tokens_ciphertext, *(r.ciphertext for r in installation.recoveries)]
    confirmed = True
    for blob in blobs:
        if blob is None:
            continue
        try:
            tokens = services.cipher.decrypt(merchant_id, blob)
        except TokenDecryptError:
            return False, "undecryptable"
        if not revoke_tokens(services, deadline, merchant_id, tokens, raise_app_refusal=True):
            confirmed = False
    return confirmed, ""


def _stop_serving(services: Services, installation: Installation) -> None:
    if installation.status == UNINSTALLING:
        return
    pending = None
    if installation.tokens_ciphertext is not None:  # kept unless its generation's slot has a record
        pending = Recovery(
            ciphertext=installation.tokens_ciphertext,
            generation=installation.generation,
            issued_at=installation.refreshed_at or installation.installed_at,
            expires_in=installation.token_lifetime,
            token_type=installation.token_type,
            scope=installation.scope,
        )
    version = services.installations.mark_uninstalling(
        installation.merchant_id, expected_version=installation.version, now=services.now(), pending=pending
    )
    if version is None:
        raise StaleWriteError(installation.merchant_id)  # the item moved: the retry reads it again
    logger.warning(
        "uninstall pending: UltraCart has not confirmed the revoke", merchant_id=installation.merchant_id
    )


def _shred(
    services: Services,
    lease: Lease,
    deadline: Deadline,
    request: UninstallRequest,
    *,
    confirmed: bool,
    failure: str,
) -> RevokeResult:
    installation = lease.installation
    merchant_id = installation.merchant_id
    reason = request.source + (f";{failure}" if failure else "")
    now = services.now()
    # UltraCart has revoked: the shred is retried while time allows (else the message comes back).
    version = retry_within(
        services,
        deadline,
        lambda: services.installations.mark_uninstalled(
            merchant_id,
            expected_version=installation.version,
            reason=reason,
            revoke_confirmed=confirmed,
            now=now,
            ttl=now + services.settings.tombstone_ttl_days * 86_400,
            recoveries=tuple(r.attribute for r in installation.recoveries),
        ),
        keep_back=0.0,
    )
    if version is None:
        # Only a reinstall moves the version under our lease: it is newer than this uninstall
        # if it installed after the request; otherwise retry against the new version.
        latest = services.installations.get(merchant_id)
        if latest is not None and request.is_late_for(latest):
            metrics.add_metric(name="LateUninstallIgnored", unit="Count", value=1)
            return "late"
        raise StaleWriteError(merchant_id)
    lease.cleared()
    if not confirmed:
        metrics.add_metric(name="RevokeFailed", unit="Count", value=1)
        logger.error("tokens shredded without confirmed revocation", merchant_id=merchant_id, reason=failure)
    metrics.add_metric(name="InstallationRemoved", unit="Count", value=1)
    logger.info("installation removed", merchant_id=merchant_id, generation=installation.generation)
    announce(
        services,
        merchant_id,
        INSTALLATION_REMOVED,
        {
            "merchant_id": merchant_id,
            "generation": installation.generation,
            "source": request.source,
            "revoked": confirmed,
            "revoke_confirmed": confirmed,
        },
        version=version,
        active=False,
        parked=installation.pending_event,
    )
    return "removed"
