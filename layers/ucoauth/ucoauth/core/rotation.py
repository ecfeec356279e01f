"""One rotation of one merchant's tokens, under the merchant's lease.

The rules, in order:

1. The recovery records on the item (tokens UltraCart issued that an earlier holder could not
   write, a grant a reinstall replaced; one per generation) are reconciled first: adopted when
   of the current generation and newer than what is stored, revoked at UltraCart when the
   merchant reinstalled or uninstalled since.
2. No UltraCart call starts unless the invocation's remaining time covers the call and the
   whole write reserve (``ucoauth.base.timing``), and the UltraCart budget has a unit for it.
3. New tokens are written with a version condition before anything else can fail; a failed
   write is retried (never the refresh) while time allows. Tokens that still cannot be written
   are kept encrypted in a recovery record on the item, else in a recovery message on the
   refresh queue; tokens for an installation that is gone are revoked.
4. ``invalid_grant`` is a dead grant only when nothing else explains it: a re-read shows a
   sibling's newer tokens (lost race) or a recovery record (adopt it); a previous holder that
   died holding the lease may have a recovery message in flight, so the lease is held until
   that holder's horizon plus ``RECOVERY_GRACE`` (the dead-holder evidence the lease take keeps
   on the item, ``awaiting_recovery``) and the request comes back then. The recovery message
   takes a held lease (the hold is for it); once adopted the hold is over. A hold whose horizon
   passed with no recovery arrived ends in ``reauthorization_required``.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters.crypto import TokenSet
from ucoauth.adapters.events import INSTALLATION_RESTORED
from ucoauth.adapters.events import REAUTHORIZATION_REQUIRED as REAUTH_EVENT
from ucoauth.adapters.installations.model import (
    ACTIVE,
    REAUTHORIZATION_REQUIRED,
    Installation,
    Recovery,
    TokenFields,
)
from ucoauth.adapters.installations.model import RECOVERY_GRACE as RECOVERY_GRACE  # how long a hold lasts
from ucoauth.adapters.ultracart import TokenResponse
from ucoauth.base.errors import (
    AppCredentialsRejectedError,
    BudgetExhaustedError,
    DeadlineTooCloseError,
    GrantUnsettledError,
    PermanentUltraCartError,
    StaleWriteError,
    TokenDecryptError,
    TransientUltraCartError,
    UltraCartError,
)
from ucoauth.base.observability import logger, metrics
from ucoauth.base.retry import retry_within
from ucoauth.base.timing import AWS_CALL_MAX
from ucoauth.core.outbox import announce

if TYPE_CHECKING:
    from ucoauth.adapters.budget import Tier
    from ucoauth.adapters.installations.store import Lease
    from ucoauth.adapters.services import Services
    from ucoauth.base.timing import Deadline

RotationResult = Literal["refreshed", "recovered", "lost_race", "reauthorization", "kept_for_recovery"]


@dataclass(frozen=True, slots=True)
class Rotated:
    """The outcome of a rotation; ``tokens``/``installation`` are what is now valid, when known."""

    result: RotationResult
    tokens: TokenSet | None = None
    installation: Installation | None = None
    expires_at: int | None = None  # of ``tokens``, when they are not (yet) stored


class Rotation:
    """Rotates one merchant's tokens under ``lease`` before ``deadline``."""

    def __init__(
        self,
        services: Services,
        lease: Lease,
        deadline: Deadline,
        tier: Tier = "background",
        *,
        used_at: int | None = None,
    ) -> None:
        self.s = services
        self.lease = lease
        self.deadline = deadline
        self.tier: Tier = tier
        # A read waiting on this rotation (the token API's inline refresh): recorded as a use.
        self.used_at = used_at

    @property
    def merchant_id(self) -> str:
        return self.lease.merchant_id

    # -- the rotation -----------------------------------------------------------------------

    def run(self) -> Rotated:
        """Refresh the tokens (after reconciling a recovery record). Raises RetryLaterError
        subclasses (nothing was sent, or UltraCart refused the app itself and consumed nothing:
        :class:`AppCredentialsRejectedError`, which changes nothing on the installation),
        TransientUltraCartError, KeyUnavailableError, AWS errors."""
        installation = self.lease.installation
        for record in installation.recoveries:  # older generations first: revoked, then adopted
            reconciled = reconcile(self.s, self.lease, self.deadline, record)
            if reconciled is not None:
                return reconciled
        assert installation.tokens_ciphertext is not None
        try:
            tokens = self.s.cipher.decrypt(self.merchant_id, installation.tokens_ciphertext)
        except TokenDecryptError:
            return self.reauthorize("undecryptable")
        if not tokens.refresh_token:
            return self.reauthorize("no_refresh_token")
        # The data key for what UltraCart will answer, before it is asked: once the grant is
        # rotated, the write and any recovery record are sealed locally, without KMS.
        key = self.s.cipher.data_key(self.merchant_id)
        started = time.perf_counter()
        try:
            # Nothing is sent unless the call and the write reserve fit before the deadline and
            # the budget has a unit for it (DeadlineTooCloseError / BudgetExhaustedError).
            client = self.s.ultracart_for(self.tier, self.deadline, merchant_id=self.merchant_id)
            answer = client.refresh(tokens.refresh_token)
        except PermanentUltraCartError as exc:
            metrics.add_metric(name="TokenRefreshFailed", unit="Count", value=1)
            self._record_failure(exc)
            return self._refused(exc)
        except TransientUltraCartError as exc:
            metrics.add_metric(name="TokenRefreshFailed", unit="Count", value=1)
            logger.warning("refresh failed transiently", merchant_id=self.merchant_id, error=str(exc))
            self._record_failure(exc)
            raise
        metrics.add_metric(
            name="RefreshLatency", unit="Milliseconds", value=(time.perf_counter() - started) * 1000
        )
        # Keep the old refresh token when UltraCart does not rotate it.
        fresh = TokenSet(answer.access_token, answer.refresh_token or tokens.refresh_token)
        sealed = key.seal(fresh)
        return persist(
            self.s,
            self.lease,
            self.deadline,
            fresh,
            answer,
            issued_at=self.s.now(),
            sealed=sealed,
            used_at=self.used_at,
        )

    def _record_failure(self, exc: UltraCartError) -> None:
        """For operators (the admin API): the failure's code and the count since the last token."""
        code = exc.error or (f"http_{exc.status}" if exc.status else type(exc).__name__)
        try:
            self.s.installations.record_failure(self.merchant_id, code=code, now=self.s.now())
        except (ClientError, BotoCoreError) as error:
            logger.warning(
                "refresh failure not recorded", merchant_id=self.merchant_id, error=type(error).__name__
            )

    def _refused(self, exc: PermanentUltraCartError) -> Rotated:
        merchant_id = self.merchant_id
        if not exc.requires_reauthorization:
            # Our request was wrong, not the grant: fail (the queue retries, then its DLQ alarms)
            # rather than asking every merchant to install again.
            logger.error("UltraCart rejected the refresh request", merchant_id=merchant_id, error=str(exc))
            raise exc
        held = self.lease.installation
        current = self.s.installations.get(merchant_id)
        if current is not None and current.version != held.version:
            # Someone stored newer tokens while we called: their refresh used the token first.
            logger.info("refresh lost a race to a sibling", merchant_id=merchant_id)
            return Rotated("lost_race")
        for record in current.recoveries if current is not None else ():
            adopted = reconcile(self.s, self.lease, self.deadline, record, current=current)
            if adopted is not None:
                return adopted
        settle_at = max(held.awaiting_recovery or 0, (current.awaiting_recovery if current else None) or 0)
        if self.s.now() < settle_at:
            # A holder died with the lease: it may have rotated the grant and sent the new tokens
            # to the queue. Nobody decides before they can arrive; their message takes the hold.
            self.lease.hold_until(settle_at)
            logger.warning("refresh token refused after a dead holder; waiting", merchant_id=merchant_id)
            raise GrantUnsettledError(settle_at - self.s.now())
        logger.warning("UltraCart refused the refresh token", merchant_id=merchant_id, error=str(exc))
        return self.reauthorize(exc.error or f"http_{exc.status}")

    def reauthorize(self, reason: str) -> Rotated:
        """UltraCart refused the grant (or the row is damaged): reauthorization_required + event."""
        return reauthorize(self.s, self.lease, reason)


def reauthorize(services: Services, lease: Lease, reason: str) -> Rotated:
    """Mark reauthorization_required (version-conditioned; the write clears the lease), announce it."""
    installation = lease.installation
    merchant_id = installation.merchant_id
    version = services.installations.mark_reauthorization_required(
        merchant_id, expected_version=installation.version, now=services.now()
    )
    if version is None:
        return Rotated("lost_race")
    lease.cleared()
    metrics.add_metric(name="ReauthorizationRequired", unit="Count", value=1)
    logger.warning("installation needs reauthorization", merchant_id=merchant_id, reason=reason)
    announce(
        services,
        merchant_id,
        REAUTH_EVENT,
        {"merchant_id": merchant_id, "generation": installation.generation, "reason": reason},
        version=version,
        active=False,
        parked=installation.pending_event,
    )
    return Rotated("reauthorization")


# -- storing what UltraCart issued ------------------------------------------------------------


def _stored_fields(
    services: Services,
    held: Installation,
    tokens: TokenSet,
    answer: TokenResponse,
    *,
    issued_at: int,
    sealed: bytes,
    used_at: int | None,
) -> TokenFields:
    """What a token write stores: the envelope, the expiry, and when the new lifetime is due
    (ahead of its expiry only when it is in demand: the merchant's last two uses, this read
    included)."""
    from ucoauth.core.issued import in_demand, token_fields

    last, previous = held.last_used_at, held.previous_used_at
    if used_at is not None:
        last, previous = used_at, held.last_used_at
    lifetime = answer.expires_in or services.settings.assumed_token_lifetime_seconds
    ahead = in_demand(
        services, now=issued_at, lifetime=lifetime, last_used_at=last, previous_used_at=previous
    )
    return token_fields(
        services,
        held.merchant_id,
        tokens,
        answer,
        issued_at=issued_at,
        ahead=ahead,
        used_at=used_at,
        previous_used_at=held.last_used_at if used_at is not None else None,
        ciphertext=sealed,
    )


def persist(
    services: Services,
    lease: Lease,
    deadline: Deadline,
    tokens: TokenSet,
    answer: TokenResponse,
    *,
    issued_at: int,
    sealed: bytes,
    recovered: Recovery | None = None,
    used_at: int | None = None,
) -> Rotated:
    """Store tokens UltraCart issued for the leased installation; never drop them. ``sealed`` is
    their envelope, sealed with a data key fetched before UltraCart answered (no KMS call here).
    ``used_at``: a read this write serves (an inline refresh), recorded as the latest use."""
    merchant_id = lease.merchant_id
    held = lease.installation
    fields = _stored_fields(
        services, held, tokens, answer, issued_at=issued_at, sealed=sealed, used_at=used_at
    )
    try:
        stored = retry_within(
            services,
            deadline,
            lambda: services.installations.write_refreshed_tokens(
                merchant_id,
                expected_version=held.version,
                tokens=fields,
                now=services.now(),
                recovered=recovered,
            ),
            keep_back=AWS_CALL_MAX,
        )
    except StaleWriteError:
        current = services.installations.get(merchant_id)
        if current is not None and current.tokens_ciphertext == fields.ciphertext:
            # Our own write was applied; only its answer was lost (a timeout, then the retry).
            lease.cleared()
            return Rotated("recovered" if recovered is not None else "refreshed", tokens, current)
        return _installation_moved(services, lease, deadline, tokens, answer, issued_at, sealed)
    except (ClientError, BotoCoreError) as exc:
        logger.error("tokens could not be stored", merchant_id=merchant_id, error=type(exc).__name__)
        keep_for_recovery(services, lease, sealed, answer, issued_at=issued_at, generation=held.generation)
        expires_at = issued_at + answer.expires_in if answer.expires_in is not None else None
        return Rotated("kept_for_recovery", tokens=tokens, expires_at=expires_at)
    lease.cleared()
    if recovered is not None:
        return Rotated("recovered", tokens=tokens, installation=stored)
    metrics.add_metric(name="TokenRefreshed", unit="Count", value=1)
    logger.info("token refreshed", merchant_id=merchant_id, version=stored.version)
    return Rotated("refreshed", tokens=tokens, installation=stored)


def _installation_moved(
    services: Services,
    lease: Lease,
    deadline: Deadline,
    tokens: TokenSet,
    answer: TokenResponse,
    issued_at: int,
    sealed: bytes,
) -> Rotated:
    """The version moved under our lease: a reinstall or an uninstall. Tokens of a generation
    that is gone are revoked; anything else is kept for the next holder to reconcile."""
    merchant_id = lease.merchant_id
    held = lease.installation
    current = services.installations.get(merchant_id)
    gone = current is None or current.generation != held.generation
    gone = gone or current is None or current.status not in (ACTIVE, REAUTHORIZATION_REQUIRED)
    if gone and revoke_tokens(services, deadline, merchant_id, tokens):
        logger.info("tokens of a replaced installation revoked", merchant_id=merchant_id)
        return Rotated("lost_race")
    logger.warning("refreshed tokens not stored: installation changed", merchant_id=merchant_id)
    keep_for_recovery(services, lease, sealed, answer, issued_at=issued_at, generation=held.generation)
    return Rotated("lost_race")


def revoke_tokens(
    services: Services,
    deadline: Deadline,
    merchant_id: str | None,
    tokens: TokenSet,
    *,
    raise_app_refusal: bool = False,
    tier: Tier = "background",
) -> bool:
    """Revoke both tokens at UltraCart (budgeted); True when UltraCart confirmed or already knew
    them as invalid, False when it could not be asked (time, budget, a transient failure).

    A refusal of the app's own credentials never confirms a revoke: False, or with
    ``raise_app_refusal`` the :class:`AppCredentialsRejectedError` itself (for callers whose
    give-up clock must not count that time)."""
    client = services.ultracart_for(tier, deadline, merchant_id=merchant_id)
    try:
        for token in (tokens.refresh_token, tokens.access_token):
            if token:
                client.revoke(token)  # False means already invalid: counts as revoked
    except AppCredentialsRejectedError:
        logger.warning("revoke waits: UltraCart refused the app's credentials", merchant_id=merchant_id)
        if raise_app_refusal:
            raise
        return False
    except (TransientUltraCartError, BudgetExhaustedError, DeadlineTooCloseError) as exc:
        logger.warning("revoke failed; will retry", merchant_id=merchant_id, error=str(exc))
        return False
    except (ClientError, BotoCoreError) as exc:
        # The budget's table failed before anything was sent: not asked, like a spent budget.
        # The caller keeps the tokens for recovery (or counts them lost), as for any failure.
        logger.warning(
            "revoke not attempted: the budget could not be read",
            merchant_id=merchant_id,
            error=type(exc).__name__,
        )
        return False
    except PermanentUltraCartError as exc:
        logger.warning("UltraCart refused the revoke", merchant_id=merchant_id, error=str(exc))
        return exc.requires_reauthorization  # 410/invalid_grant: the grant is dead already
    return True


def keep_for_recovery(
    services: Services,
    lease: Lease,
    sealed: bytes,
    answer: TokenResponse,
    *,
    issued_at: int,
    generation: int,
) -> None:
    """Keep tokens that could not be written (``sealed``: their envelope, made without KMS after
    the answer): a recovery record on the item, else a recovery message on the refresh queue.
    Only when both fail are they lost."""
    merchant_id = lease.merchant_id
    record = Recovery(
        ciphertext=sealed,
        generation=generation,
        issued_at=issued_at,
        expires_in=answer.expires_in,
        token_type=answer.token_type,
        scope=answer.scope,
    )
    try:
        services.installations.keep_recovery(merchant_id, record, now=services.now())
        metrics.add_metric(name="TokensKeptForRecovery", unit="Count", value=1)
        logger.warning("tokens kept in a recovery record", merchant_id=merchant_id)
        return
    except (ClientError, BotoCoreError) as exc:
        logger.error("recovery record not written", merchant_id=merchant_id, error=type(exc).__name__)
    if not services.settings.has("refresh"):
        # Only the functions that own the refresh queue (its settings section) may write to it;
        # the token API and an app's own get_access_token have neither the variable nor the right.
        metrics.add_metric(name="TokensLost", unit="Count", value=1)
        logger.error("issued tokens lost: nowhere to keep them", merchant_id=merchant_id, error="no_queue")
        return
    from ucoauth.adapters import aws

    try:
        aws.sqs().send_message(
            QueueUrl=services.settings.refresh_queue_url,
            MessageBody=json.dumps({"merchant_id": merchant_id, "recovery": recovery_to_json(record)}),
        )
        metrics.add_metric(name="TokensKeptForRecovery", unit="Count", value=1)
        logger.warning("tokens kept in a recovery message", merchant_id=merchant_id)
    except (ClientError, BotoCoreError) as exc:
        metrics.add_metric(name="TokensLost", unit="Count", value=1)
        logger.error(
            "issued tokens lost: nowhere to keep them", merchant_id=merchant_id, error=type(exc).__name__
        )


def recovery_to_json(record: Recovery) -> dict[str, Any]:
    """A recovery record as a queue message carries it (the ciphertext base64; no plaintext)."""
    return {
        "tokens": base64.b64encode(record.ciphertext).decode(),
        "generation": record.generation,
        "issued_at": record.issued_at,
        "expires_in": record.expires_in,
        "token_type": record.token_type,
        "scope": record.scope,
    }


def recovery_from_json(value: Any) -> Recovery | None:
    """The record a recovery message carries, or None when malformed."""
    try:
        expires_in = value.get("expires_in")
        return Recovery(
            ciphertext=base64.b64decode(str(value["tokens"]), validate=True),
            generation=int(value["generation"]),
            issued_at=int(value["issued_at"]),
            expires_in=int(expires_in) if expires_in is not None else None,
            token_type=str(value.get("token_type") or "bearer"),
            scope=str(value.get("scope") or ""),
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _adopted(services: Services, installation: Installation, outcome: Rotated) -> None:
    """A recovery record adopted: counted, and a reauthorized installation announced restored."""
    merchant_id = installation.merchant_id
    metrics.add_metric(name="TokensRecovered", unit="Count", value=1)
    logger.info("recovered tokens adopted", merchant_id=merchant_id)
    if installation.status == REAUTHORIZATION_REQUIRED and outcome.installation is not None:
        announce(
            services,
            merchant_id,
            INSTALLATION_RESTORED,
            {"merchant_id": merchant_id, "generation": installation.generation},
            version=outcome.installation.version,
            active=True,
            parked=installation.pending_event,
        )


def reconcile(
    services: Services,
    lease: Lease,
    deadline: Deadline,
    record: Recovery,
    *,
    current: Installation | None = None,
) -> Rotated | None:
    """Adopt or revoke a recovery record. Returns the outcome when it settled the rotation (the
    record's tokens are now the installation's), None when the caller should carry on."""
    installation = current or lease.installation
    merchant_id = installation.merchant_id
    same_grant = record.generation == installation.generation and installation.status in (
        ACTIVE,
        REAUTHORIZATION_REQUIRED,
    )
    if same_grant and record.issued_at >= (installation.refreshed_at or 0):
        tokens = services.cipher.decrypt(merchant_id, record.ciphertext)
        answer = TokenResponse(
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_in=record.expires_in,
            token_type=record.token_type,
            scope=record.scope,
        )
        if current is not None:
            lease.installation = current
        # Re-sealed under a data key of its own (the record may be of the first format): a KMS
        # failure here leaves the record where it is, for the next holder.
        sealed = services.cipher.data_key(merchant_id).seal(tokens)
        outcome = persist(
            services,
            lease,
            deadline,
            tokens,
            answer,
            issued_at=record.issued_at,
            sealed=sealed,
            recovered=record,
        )
        if outcome.result == "recovered":
            _adopted(services, installation, outcome)
        return outcome
    if not same_grant:
        # The merchant reinstalled or uninstalled since: this grant must not stay live.
        tokens = services.cipher.decrypt(merchant_id, record.ciphertext)
        if not revoke_tokens(services, deadline, merchant_id, tokens):
            return None  # kept; the next holder tries again
        logger.info("recovered tokens of a replaced installation revoked", merchant_id=merchant_id)
    services.installations.clear_recovery(merchant_id, record, active=installation.status == ACTIVE)
    return None
