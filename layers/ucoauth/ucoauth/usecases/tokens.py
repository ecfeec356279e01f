"""Token access: a valid access token for the app's services, refreshed inline under the lease.

``GET /tokens/{merchant_id}`` and :func:`get_access_token` both come here. A token that expires
within the margin is refreshed under the merchant's lease (see ``ucoauth.core.rotation``); a caller
that finds the lease held waits briefly for the holder's write and serves what is valid. When
no valid token can be served and UltraCart cannot be asked now, the answer is
:class:`UpstreamUnavailableError` with the seconds to wait when known.

A caller may demand more (:class:`Demand`): a token valid ``min_valid_seconds`` more seconds, or
one ``newer_than`` the version of a token UltraCart refused (a 401). Both are met the same way: a
stored token that meets the demand is served; otherwise the lease holder refreshes, after
re-reading the item under the lease, so a burst of callers that saw the same refused token
costs one refresh (the others find the newer version, or wait for it).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters.crypto import TokenSet
from ucoauth.adapters.installations.model import ACTIVE, REAUTHORIZATION_REQUIRED, Installation
from ucoauth.base.errors import (
    LeaseBusyError,
    NotInstalledError,
    PermanentUltraCartError,
    ReauthorizationRequiredError,
    RetryLaterError,
    TokenDecryptError,
    TransientUltraCartError,
    UpstreamUnavailableError,
)
from ucoauth.base.observability import logger
from ucoauth.base.retry import is_transient_aws_error

if TYPE_CHECKING:
    from ucoauth.adapters.installations.store import Lease
    from ucoauth.adapters.services import Services
    from ucoauth.base.timing import Deadline

_LEASE_WAIT_SECONDS = 6.0
# UltraCart failed transiently and the stored token cannot be served: when to ask again.
_RETRY_AFTER_FAILURE = 5
# The most ``min_valid_seconds`` may ask: below UltraCart's one-hour token lifetime with room for
# the refresh itself, so a freshly refreshed token always meets it.
MAX_MIN_VALID_SECONDS = 3300


@dataclass(frozen=True, slots=True)
class Demand:
    """What a caller needs beyond "valid now": at least ``min_valid_seconds`` of validity left, and
    a version above ``newer_than`` (the version of a token UltraCart refused)."""

    min_valid_seconds: int | None = None
    newer_than: int | None = None


@dataclass(frozen=True, slots=True)
class AccessToken:
    """What a caller of the token API gets. ``access_token`` is kept out of ``repr``."""

    merchant_id: str
    access_token: str = field(repr=False)
    token_type: str
    expires_at: int | None
    scope: str
    # The installation's version the token was served from: a caller whose token UltraCart
    # refused asks for one ``newer_than`` it.
    version: int = 0
    # The app's own account the installation is linked to (an install session), or None.
    app_account_id: str | None = None

    def as_json(self) -> dict[str, str | int | None]:
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
            "version": self.version,
            "app_account_id": self.app_account_id,
        }


def _active(services: Services, merchant_id: str) -> Installation:
    installation = services.installations.get(merchant_id)
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


def _expires_within(services: Services, installation: Installation, seconds: int) -> bool:
    expires = installation.access_expires_at
    return expires is not None and expires - services.now() <= seconds


def _serve(services: Services, installation: Installation, tokens: TokenSet | None = None) -> AccessToken:
    if tokens is None:
        assert installation.tokens_ciphertext is not None
        tokens = services.cipher.decrypt(installation.merchant_id, installation.tokens_ciphertext)
    return AccessToken(
        merchant_id=installation.merchant_id,
        access_token=tokens.access_token,
        token_type=installation.token_type,
        expires_at=None if installation.expiry_assumed else installation.access_expires_at,
        scope=installation.scope,
        version=installation.version,
        app_account_id=installation.app_account_id,
    )


def _min_valid(installation: Installation, demand: Demand, margin: int) -> int:
    """``min_valid_seconds`` as far as UltraCart's tokens can meet it: at most their lifetime less
    the margin. A demand past what a fresh token lives would otherwise refresh on every call."""
    asked = demand.min_valid_seconds or 0
    lifetime = installation.token_lifetime
    return min(asked, max(0, lifetime - margin)) if lifetime else asked


def _meets(services: Services, installation: Installation, demand: Demand, margin: int) -> bool:
    """The stored token may be served as it is: it outlives the margin (and what was demanded)
    and is newer than the refused one."""
    wanted = max(margin, _min_valid(installation, demand, margin))
    if _expires_within(services, installation, wanted):
        return False
    return demand.newer_than is None or installation.version > demand.newer_than


def _fallback_ok(services: Services, installation: Installation, demand: Demand) -> bool:
    """When no refresh can happen now: the stored token still does what the caller asked (valid,
    long enough, not the one UltraCart refused)."""
    if _expired(services, installation):
        return False
    wanted = _min_valid(installation, demand, services.settings.inline_refresh_margin_seconds)
    if wanted and _expires_within(services, installation, wanted - 1):
        return False
    return demand.newer_than is None or installation.version > demand.newer_than


def access_token(
    services: Services, merchant_id: str, *, deadline: Deadline, demand: Demand | None = None
) -> AccessToken:
    """A valid access token; refreshed inline under the lease when it expires within the margin,
    or when it does not meet ``demand`` (validity left, newer than a refused version).

    Raises NotInstalledError, ReauthorizationRequiredError, UpstreamUnavailableError and
    KeyUnavailableError (KMS refused to work: no state changes because of it).
    """
    demand = demand or Demand()
    installation = _active(services, merchant_id)
    margin = services.settings.inline_refresh_margin_seconds
    if _meets(services, installation, demand, margin):
        try:
            served = _serve(services, installation)
        except TokenDecryptError:
            # The row is damaged (the key works): say so now, not at the next refresh.
            _reauthorize_without_lease(services, installation)
            raise ReauthorizationRequiredError(merchant_id) from None
        _mark_used(services, installation)
        return served
    try:
        lease = services.installations.lease(
            merchant_id, owner=f"api:{uuid.uuid4()}", now=services.now(), until=deadline.lease_until
        )
    except LeaseBusyError:
        return _wait_for_sibling(services, merchant_id, installation, demand)
    with lease:
        leased = lease.installation
        if leased.status != ACTIVE or leased.tokens_ciphertext is None:
            return _serve(services, _active(services, merchant_id))
        if _meets(services, leased, demand, margin):
            # A sibling refreshed between our read and our lease (the item is re-read under it):
            # a burst of callers that saw the same refused token costs one refresh.
            return _serve(services, leased)
        return _refresh_inline(services, lease, deadline, demand)


def _refresh_inline(services: Services, lease: Lease, deadline: Deadline, demand: Demand) -> AccessToken:
    # Deferred, like every refresh-only module: a token read from the store never needs it.
    from ucoauth.core.rotation import Rotation

    leased = lease.installation
    merchant_id = leased.merchant_id
    try:
        rotated = Rotation(services, lease, deadline, used_at=services.now()).run()
    except RetryLaterError as exc:
        # Nothing was sent (budget, time, an unsettled grant): the stored token while it lasts.
        if _fallback_ok(services, leased, demand):
            return _serve(services, leased)
        raise UpstreamUnavailableError(merchant_id, retry_after=exc.retry_after) from None
    except (TransientUltraCartError, PermanentUltraCartError, ClientError, BotoCoreError) as exc:
        # A refusal that means a dead grant ends in "reauthorization" inside the rotation; a
        # PermanentUltraCartError here is UltraCart rejecting our request (alarmed where it
        # happened): like a failure, it must not take away a token that still works.
        if isinstance(exc, ClientError | BotoCoreError) and not is_transient_aws_error(exc):
            raise
        if _fallback_ok(services, leased, demand):
            logger.warning("inline refresh failed; serving the stored token", merchant_id=merchant_id)
            return _serve(services, leased)
        raise UpstreamUnavailableError(merchant_id, retry_after=_RETRY_AFTER_FAILURE) from None
    if rotated.result == "reauthorization":
        raise ReauthorizationRequiredError(merchant_id)
    if rotated.tokens is not None:
        if rotated.installation is not None:
            return _serve(services, rotated.installation, rotated.tokens)
        # Issued but kept for recovery (not stored yet): still a valid token for this caller.
        return AccessToken(
            merchant_id=merchant_id,
            access_token=rotated.tokens.access_token,
            token_type=leased.token_type,
            expires_at=rotated.expires_at,
            scope=leased.scope,
            # Not stored yet: it carries the version it replaces, so a caller it fails for asks
            # again and the next holder adopts (or refreshes past) the recovery record.
            version=leased.version,
            app_account_id=leased.app_account_id,
        )
    return _serve(services, _active(services, merchant_id))  # lost the race: a sibling's tokens


def _mark_used(services: Services, installation: Installation) -> None:
    """Record the first read of the stored token's lifetime: one conditional write per lifetime
    (later reads of it see ``used_until`` and write nothing). A lifetime that was due only on use
    is due ahead of its expiry from now on: it is in use. Best effort."""
    expires = installation.access_expires_at
    if expires is None or installation.used_until == expires:
        return
    due_at = None
    if installation.due_at is not None and installation.due_at > expires:
        settings = services.settings
        from ucoauth.core.issued import refresh_window  # the first read of a lifetime only

        window = refresh_window(
            settings.refresh_min_window_seconds, settings.refresh_window_fraction, installation.token_lifetime
        )
        due_at = expires - window
    try:
        services.installations.mark_used(
            installation.merchant_id,
            now=services.now(),
            expires=expires,
            previous_used_at=installation.last_used_at,
            due_at=due_at,
        )
    except (ClientError, BotoCoreError) as exc:
        logger.warning("use not recorded", merchant_id=installation.merchant_id, error=type(exc).__name__)


def _expired(services: Services, installation: Installation) -> bool:
    expires = installation.access_expires_at
    return expires is not None and expires <= services.now()


def _wait_for_sibling(
    services: Services, merchant_id: str, seen: Installation, demand: Demand
) -> AccessToken:
    """Another caller is refreshing: wait briefly for its write, then serve what is valid (and
    meets ``demand``)."""
    deadline = services.clock() + _LEASE_WAIT_SECONDS
    delay = 0.05
    current = seen
    while services.clock() < deadline:
        services.sleep(delay)
        delay = min(delay * 2, 0.5)
        current = _active(services, merchant_id)
        if current.version != seen.version or not current.lease_held(services.now()):
            break
    if not _fallback_ok(services, current, demand):
        retry = (current.lease_expires_at or services.now()) - services.now()
        raise UpstreamUnavailableError(merchant_id, retry_after=max(1, retry))
    return _serve(services, current)


def _reauthorize_without_lease(services: Services, installation: Installation) -> None:
    """Damaged row seen by a reader: the same conditional write and event a lease holder makes."""
    from ucoauth.adapters.installations.store import Lease
    from ucoauth.core.rotation import reauthorize

    lease = Lease(services.installations, installation, owner="reader")
    lease.done = True  # nothing to release: this reader holds no lease
    reauthorize(services, lease, "undecryptable")


# -- the Python API for the app's own functions ---------------------------------------------

_cache_lock = threading.Lock()
_cache: dict[str, tuple[float, AccessToken]] = {}


def get_access_token(merchant_id: str, *, cache_seconds: float = 60.0, context: Any = None) -> AccessToken:
    """A valid access token for ``merchant_id``, for Lambda functions in the app's account.

    Reads the installation table and decrypts with KMS (the caller's role needs those rights),
    refreshing inline under the merchant's lease when the token is close to expiry. Results are
    cached in memory for at most ``cache_seconds`` and never past the refresh margin; pass 0 to
    skip the cache. Raises :class:`NotInstalledError`, :class:`ReauthorizationRequiredError` or
    :class:`UpstreamUnavailableError`.

    Pass the caller's Lambda ``context``: an inline refresh then starts only when the caller's
    remaining time covers the UltraCart call and the write that stores its answer (otherwise the
    stored token while it is valid, else :class:`UpstreamUnavailableError`). Without it the
    deadline is one short call and its write (``Deadline.in_process``).
    """
    from ucoauth.adapters.services import get_services
    from ucoauth.base.validation import is_merchant_id

    if not is_merchant_id(merchant_id):
        raise NotInstalledError("malformed merchant id")
    services = get_services()
    now = services.clock()
    if cache_seconds > 0:
        with _cache_lock:
            hit = _cache.get(merchant_id)
        if hit is not None and hit[0] > now:
            return hit[1]
    from ucoauth.base.timing import Deadline

    deadline = Deadline.in_process(services.settings, services.clock, context)
    token = access_token(services, merchant_id, deadline=deadline)
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
