"""Uninstall: accept a signed webhook (or an EventBridge event), then revoke and crypto-shred.

The webhook function only verifies, records the webhook id and queues; the revoke worker does
the slow part (UltraCart revoke under the merchant's lease), so a sender gets a fast 202.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.errors import (
    LeaseBusyError,
    NotInstalledError,
    PermanentUltraCartError,
    TokenDecryptError,
    TransientUltraCartError,
    WebhookRejectedError,
)
from ucoauth.events import INSTALLATION_REMOVED
from ucoauth.observability import logger, metrics
from ucoauth.outbox import announce
from ucoauth.store import UNINSTALLED
from ucoauth.validation import is_merchant_id

if TYPE_CHECKING:
    from ucoauth.services import Services

UNINSTALL_DETAIL_TYPE = "App Uninstalled"
WEBHOOK_TYPE = "app.uninstalled"
MAX_WEBHOOK_BODY = 8 * 1024
WEBHOOK_ID_TTL_SECONDS = 7 * 86_400  # far beyond the 5-minute signature tolerance
REVOKE_ATTEMPTS = 4  # below the queue's maxReceiveCount (5): shred before the DLQ


@dataclass(frozen=True, slots=True)
class UninstallRequest:
    """A parsed uninstall, whichever way it came."""

    merchant_id: str
    requested_at: datetime
    source: str
    request_id: str


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_uninstall_message(body: Any) -> UninstallRequest | None:
    """The revoke queue's message (EventBridge event shape), or None when malformed."""
    if not isinstance(body, dict) or body.get("detail-type") != UNINSTALL_DETAIL_TYPE:
        return None
    detail = body.get("detail")
    merchant_id = detail.get("merchant_id") if isinstance(detail, dict) else None
    when = _parse_time(body.get("time"))
    if not isinstance(merchant_id, str) or not is_merchant_id(merchant_id) or when is None:
        return None
    return UninstallRequest(
        merchant_id=merchant_id,
        requested_at=when,
        source=str(body.get("source") or "unknown")[:128],
        request_id=str(body.get("id") or "")[:128],
    )


# -- webhook --------------------------------------------------------------------------------

_secret_lock = threading.Lock()
_provider: Any = None
_verifier: tuple[str, Any] | None = None
SECRET_MAX_AGE = 300


def _webhook_verifier(services: Services) -> Any:
    """A ``standardwebhooks.Webhook`` for the secret, read through Powertools' cached provider.

    The provider (and its cache) lives for the whole process, so a warm invocation makes no
    Secrets Manager call; a rotated secret is picked up within ``SECRET_MAX_AGE`` seconds.
    """
    global _provider, _verifier
    from standardwebhooks.webhooks import Webhook

    with _secret_lock:
        if _provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            from ucoauth import aws

            _provider = SecretsProvider(boto3_client=aws.secretsmanager())
        secret = str(_provider.get(services.settings.webhook_secret_arn, max_age=SECRET_MAX_AGE))
        if _verifier is None or _verifier[0] != secret:
            _verifier = (secret, Webhook(secret))
        return _verifier[1]


def reset_webhook_secret_cache() -> None:
    """Forget the cached secret and provider (tests, or after rotating the secret by hand)."""
    global _provider, _verifier
    with _secret_lock:
        _provider = None
        _verifier = None


def accept_webhook(
    services: Services, body: bytes, headers: dict[str, str]
) -> Literal["queued", "duplicate"]:
    """Verify a Standard Webhooks uninstall, record its id, queue it.

    Raises :class:`WebhookRejectedError` with 401 (signature, timestamp), 400 (body) or 413
    (size); nothing is recorded or queued then.
    """
    if len(body) > MAX_WEBHOOK_BODY:
        raise WebhookRejectedError("body too large", status=413)
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    if not webhook_id or len(webhook_id) > 256:
        raise WebhookRejectedError("missing or malformed webhook-id", status=401)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRejectedError("body is not UTF-8", status=400) from None
    try:
        _webhook_verifier(services).verify(text, lowered, json_parse=False)
    except Exception:  # noqa: BLE001 - the library raises several types for malformed headers
        metrics.add_metric(name="WebhookRejected", unit="Count", value=1)
        raise WebhookRejectedError("signature verification failed", status=401) from None
    try:
        payload = json.loads(text)
    except ValueError:
        raise WebhookRejectedError("body is not JSON", status=400) from None
    if not isinstance(payload, dict) or payload.get("type") != WEBHOOK_TYPE:
        raise WebhookRejectedError(f"type must be {WEBHOOK_TYPE}", status=400)
    data = payload.get("data")
    merchant_id = data.get("merchant_id") if isinstance(data, dict) else None
    if not isinstance(merchant_id, str) or not is_merchant_id(merchant_id):
        raise WebhookRejectedError("data.merchant_id is missing or malformed", status=400)
    when = _parse_time(payload.get("timestamp"))
    if when is None:
        raise WebhookRejectedError("timestamp must be ISO-8601", status=400)

    now = services.now()
    if not services.webhook_ids.record(webhook_id, now=now, ttl_seconds=WEBHOOK_ID_TTL_SECONDS):
        logger.info("duplicate webhook acknowledged", merchant_id=merchant_id)
        return "duplicate"
    message = {
        "id": f"webhook:{webhook_id}",
        "source": "webhook",
        "detail-type": UNINSTALL_DETAIL_TYPE,
        "time": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "detail": {"merchant_id": merchant_id},
    }
    from ucoauth import aws

    try:
        aws.sqs().send_message(QueueUrl=services.settings.revoke_queue_url, MessageBody=json.dumps(message))
    except Exception:
        # Not queued: forget the id so the sender's retry is acted on.
        services.webhook_ids.forget(webhook_id)
        raise
    metrics.add_metric(name="UninstallQueued", unit="Count", value=1)
    logger.info("uninstall queued", merchant_id=merchant_id)
    return "queued"


# -- revoke worker --------------------------------------------------------------------------

RevokeResult = Literal["removed", "not_installed", "already_uninstalled", "late", "invalid"]


def process_uninstall(services: Services, body: Any, *, receive_count: int = 1) -> RevokeResult:
    """Revoke at UltraCart, delete the ciphertext, keep a tombstone. Idempotent.

    Raises (so the message is retried) on a held lease, a transient UltraCart failure within
    the retry budget, or an AWS error.
    """
    request = parse_uninstall_message(body)
    if request is None:
        logger.warning("malformed uninstall message dropped")
        metrics.add_metric(name="UninstallMalformed", unit="Count", value=1)
        return "invalid"
    merchant_id = request.merchant_id
    requested = int(request.requested_at.timestamp())
    store = services.installations
    owner = f"revoke:{uuid.uuid4()}"
    try:
        # The lease comes back with the item: no separate read (and no refresh can start now).
        leased = store.take_lease(
            merchant_id, owner=owner, now=services.now(), seconds=services.settings.lease_seconds
        )
    except NotInstalledError:
        logger.info("uninstall for a merchant never installed", merchant_id=merchant_id)
        return "not_installed"
    except LeaseBusyError:
        raise  # a refresh is in flight; the queue brings us back after it
    assert leased is not None
    if leased.status == UNINSTALLED:
        store.release_lease(merchant_id, owner=owner)
        return "already_uninstalled"
    if requested < leased.installed_at:
        store.release_lease(merchant_id, owner=owner)
        logger.info("late uninstall ignored: the merchant installed again since", merchant_id=merchant_id)
        metrics.add_metric(name="LateUninstallIgnored", unit="Count", value=1)
        return "late"

    revoke_failure = ""
    if leased.tokens_ciphertext is not None:
        try:
            tokens = services.cipher.decrypt(merchant_id, leased.tokens_ciphertext)
            client = services.ultracart
            for token in (tokens.refresh_token, tokens.access_token):
                if token:
                    client.revoke(token)  # False means already invalid: counts as revoked
        except TransientUltraCartError as exc:
            if receive_count < REVOKE_ATTEMPTS:
                store.release_lease(merchant_id, owner=owner)
                logger.warning("revoke failed; will retry", merchant_id=merchant_id, error=str(exc))
                raise
            revoke_failure = "revoke_failed_transient"
        except PermanentUltraCartError as exc:
            revoke_failure = f"revoke_refused_{exc.status}"
        except TokenDecryptError:
            revoke_failure = "undecryptable"
        except BaseException:
            store.release_lease(merchant_id, owner=owner)
            raise

    reason = f"{request.source}" + (f";{revoke_failure}" if revoke_failure else "")
    now = services.now()
    try:
        version = store.mark_uninstalled(
            merchant_id,
            expected_version=leased.version,
            reason=reason,
            now=now,
            ttl=now + services.settings.tombstone_ttl_days * 86_400,
        )
    except BaseException:
        _release_quietly(services, merchant_id, owner)  # the redelivery must not find it busy
        raise
    if version is None:
        # Only a reinstall moves the version under our lease: it is newer than this uninstall
        # if it installed after the request; otherwise retry against the new version.
        _release_quietly(services, merchant_id, owner)
        latest = store.get(merchant_id)
        if latest is not None and requested < latest.installed_at:
            metrics.add_metric(name="LateUninstallIgnored", unit="Count", value=1)
            return "late"
        raise RuntimeError("installation changed during uninstall; retrying")
    if revoke_failure:
        metrics.add_metric(name="RevokeFailed", unit="Count", value=1)
        logger.error(
            "tokens shredded without confirmed revocation", merchant_id=merchant_id, reason=revoke_failure
        )
    metrics.add_metric(name="InstallationRemoved", unit="Count", value=1)
    logger.info("installation removed", merchant_id=merchant_id, generation=leased.generation)
    announce(
        services,
        merchant_id,
        INSTALLATION_REMOVED,
        {
            "merchant_id": merchant_id,
            "generation": leased.generation,
            "source": request.source,
            "revoked": not revoke_failure,
        },
        version=version,
        active=False,
    )
    return "removed"


def _release_quietly(services: Services, merchant_id: str, owner: str) -> None:
    try:
        services.installations.release_lease(merchant_id, owner=owner)
    except (ClientError, BotoCoreError):
        logger.warning("lease not released; it will expire", merchant_id=merchant_id)
