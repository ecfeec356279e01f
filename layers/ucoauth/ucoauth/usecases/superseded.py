"""Grants a reinstall replaced: revoked at UltraCart by the revoke worker, never just dropped.

A merchant who installs again (a second browser install, a device approval, two tabs racing)
gets a new grant from UltraCart while the one the stack held stays live there. The install's
write hands back exactly the tokens it took off the item (``InstallationStore.replace_installation``);
the same write keeps them on the item as a recovery record of their generation, and the
installing function queues them, still encrypted, on the revoke queue; the revoke worker revokes
both tokens under the merchant's lease (a ``hold:`` lease does not stop it; a busy one sends the
message back for when it ends), clears that record, and retries for ``REVOKE_RETRY_SECONDS``.
Should the message never be sent (the function died after its write), the next lease holder
revokes the record instead.

Time during which UltraCart refuses the app's own credentials does not count toward that period
(:func:`revoke_period_start`): such a refusal says nothing about the grant, and the revoke waits
for the credentials to work again however long that takes.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters import aws
from ucoauth.adapters.installations.model import Recovery
from ucoauth.base.errors import (
    AppCredentialsRejectedError,
    KeyUnavailableError,
    LeaseBusyError,
    LeaseHeldError,
    NotInstalledError,
    RevokePendingError,
    TokenDecryptError,
)
from ucoauth.base.observability import logger, metrics
from ucoauth.base.retry import retry_within
from ucoauth.base.validation import is_merchant_id
from ucoauth.core.rotation import revoke_tokens

if TYPE_CHECKING:
    from ucoauth.adapters.crypto import TokenSet
    from ucoauth.adapters.installations.model import Replaced
    from ucoauth.adapters.services import Services
    from ucoauth.base.timing import Deadline

MESSAGE_TYPE = "revoke_superseded"
_MAX_CIPHERTEXT = 6 * 1024

SupersededResult = Literal["revoked", "invalid", "gave_up"]


def queue_superseded(services: Services, deadline: Deadline, merchant_id: str, replaced: Replaced) -> bool:
    """Queue the replaced grant for revocation (retried while the invocation has time). False,
    with ``TokensLost`` counted and logged, when it could not be queued."""
    body = json.dumps(
        {
            "type": MESSAGE_TYPE,
            "merchant_id": merchant_id,
            "generation": replaced.generation,
            "tokens": base64.b64encode(replaced.ciphertext).decode(),
        }
    )
    queue_url = services.settings.revoke_queue_url
    try:
        retry_within(
            services,
            deadline,
            lambda: aws.sqs().send_message(QueueUrl=queue_url, MessageBody=body),
            keep_back=0.0,
        )
    except (ClientError, BotoCoreError) as exc:
        metrics.add_metric(name="TokensLost", unit="Count", value=1)
        logger.error(
            "a replaced grant could not be queued for revocation",
            merchant_id=merchant_id,
            generation=replaced.generation,
            error=type(exc).__name__,
        )
        return False
    metrics.add_metric(name="SupersededGrantQueued", unit="Count", value=1)
    logger.info(
        "replaced grant queued for revocation", merchant_id=merchant_id, generation=replaced.generation
    )
    return True


def is_superseded_message(body: Any) -> bool:
    return isinstance(body, dict) and body.get("type") == MESSAGE_TYPE


def revoke_superseded(services: Services, body: dict[str, Any], *, deadline: Deadline) -> SupersededResult:
    """Revoke a replaced grant's two tokens at UltraCart under the merchant's lease.

    ``invalid`` for a malformed message (dropped). Raises :class:`RevokePendingError` while
    UltraCart cannot confirm (the worker re-queues it, delayed) and gives up, counting
    ``TokensLost``, once ``REVOKE_RETRY_SECONDS`` have passed since the first attempt. A busy
    lease raises :class:`LeaseHeldError` (re-queued, no receive spent); a KMS fault or an AWS
    error raise, so the message comes back.
    """
    merchant_id = body.get("merchant_id")
    encoded = body.get("tokens")
    if not isinstance(merchant_id, str) or not is_merchant_id(merchant_id) or not isinstance(encoded, str):
        metrics.add_metric(name="UninstallMalformed", unit="Count", value=1)
        logger.warning("malformed superseded-grant message dropped")
        return "invalid"
    try:
        ciphertext = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        ciphertext = b""
    if not 0 < len(ciphertext) <= _MAX_CIPHERTEXT:
        metrics.add_metric(name="UninstallMalformed", unit="Count", value=1)
        logger.warning("malformed superseded-grant message dropped", merchant_id=merchant_id)
        return "invalid"
    try:
        tokens = services.cipher.decrypt(merchant_id, ciphertext)
    except TokenDecryptError:
        # Not a ciphertext of this merchant's tokens: nothing to revoke with it.
        metrics.add_metric(name="UninstallMalformed", unit="Count", value=1)
        logger.warning("superseded-grant message does not decrypt", merchant_id=merchant_id)
        return "invalid"
    except KeyUnavailableError:
        raise
    first_try = revoke_period_start(services, body)
    try:
        revoked = _revoke_under_lease(services, deadline, merchant_id, tokens)
    except AppCredentialsRejectedError as exc:
        raise RevokePendingError(
            exc.retry_after, retry_since=first_try, app_refused_at=services.now()
        ) from exc
    if revoked:
        _forget_record(services, merchant_id, body.get("generation"), ciphertext)
        metrics.add_metric(name="SupersededGrantRevoked", unit="Count", value=1)
        logger.info("replaced grant revoked", merchant_id=merchant_id)
        return "revoked"
    retry_seconds = services.settings.revoke_retry_seconds
    if services.now() - first_try >= retry_seconds:
        metrics.add_metric(name="TokensLost", unit="Count", value=1)
        logger.error("a replaced grant could not be revoked in time", merchant_id=merchant_id)
        return "gave_up"
    raise RevokePendingError(revoke_backoff(services, first_try), retry_since=first_try)


def _revoke_under_lease(services: Services, deadline: Deadline, merchant_id: str, tokens: TokenSet) -> bool:
    """One UltraCart conversation per merchant at a time: the lease keeps a refresh out (a
    ``hold:`` lease does not keep this revoke out; a busy one raises :class:`LeaseHeldError`)."""
    try:
        lease = services.installations.lease(
            merchant_id,
            owner=f"revoke:{uuid.uuid4()}",
            now=services.now(),
            until=deadline.lease_until,
            through_hold=True,
        )
    except NotInstalledError:
        return revoke_tokens(services, deadline, merchant_id, tokens, raise_app_refusal=True)
    except LeaseBusyError as busy:
        raise LeaseHeldError.of(busy, services.now()) from busy
    with lease:
        return revoke_tokens(services, deadline, merchant_id, tokens, raise_app_refusal=True)


def _forget_record(services: Services, merchant_id: str, generation: Any, ciphertext: bytes) -> None:
    """The revoked grant's record on the item (kept by the install's write) is cleared, if it still
    holds those tokens. Best effort: a record left is revoked again by the next lease holder
    (UltraCart answers that it is invalid already)."""
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
        return
    record = Recovery(ciphertext, generation, issued_at=0, expires_in=None, token_type="", scope="")
    try:
        services.installations.clear_recovery(merchant_id, record, active=True)
    except (ClientError, BotoCoreError) as exc:
        logger.warning(
            "revoked grant's record not cleared", merchant_id=merchant_id, error=type(exc).__name__
        )


def revoke_period_start(services: Services, body: Any) -> int:
    """When the revoke period of a queued revoke began (epoch seconds): its first attempt
    (``retry_since``, now for a first attempt), moved later by the time since an attempt UltraCart
    refused with the app's own credentials (``app_refused_at``): that time does not count."""
    now = services.now()
    since = _epoch(body, "retry_since") or now
    refused_at = _epoch(body, "app_refused_at")
    if refused_at is not None:
        since = min(now, since + max(0, now - refused_at))
    return since


def _epoch(body: Any, name: str) -> int | None:
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def revoke_backoff(services: Services, retry_since: int) -> float:
    """Seconds until the next revoke attempt: growing with the outage, at most SQS's 15-minute delay."""
    elapsed = max(0, services.now() - retry_since)
    return min(900.0, 30.0 + elapsed / 4) * services.rng.uniform(0.5, 1.0)
