"""Token refresh and token access: the planner, the worker's refresh, and ``get_access_token``.

The rules (DESIGN §5): a lease per merchant taken with a conditional write; new tokens written
with a version condition before anything else can fail; if the write fails, the write is
retried, never the refresh; on ``invalid_grant`` one re-read tells a lost race (the version
moved: a sibling refreshed) from a dead grant.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.crypto import TokenSet
from ucoauth.errors import (
    EventRelayError,
    LeaseBusyError,
    NotInstalledError,
    PaceExceededError,
    PermanentUltraCartError,
    ReauthorizationRequiredError,
    TokenDecryptError,
    TransientUltraCartError,
    UpstreamUnavailableError,
)
from ucoauth.events import REAUTHORIZATION_REQUIRED as REAUTH_EVENT
from ucoauth.observability import logger, metrics
from ucoauth.outbox import announce, relay
from ucoauth.retry import is_transient_aws_error, retry_write
from ucoauth.store import (
    ACTIVE,
    REAUTHORIZATION_REQUIRED,
    Installation,
    StaleWriteError,
    TokenFields,
)

if TYPE_CHECKING:
    from ucoauth.services import Services
    from ucoauth.ultracart import TokenResponse

_LEASE_WAIT_SECONDS = 6.0


@dataclass(frozen=True, slots=True)
class AccessToken:
    """What a caller of the token API gets. ``access_token`` is kept out of ``repr``."""

    merchant_id: str
    access_token: str = field(repr=False)
    token_type: str
    expires_at: int | None
    scope: str

    def as_json(self) -> dict[str, str | None]:
        """The body of ``GET /tokens/{merchant_id}``."""
        expires = (
            datetime.fromtimestamp(self.expires_at, tz=UTC).isoformat().replace("+00:00", "Z")
            if self.expires_at is not None
            else None
        )
        return {
            "merchant_id": self.merchant_id,
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": expires,
            "scope": self.scope,
        }


RefreshResult = Literal[
    "refreshed", "not_due", "busy", "not_installed", "inactive", "lost_race", "reauthorization"
]


def refresh_window(settings_min: int, fraction: float, lifetime: int | None) -> int:
    """The larger of the minimum window and ``fraction`` of the token's lifetime."""
    return max(settings_min, int(fraction * lifetime)) if lifetime else settings_min


def token_fields(
    services: Services, merchant_id: str, tokens: TokenSet, answer: TokenResponse
) -> TokenFields:
    """Encrypt the tokens and compute expiry and the next due time (with jitter)."""
    settings = services.settings
    now = services.now()
    # UltraCart may omit expires_in (or send garbage): the token still expires, so it is
    # scheduled on an assumed lifetime rather than never refreshed. The API reports null.
    lifetime = answer.expires_in or settings.assumed_token_lifetime_seconds
    window = refresh_window(settings.refresh_min_window_seconds, settings.refresh_window_fraction, lifetime)
    # Jitter spreads a wave of installs made at the same moment over later planner runs.
    jitter = int(services.rng.uniform(0, window * 0.1))
    return TokenFields(
        ciphertext=services.cipher.encrypt(merchant_id, tokens),
        token_type=answer.token_type,
        scope=answer.scope,
        access_expires_at=now + lifetime,
        token_lifetime=lifetime,
        due_at=now + lifetime - window - jitter,
        expiry_assumed=answer.expires_in is None,
    )


class Refresher:
    """Refreshes one merchant's tokens under its lease."""

    def __init__(self, services: Services) -> None:
        self.s = services

    # -- planner -----------------------------------------------------------------------

    def plan(self, *, stats: dict[str, int] | None = None) -> list[str]:
        """Merchants due for a refresh now, at most what the pace allows before the next run.

        Queueing more than the workers may send to UltraCart before the planner runs again would
        only bounce messages between the queue and the pace (each bounce a receive, the fifth a
        dead letter); the rest stays in the sparse index, in due order, for the next run.
        """
        settings = self.s.settings
        budget = settings.refresh_pace_limit * max(
            1, settings.planner_interval_seconds // settings.refresh_pace_window_seconds
        )
        return self.s.installations.due_merchants(now=self.s.now(), limit=budget, stats=stats)

    # -- worker --------------------------------------------------------------------------

    def refresh_due(self, merchant_id: str) -> RefreshResult:
        """Refresh a due installation (the worker's path). Transient failures raise.

        Raises :class:`TransientUltraCartError` / :class:`PaceExceededError` / AWS errors so
        the message goes back to the queue; everything else ends in a result.
        """
        if self.s.clock() < self.s.pace_blocked_until:
            # The window's budget is known to be spent: no lease, no counter read, no call.
            raise PaceExceededError(self.s.pace_blocked_until - self.s.clock())
        owner = f"worker:{uuid.uuid4()}"
        now = self.s.now()
        try:
            installation = self.s.installations.take_lease(
                merchant_id, owner=owner, now=now, seconds=self.s.settings.lease_seconds, due_before=now
            )
        except LeaseBusyError:
            return "busy"
        except NotInstalledError:
            return "not_installed"
        if installation is None:
            return "not_due"
        if installation.pending_event and not relay(self.s, installation) and installation.status != ACTIVE:
            self.s.installations.release_lease(merchant_id, owner=owner)
            raise EventRelayError(merchant_id)  # the message comes back; the event stays parked
        if installation.status != ACTIVE or installation.tokens_ciphertext is None:
            if installation.status == ACTIVE or not installation.pending_event:
                self.s.installations.release_lease(merchant_id, owner=owner)
            return "inactive"
        try:
            wait = self.s.pace.try_take(self.s.clock())
            if wait > 0:
                self.s.pace_blocked_until = self.s.clock() + wait
                raise PaceExceededError(wait)
            result = self._refresh_under_lease(installation, owner)[0]
        except BaseException:
            self._release_quietly(merchant_id, owner)
            raise
        if result != "refreshed":
            self._release_quietly(merchant_id, owner)
        return result

    # -- token access ---------------------------------------------------------------------

    def access_token(self, merchant_id: str) -> AccessToken:
        """A valid access token; refreshed inline under the lease when close to expiry."""
        installation = self._active(merchant_id)
        margin = self.s.settings.inline_refresh_margin_seconds
        if not self._expiring(installation, margin):
            try:
                return self._serve(installation)
            except TokenDecryptError:
                # The row is broken for good: say so now (state + event), not at the next refresh.
                self._reauthorize(installation, reason="undecryptable")
                raise ReauthorizationRequiredError(merchant_id) from None
        owner = f"api:{uuid.uuid4()}"
        try:
            leased = self.s.installations.take_lease(
                merchant_id, owner=owner, now=self.s.now(), seconds=self.s.settings.lease_seconds
            )
        except LeaseBusyError:
            return self._wait_for_sibling(merchant_id, installation)
        except NotInstalledError:
            raise
        if leased is None or leased.status != ACTIVE:  # pragma: no cover - no due condition given
            self._release_quietly(merchant_id, owner)
            return self._serve(self._active(merchant_id))
        if leased.version != installation.version and not self._expiring(leased, margin):
            self._release_quietly(merchant_id, owner)
            return self._serve(leased)
        try:
            wait = self.s.pace.try_take(self.s.clock())
            if wait > 0 and not self._expired(leased):
                # The budget is spent and the stored token still works: serve it.
                self._release_quietly(merchant_id, owner)
                return self._serve(leased)
            result, fresh = self._refresh_under_lease(leased, owner)
        except (TransientUltraCartError, PermanentUltraCartError, ClientError, BotoCoreError) as exc:
            self._release_quietly(merchant_id, owner)
            if isinstance(exc, ClientError | BotoCoreError) and not is_transient_aws_error(exc):
                raise
            if not self._expired(leased):
                logger.warning("inline refresh failed; serving the stored token", merchant_id=merchant_id)
                return self._serve(leased)
            raise UpstreamUnavailableError(merchant_id) from None
        except BaseException:
            self._release_quietly(merchant_id, owner)
            raise
        if result == "reauthorization":
            raise ReauthorizationRequiredError(merchant_id)
        if fresh is None:  # lost the race: a sibling's tokens are stored
            self._release_quietly(merchant_id, owner)
            return self._serve(self._active(merchant_id))
        return fresh

    # -- internals ------------------------------------------------------------------------

    def _active(self, merchant_id: str) -> Installation:
        installation = self.s.installations.get(merchant_id)
        if (
            installation is None
            or installation.tokens_ciphertext is None
            or installation.status
            not in (
                ACTIVE,
                REAUTHORIZATION_REQUIRED,
            )
        ):
            raise NotInstalledError(merchant_id)
        if installation.status == REAUTHORIZATION_REQUIRED:
            raise ReauthorizationRequiredError(merchant_id)
        return installation

    def _expiring(self, installation: Installation, margin: int) -> bool:
        expires = installation.access_expires_at
        return expires is not None and expires - self.s.now() <= margin

    def _expired(self, installation: Installation) -> bool:
        expires = installation.access_expires_at
        return expires is not None and expires <= self.s.now()

    def _serve(self, installation: Installation, tokens: TokenSet | None = None) -> AccessToken:
        if tokens is None:
            assert installation.tokens_ciphertext is not None
            try:
                tokens = self.s.cipher.decrypt(installation.merchant_id, installation.tokens_ciphertext)
            except TokenDecryptError:
                logger.error("stored tokens do not decrypt", merchant_id=installation.merchant_id)
                raise
        return AccessToken(
            merchant_id=installation.merchant_id,
            access_token=tokens.access_token,
            token_type=installation.token_type,
            expires_at=None if installation.expiry_assumed else installation.access_expires_at,
            scope=installation.scope,
        )

    def _wait_for_sibling(self, merchant_id: str, seen: Installation) -> AccessToken:
        """Another caller is refreshing: wait briefly for its write, then serve what is valid."""
        deadline = self.s.clock() + _LEASE_WAIT_SECONDS
        delay = 0.05
        current = seen
        while self.s.clock() < deadline:
            self.s.sleep(delay)
            delay = min(delay * 2, 0.5)
            current = self._active(merchant_id)
            if current.version != seen.version or not current.lease_held(self.s.now()):
                break
        if self._expired(current):
            raise UpstreamUnavailableError(merchant_id)
        return self._serve(current)

    def _release_quietly(self, merchant_id: str, owner: str) -> None:
        try:
            self.s.installations.release_lease(merchant_id, owner=owner)
        except (ClientError, BotoCoreError):
            # The lease expires by itself; never hide the original failure behind this one.
            logger.warning("lease not released; it will expire", merchant_id=merchant_id)

    def _refresh_under_lease(
        self, installation: Installation, owner: str
    ) -> tuple[RefreshResult, AccessToken | None]:
        merchant_id = installation.merchant_id
        assert installation.tokens_ciphertext is not None
        try:
            tokens = self.s.cipher.decrypt(merchant_id, installation.tokens_ciphertext)
        except TokenDecryptError:
            return self._reauthorize(installation, reason="undecryptable"), None
        if not tokens.refresh_token:
            return self._reauthorize(installation, reason="no_refresh_token"), None
        started = time.perf_counter()
        try:
            answer = self.s.ultracart.refresh(tokens.refresh_token)
        except PermanentUltraCartError as exc:
            metrics.add_metric(name="TokenRefreshFailed", unit="Count", value=1)
            if not exc.requires_reauthorization:
                # Our request was wrong, not the grant: fail (the queue retries, then its DLQ
                # alarms) rather than asking every merchant to install again.
                logger.error(
                    "UltraCart rejected the refresh request", merchant_id=merchant_id, error=str(exc)
                )
                raise
            current = self.s.installations.get(merchant_id)
            if current is not None and current.version != installation.version:
                # Someone stored newer tokens while we called: their refresh used the same
                # refresh token first. Not a dead grant.
                logger.info("refresh lost a race to a sibling", merchant_id=merchant_id)
                self._release_quietly(merchant_id, owner)
                return "lost_race", None
            logger.warning("UltraCart refused the refresh token", merchant_id=merchant_id, error=str(exc))
            return self._reauthorize(installation, reason=exc.error or f"http_{exc.status}"), None
        except TransientUltraCartError as exc:
            metrics.add_metric(name="TokenRefreshFailed", unit="Count", value=1)
            logger.warning("refresh failed transiently", merchant_id=merchant_id, error=str(exc))
            raise
        metrics.add_metric(
            name="RefreshLatency", unit="Milliseconds", value=(time.perf_counter() - started) * 1000
        )
        # Keep the old refresh token when UltraCart does not rotate it.
        new_tokens = TokenSet(
            access_token=answer.access_token, refresh_token=answer.refresh_token or tokens.refresh_token
        )
        stored = self._write_with_retries(installation, new_tokens, answer)
        if stored is None:
            return "lost_race", None
        metrics.add_metric(name="TokenRefreshed", unit="Count", value=1)
        logger.info("token refreshed", merchant_id=merchant_id, version=stored.version)
        return "refreshed", self._serve(stored, new_tokens)

    def _write_with_retries(
        self, installation: Installation, tokens: TokenSet, answer: TokenResponse
    ) -> Installation | None:
        """Write the new tokens; on a transient failure retry the write (never the refresh)."""
        merchant_id = installation.merchant_id
        fields = retry_write(self.s, lambda: token_fields(self.s, merchant_id, tokens, answer))
        try:
            return retry_write(
                self.s,
                lambda: self.s.installations.write_refreshed_tokens(
                    merchant_id, expected_version=installation.version, tokens=fields, now=self.s.now()
                ),
            )
        except StaleWriteError:
            # Only an install, uninstall or reauthorization moves the version while we hold
            # the lease; their state wins and these tokens are orphaned.
            logger.warning("refreshed tokens not stored: installation changed", merchant_id=merchant_id)
            return None
        except (ClientError, BotoCoreError):
            logger.error("refreshed tokens could not be stored", merchant_id=merchant_id)
            raise

    def _reauthorize(self, installation: Installation, *, reason: str) -> RefreshResult:
        merchant_id = installation.merchant_id
        version = self.s.installations.mark_reauthorization_required(
            merchant_id, expected_version=installation.version, now=self.s.now()
        )
        if version is None:
            return "lost_race"
        metrics.add_metric(name="ReauthorizationRequired", unit="Count", value=1)
        logger.warning("installation needs reauthorization", merchant_id=merchant_id, reason=reason)
        announce(
            self.s,
            merchant_id,
            REAUTH_EVENT,
            {"merchant_id": merchant_id, "generation": installation.generation, "reason": reason},
            version=version,
            active=False,
        )
        return "reauthorization"


# -- the Python API for the app's own functions ---------------------------------------------

_cache_lock = threading.Lock()
_cache: dict[str, tuple[float, AccessToken]] = {}


def get_access_token(merchant_id: str, *, cache_seconds: float = 60.0) -> AccessToken:
    """A valid access token for ``merchant_id``, for Lambda functions in the app's account.

    Reads the installation table and decrypts with KMS (the caller's role needs those rights),
    refreshing inline under the merchant's lease when the token is close to expiry. Results are
    cached in memory for at most ``cache_seconds`` and never past the refresh margin; pass 0 to
    skip the cache. Raises :class:`NotInstalledError`, :class:`ReauthorizationRequiredError` or
    :class:`UpstreamUnavailableError`.
    """
    from ucoauth.services import get_services
    from ucoauth.validation import is_merchant_id

    if not is_merchant_id(merchant_id):
        raise NotInstalledError("malformed merchant id")
    services = get_services()
    now = services.clock()
    if cache_seconds > 0:
        with _cache_lock:
            hit = _cache.get(merchant_id)
        if hit is not None and hit[0] > now:
            return hit[1]
    token = Refresher(services).access_token(merchant_id)
    if cache_seconds > 0:
        until = now + cache_seconds
        if token.expires_at is not None:
            until = min(until, token.expires_at - services.settings.inline_refresh_margin_seconds)
        if until > now:
            with _cache_lock:
                _cache[merchant_id] = (until, token)
    return token


def clear_token_cache() -> None:
    """Forget every cached access token (e.g. after an uninstall event)."""
    with _cache_lock:
        _cache.clear()
