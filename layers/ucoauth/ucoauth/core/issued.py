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


def in_demand(
    services: Services, *, now: int, lifetime: int, last_used_at: int | None, previous_used_at: int | None
) -> bool:
    """Whether a lifetime beginning ``now`` should be refreshed ahead of its expiry before anyone
    has read it: the token's use is predicted from its history.

    Recorded uses are the first read of each lifetime (``last_used_at``, and the one before it,
    ``previous_used_at``). Use is predicted when those two were at most a lifetime (plus the
    refresh window) apart, and the last is no longer ago than that: a token read at least once a
    lifetime keeps being read, so refreshing it ahead costs no more refreshes than refreshing it
    on its next read, and that read does not wait. A token read less often (once a day with
    1-hour tokens) would expire unread after a refresh ahead: it is refreshed on its next read.
    """
    if last_used_at is None or previous_used_at is None:
        return False
    settings = services.settings
    slack = lifetime + refresh_window(
        settings.refresh_min_window_seconds, settings.refresh_window_fraction, lifetime
    )
    return last_used_at - previous_used_at <= slack and now - last_used_at <= slack


def keep_alive_due(services: Services, now: int, jitter: int = 0) -> int:
    """When a token nobody reads is refreshed anyway: a day before its refresh token could
    lapse unused (``REFRESH_TOKEN_LAPSE_SECONDS``)."""
    return now + services.settings.refresh_token_lapse_seconds - 86_400 - jitter


def token_fields(
    services: Services,
    merchant_id: str,
    tokens: TokenSet,
    answer: TokenResponse,
    *,
    issued_at: int | None = None,
    ahead: bool = True,
    used_at: int | None = None,
    previous_used_at: int | None = None,
    ciphertext: bytes | None = None,
) -> TokenFields:
    """Encrypt the tokens (unless given ``ciphertext``, their envelope sealed already) and compute
    expiry and the next due time (with jitter), counted from ``issued_at`` (default now: when
    UltraCart answered).

    The budget is spent on tokens that will be read: with ``ahead`` the new lifetime is due
    ahead of its expiry (the planner refreshes it); without, it is due only before its refresh
    token could lapse unused, and a read refreshes it inline (a read of the new lifetime brings
    it back to being due ahead, see ``ucoauth.usecases.tokens``). ``used_at`` records a read served by
    this write (the new lifetime counts as used; ``previous_used_at`` is the use before it).
    """
    settings = services.settings
    now = services.now() if issued_at is None else issued_at
    # UltraCart may omit expires_in (or send garbage): the token still expires, so it is
    # scheduled on an assumed lifetime rather than never refreshed. The API reports null.
    lifetime = answer.expires_in or settings.assumed_token_lifetime_seconds
    window = refresh_window(settings.refresh_min_window_seconds, settings.refresh_window_fraction, lifetime)
    # Jitter spreads a wave of installs made at the same moment over later planner runs.
    jitter = int(services.rng.uniform(0, window * 0.1))
    due_at = now + lifetime - window - jitter if ahead else keep_alive_due(services, now, jitter)
    return TokenFields(
        ciphertext=ciphertext if ciphertext is not None else services.cipher.encrypt(merchant_id, tokens),
        token_type=answer.token_type,
        scope=answer.scope,
        access_expires_at=now + lifetime,
        token_lifetime=lifetime,
        due_at=due_at,
        expiry_assumed=answer.expires_in is None,
        used_at=used_at,
        previous_used_at=previous_used_at,
    )
