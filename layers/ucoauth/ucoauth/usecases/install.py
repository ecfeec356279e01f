"""The browser flow: start an install (state + cookie) and complete it (code exchange)."""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters.browser_items import Receipt
from ucoauth.adapters.crypto import TokenSet
from ucoauth.adapters.events import INSTALLATION_COMPLETED, INSTALLATION_RELINKED
from ucoauth.adapters.table import digest
from ucoauth.adapters.ultracart import authorize_url
from ucoauth.base.errors import (
    DeadlineTooCloseError,
    InstallSessionRequiredError,
    InstallSessionUnknownError,
    TransientUltraCartError,
)
from ucoauth.base.observability import logger, metrics
from ucoauth.base.retry import retry_within
from ucoauth.base.timing import AWS_CALL_MAX, WRITE_RESERVE, Deadline, call_needs
from ucoauth.base.validation import is_merchant_id
from ucoauth.core.issued import token_fields
from ucoauth.core.outbox import Event, announce

if TYPE_CHECKING:
    from ucoauth.adapters.browser_items import AccountLink
    from ucoauth.adapters.budget import BudgetedUltraCart
    from ucoauth.adapters.installations.model import Installation, Replaced
    from ucoauth.adapters.services import Services
    from ucoauth.adapters.ultracart import TokenResponse

STATE_COOKIE = "__Host-ucoauth_state"
RECEIPT_COOKIE = "__Host-ucoauth_receipt"
# How long the clean success URL keeps showing the success page (reloads, restored tabs).
RECEIPT_SECONDS = 3600
_RECEIPT_NONCE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class InstallStart:
    """Where to send the browser, and the nonce its cookie must carry back."""

    authorize_url: str = field(repr=False)
    browser_nonce: str = field(repr=False)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class InstallResult:
    """A completed installation (no secrets)."""

    merchant_id: str
    generation: int
    reinstall: bool
    # Where the app asked the browser to go back to (an install session's return_url), or None.
    return_url: str | None = None


def begin_install(services: Services, *, redirect_uri: str, session: str | None = None) -> InstallStart:
    """Make a one-time state (256 bits), store its hash bound to a fresh browser nonce and, with
    ``session`` (an install link's secret), to what that session links the installation to.

    Raises :class:`~ucoauth.base.errors.InstallSessionError` (nothing stored) for a session that
    cannot start an install, or when one is required and none was given.
    """
    from ucoauth.usecases.install_sessions import SESSION_SECRET

    link = None
    if session is not None:
        if not SESSION_SECRET.fullmatch(session):
            raise InstallSessionUnknownError("malformed install session")
        link = services.install_sessions.usable(session, now=services.now())
    elif services.settings.require_install_session == "true":
        raise InstallSessionRequiredError("an install session is required")
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    services.states.put(
        state,
        browser_nonce=nonce,
        now=services.now(),
        ttl_seconds=services.settings.state_ttl_seconds,
        link=link,
    )
    settings = services.settings
    url = authorize_url(
        settings.ultracart_base_url, settings.ultracart_client_id, redirect_uri=redirect_uri, state=state
    )
    metrics.add_metric(name="InstallStarted", unit="Count", value=1)
    return InstallStart(authorize_url=url, browser_nonce=nonce)


def complete_install(
    services: Services,
    *,
    code: str,
    state: str,
    browser_nonce: str,
    redirect_uri: str,
    deadline: Deadline,
) -> InstallResult:
    """Consume the state, exchange the code, encrypt and store the tokens, announce it.

    Raises StateInvalidError (nothing called), PermanentUltraCartError (code refused),
    TransientUltraCartError (UltraCart down, slow or malformed), BudgetExhaustedError and
    DeadlineTooCloseError (nothing sent to UltraCart).
    """
    if not deadline.allows(call_needs(services.settings)):
        raise DeadlineTooCloseError(deadline.remaining())
    now = services.now()
    consumed = services.states.consume(state, browser_nonce=browser_nonce, now=now)
    # A state stored without its issue time is at most its lifetime old.
    issued_at = consumed.issued_at
    began_at = issued_at if issued_at is not None else now - services.settings.state_ttl_seconds
    link = consumed.link
    if link is not None:  # one install per session: claimed before the code is exchanged
        services.install_sessions.mark_used(link.session_digest, by=digest(state), now=now)
    try:
        # A merchant is waiting in the browser: these calls may use the budget's reserve.
        client = services.ultracart_for("callback", deadline)
        answer = client.exchange_code(code, redirect_uri)
        result = store_new_installation(
            services, client, deadline, answer, install_id=digest(state), began_at=began_at, link=link
        )
    except Exception:
        if link is not None:  # not completed: the session may start another install
            _release_session(services, link, state)
        raise
    return dataclasses.replace(result, return_url=link.return_url if link is not None else None)


def _release_session(services: Services, link: AccountLink, state: str) -> None:
    try:
        services.install_sessions.release(link.session_digest, by=digest(state))
    except (ClientError, BotoCoreError) as exc:
        logger.warning("install session not released", session_id=link.session_id, error=type(exc).__name__)


def store_new_installation(
    services: Services,
    client: BudgetedUltraCart,
    deadline: Deadline,
    answer: TokenResponse,
    *,
    install_id: str,
    began_at: int,
    link: AccountLink | None = None,
) -> InstallResult:
    """Tokens UltraCart just issued for a new grant (a code exchange, an approved device): store
    them as the merchant's installation (a new generation, due for refresh by their lifetime) and
    announce ``Installation Completed``. The browser callback and the device flow both end here,
    so an install landing over an active installation is one code path whichever way it came.

    ``install_id`` is unique to one install flow: a retry of a write that already landed counts no
    second generation; ``began_at`` is when the flow began (the state issued, the device
    authorization created), what a later uninstall is judged against. When the tokens cannot be
    stored, whatever the reason (``/oauth/me`` failing, refused by the budget or the deadline, a
    malformed merchant id, the write failing), they are revoked at UltraCart (no installation
    exists to keep them on) and the error raised.
    """
    tokens = TokenSet(access_token=answer.access_token, refresh_token=answer.refresh_token)
    merchant_id = answer.merchant_id
    if merchant_id is None:
        try:
            merchant_id = client.me(answer.access_token).merchant_id
        except Exception as exc:  # whatever failed (UltraCart, the budget, the time): the grant is live
            _give_back(services, deadline, None, tokens, why=type(exc).__name__)
            raise
    if not is_merchant_id(merchant_id):
        _give_back(services, deadline, None, tokens, why="malformed merchant id")
        raise TransientUltraCartError("UltraCart answered a malformed merchant id")
    installation, replaced = _write_installation(
        services, deadline, merchant_id, tokens, answer, install_id, began_at, link
    )
    if replaced is not None:
        # The grant this install replaced is still live at UltraCart: have it revoked. Imported
        # here: a first install (the common case) never needs the revoke queue's code.
        from ucoauth.usecases.superseded import queue_superseded

        queue_superseded(services, deadline, merchant_id, replaced)
    reinstall = installation.generation > 1
    metrics.add_metric(name="InstallCompleted", unit="Count", value=1)
    logger.info(
        "installation stored",
        merchant_id=merchant_id,
        generation=installation.generation,
        reinstall=reinstall,
    )
    _announce_installed(services, installation, reinstall=reinstall)
    return InstallResult(merchant_id=merchant_id, generation=installation.generation, reinstall=reinstall)


def _write_installation(
    services: Services,
    deadline: Deadline,
    merchant_id: str,
    tokens: TokenSet,
    answer: TokenResponse,
    install_id: str,
    began_at: int,
    link: AccountLink | None,
) -> tuple[Installation, Replaced | None]:
    """Store the new grant. It is issued at UltraCart now: a failed write would lose it, so the
    write is retried while the invocation has time; if it still fails, the grant is revoked
    rather than orphaned, and the AWS error raised (or :class:`AccountConflictError` when the
    merchant is linked to another account and relinking is refused)."""
    refuse = link is not None and services.settings.install_relink == "refuse"
    try:
        fields = retry_within(
            services,
            deadline,
            lambda: token_fields(services, merchant_id, tokens, answer),
            keep_back=AWS_CALL_MAX,
        )
        return retry_within(
            services,
            deadline,
            lambda: services.installations.replace_installation(
                merchant_id,
                fields,
                now=services.now(),
                install_id=install_id,
                began_at=began_at,
                link=link,
                refuse_relink=refuse,
            ),
            keep_back=AWS_CALL_MAX,
        )
    except Exception as exc:  # any failure here leaves the grant unstored
        _give_back(services, deadline, merchant_id, tokens, why=type(exc).__name__)
        raise


def _announce_installed(services: Services, installation: Installation, *, reinstall: bool) -> None:
    """ "Installation Completed", then "Installation Relinked" when the install moved it to another
    account: both through the outbox (parked on the item, in order, when EventBridge refuses)."""
    merchant_id = installation.merchant_id
    then: tuple[Event, ...] = ()
    if installation.relinked_from is not None:
        logger.info(
            "installation relinked",
            merchant_id=merchant_id,
            previous_app_account_id=installation.relinked_from,
            app_account_id=installation.app_account_id,
        )
        relinked = {
            "merchant_id": merchant_id,
            "installation_id": installation.installation_id,
            "previous_app_account_id": installation.relinked_from,
            "app_account_id": installation.app_account_id,
        }
        then = ((INSTALLATION_RELINKED, relinked),)
    announce(
        services,
        merchant_id,
        INSTALLATION_COMPLETED,
        {
            "merchant_id": merchant_id,
            "installation_id": installation.installation_id,
            "generation": installation.generation,
            "installed_at": installation.installed_at,
            "reinstall": reinstall,
            "scope": installation.scope,
            "app_account_id": installation.app_account_id,
            "metadata": installation.account_metadata,
        },
        version=installation.version,
        active=True,
        parked=installation.pending_event,
        then=then,
    )


def _give_back(
    services: Services, deadline: Deadline, merchant_id: str | None, tokens: TokenSet, *, why: str
) -> None:
    """Tokens UltraCart issued that cannot be stored: revoke them, so no grant is left live at
    UltraCart that nobody holds (the merchant starts the install again). Nothing is written after
    a give-back, so its revoke may use the time kept back for that write (all but one AWS call),
    and the budget's reserve (``callback``): a grant given back is rare and must not stay live."""
    from ucoauth.core.rotation import revoke_tokens  # the failure path only: not on every cold start

    room = Deadline(deadline.at + WRITE_RESERVE - AWS_CALL_MAX, deadline.clock)
    try:
        revoked = revoke_tokens(services, room, merchant_id, tokens, tier="callback")
    except (ClientError, BotoCoreError):  # the budget's table: the error that brought us here wins
        revoked = False
    if revoked:
        logger.warning("unstored install tokens revoked", merchant_id=merchant_id, reason=why)
    else:
        metrics.add_metric(name="TokensLost", unit="Count", value=1)
        logger.error("install tokens neither stored nor revoked", merchant_id=merchant_id, reason=why)


def issue_receipt(services: Services, result: InstallResult, *, state: str) -> str | None:
    """Store a success receipt for this browser; the nonce for its cookie, or None if not stored.

    The installation is already complete: a failed receipt write must not turn it into an
    error page, so the caller then shows the success page directly instead.
    """
    nonce = secrets.token_urlsafe(32)
    receipt = Receipt(
        merchant_id=result.merchant_id,
        reinstall=result.reinstall,
        state_digest=digest(state),
        return_url=result.return_url,
    )
    try:
        services.receipts.put(nonce, receipt, now=services.now(), ttl_seconds=RECEIPT_SECONDS)
    except (ClientError, BotoCoreError) as exc:
        logger.warning("success receipt not stored", merchant_id=result.merchant_id, error=type(exc).__name__)
        return None
    return nonce


def read_receipt(services: Services, nonce: str | None) -> Receipt | None:
    """The completed install a receipt cookie proves, or None (absent, malformed, unknown, expired)."""
    if not nonce or not _RECEIPT_NONCE.match(nonce):
        return None
    return services.receipts.get(nonce, now=services.now())


def state_issued_here(services: Services, nonce: str | None, *, state: str) -> bool:
    """Whether this browser (its state cookie ``nonce``) started the install ``state`` belongs to.

    Asked on an error redirect (a Deny): only then is the state cookie this attempt's to clear. A
    newer /install in another tab has replaced it, and that tab still needs it."""
    if not nonce or not state:
        return False
    try:
        return services.states.issued_to(state, browser_nonce=nonce)
    except (BotoCoreError, ClientError) as exc:
        # The page matters more than the cookie: keep it (it expires with the state) and go on.
        logger.warning("could not read the state of a refused authorization", error=type(exc).__name__)
        return False


def receipt_for_callback(services: Services, nonce: str | None, *, state: str) -> Receipt | None:
    """The receipt of the install that consumed ``state``: a reload of its own callback URL."""
    receipt = read_receipt(services, nonce)
    if receipt is None or not secrets.compare_digest(receipt.state_digest, digest(state)):
        return None
    return receipt
