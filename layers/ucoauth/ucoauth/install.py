"""The browser flow: start an install (state + cookie) and complete it (code exchange)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ucoauth.crypto import TokenSet
from ucoauth.errors import TransientUltraCartError
from ucoauth.events import INSTALLATION_COMPLETED
from ucoauth.observability import logger, metrics
from ucoauth.outbox import announce
from ucoauth.retry import retry_write
from ucoauth.tokens import token_fields
from ucoauth.ultracart import authorize_url
from ucoauth.validation import is_merchant_id

if TYPE_CHECKING:
    from ucoauth.services import Services

STATE_COOKIE = "__Host-ucoauth_state"


@dataclass(frozen=True, slots=True)
class InstallStart:
    """Where to send the browser, and the nonce its cookie must carry back."""

    authorize_url: str = field(repr=False)
    browser_nonce: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class InstallResult:
    """A completed installation (no secrets)."""

    merchant_id: str
    generation: int
    reinstall: bool


def begin_install(services: Services, *, redirect_uri: str) -> InstallStart:
    """Make a one-time state (256 bits), store its hash bound to a fresh browser nonce."""
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    services.states.put(
        state, browser_nonce=nonce, now=services.now(), ttl_seconds=services.settings.state_ttl_seconds
    )
    settings = services.settings
    url = authorize_url(
        settings.ultracart_base_url, settings.ultracart_client_id, redirect_uri=redirect_uri, state=state
    )
    metrics.add_metric(name="InstallStarted", unit="Count", value=1)
    return InstallStart(authorize_url=url, browser_nonce=nonce)


def complete_install(
    services: Services, *, code: str, state: str, browser_nonce: str, redirect_uri: str
) -> InstallResult:
    """Consume the state, exchange the code, encrypt and store the tokens, announce it.

    Raises StateInvalidError (nothing called), PermanentUltraCartError (code refused) or
    TransientUltraCartError (UltraCart down, slow or malformed).
    """
    services.states.consume(state, browser_nonce=browser_nonce, now=services.now())
    client = services.ultracart
    answer = client.exchange_code(code, redirect_uri)
    merchant_id = answer.merchant_id
    if merchant_id is None:
        merchant_id = client.me(answer.access_token).merchant_id
    if not is_merchant_id(merchant_id):
        raise TransientUltraCartError("UltraCart answered a malformed merchant id")
    tokens = TokenSet(access_token=answer.access_token, refresh_token=answer.refresh_token)
    # The code is spent at UltraCart now: a failed write would lose the grant, so retry it.
    fields = retry_write(services, lambda: token_fields(services, merchant_id, tokens, answer))
    installation = retry_write(
        services, lambda: services.installations.save_installation(merchant_id, fields, now=services.now())
    )
    reinstall = installation.generation > 1
    metrics.add_metric(name="InstallCompleted", unit="Count", value=1)
    logger.info(
        "installation stored",
        merchant_id=merchant_id,
        generation=installation.generation,
        reinstall=reinstall,
    )
    announce(
        services,
        merchant_id,
        INSTALLATION_COMPLETED,
        {
            "merchant_id": merchant_id,
            "generation": installation.generation,
            "installed_at": installation.installed_at,
            "reinstall": reinstall,
            "scope": installation.scope,
        },
        version=installation.version,
        active=True,
    )
    return InstallResult(merchant_id=merchant_id, generation=installation.generation, reinstall=reinstall)
