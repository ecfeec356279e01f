"""What a token write stores for tokens UltraCart just issued: the ciphertext, the expiry and
when the planner should refresh them.

Apart from ``ucoauth.usecases.tokens`` (token access, whose classes the install path never needs): an
install stores tokens the same way a refresh does, and imports only this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ucoauth.adapters.installations.model import TokenFields

if TYPE_CHECKING:
    from ucoauth.adapters.crypto import TokenSet
    from ucoauth.adapters.services import Services
    from ucoauth.adapters.ultracart import TokenResponse


def refresh_window(settings_min: int, fraction: float, lifetime: int | None) -> int:
    """The larger of the minimum window and ``fraction`` of the token's lifetime."""
    return max(settings_min, int(fraction * lifetime)) if lifetime else settings_min


def token_fields(
    services: Services,
    merchant_id: str,
    tokens: TokenSet,
    answer: TokenResponse,
    *,
    issued_at: int | None = None,
    last_used_at: int | None = None,
) -> TokenFields:
    """Encrypt the tokens and compute expiry and the next due time (with jitter), counted from
    ``issued_at`` (default now: when UltraCart answered).

    The budget is spent where it matters: a merchant whose tokens nobody asked for in
    ``REFRESH_IDLE_AFTER_SECONDS`` (``last_used_at``) is not refreshed ahead of expiry; its
    next refresh is due only before its refresh token could lapse unused
    (``REFRESH_TOKEN_LAPSE_SECONDS``, a day early), or when the token API is asked (inline).
    """
    settings = services.settings
    now = services.now() if issued_at is None else issued_at
    # UltraCart may omit expires_in (or send garbage): the token still expires, so it is
    # scheduled on an assumed lifetime rather than never refreshed. The API reports null.
    lifetime = answer.expires_in or settings.assumed_token_lifetime_seconds
    window = refresh_window(settings.refresh_min_window_seconds, settings.refresh_window_fraction, lifetime)
    # Jitter spreads a wave of installs made at the same moment over later planner runs.
    jitter = int(services.rng.uniform(0, window * 0.1))
    due_at = now + lifetime - window - jitter
    idle_after = settings.refresh_idle_after_seconds
    if idle_after and last_used_at is not None and now - last_used_at > idle_after:
        due_at = max(due_at, now + settings.refresh_token_lapse_seconds - 86_400 - jitter)
    return TokenFields(
        ciphertext=services.cipher.encrypt(merchant_id, tokens),
        token_type=answer.token_type,
        scope=answer.scope,
        access_expires_at=now + lifetime,
        token_lifetime=lifetime,
        due_at=due_at,
        expiry_assumed=answer.expires_in is None,
    )
