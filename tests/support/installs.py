"""Installations for tests: installed through the real flow against the fake UltraCart (unit),
or seeded with tokens the local sandbox really issued (integration); and their stored tokens."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.support.deadlines import a_deadline
from tests.support.fake_ultracart import FakeUltraCart
from ucoauth.adapters.crypto import TokenSet
from ucoauth.adapters.services import Services
from ucoauth.adapters.ultracart import TokenResponse
from ucoauth.core.issued import token_fields
from ucoauth.usecases.install import begin_install, complete_install
from ucsandbox import Sandbox

REDIRECT = "https://api.example/oauth/callback"


def install(services: Services, uc: FakeUltraCart, merchant_id: str = "DEMO1") -> None:
    start = begin_install(services, redirect_uri=REDIRECT)
    state = parse_qs(urlsplit(start.authorize_url).query)["state"][0]
    complete_install(
        services,
        code=uc.new_code(merchant_id),
        state=state,
        browser_nonce=start.browser_nonce,
        redirect_uri=REDIRECT,
        deadline=a_deadline(services, 29),
    )


def store_installation(services: Services, merchant_id: str, *, expires_in: int = 3600) -> None:
    """An active installation stored as a completed callback stores it (encrypted tokens, due
    time), without the browser's round trip: for tests that need many installations."""
    tokens = TokenSet(f"access-{merchant_id}", f"refresh-{merchant_id}")
    answer = TokenResponse(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=expires_in,
        merchant_id=merchant_id,
    )
    fields = token_fields(services, merchant_id, tokens, answer)
    services.installations.save_installation(merchant_id, fields, now=services.now())


def stored_refresh_token(services: Services, merchant_id: str = "DEMO1") -> str | None:
    installation = services.installations.get(merchant_id)
    assert installation is not None and installation.tokens_ciphertext is not None
    return services.cipher.decrypt(merchant_id, installation.tokens_ciphertext).refresh_token


def seed_installation(
    services: Services, sandbox: Sandbox, merchant_id: str, *, expires_in: int = 60
) -> tuple[str, str]:
    """An installation whose tokens the sandbox really issued; returns (access, refresh)."""
    pair = sandbox.issue_tokens(merchant_id, expires_in=expires_in)
    answer = TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=expires_in,
        merchant_id=merchant_id,
    )
    fields = token_fields(services, merchant_id, TokenSet(pair.access_token, pair.refresh_token), answer)
    services.installations.save_installation(merchant_id, fields, now=services.now())
    return pair.access_token, pair.refresh_token


def stored_tokens(services: Services, merchant_id: str) -> TokenSet:
    installation = services.installations.get(merchant_id)
    assert installation is not None
    assert installation.tokens_ciphertext is not None
    return services.cipher.decrypt(merchant_id, installation.tokens_ciphertext)
