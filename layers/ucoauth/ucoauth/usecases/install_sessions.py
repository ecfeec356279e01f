"""Install sessions: the app's backend asks for an install link carrying one of its own accounts,
and the installation that link completes is linked to that account.

``POST /install-sessions`` (``create_session``) validates the request exactly, stores the session
under the SHA-256 of its secret (``ucoauth.adapters.browser_items.InstallSessionStore``) and answers the
link. The secret is the link's ``session`` parameter; ``session_id`` is a non-secret name for
logs and the admin API. Nothing is stored for a rejected request.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ucoauth.adapters.browser_items import AccountLink
from ucoauth.base.validation import BadInput, origin_of

if TYPE_CHECKING:
    from ucoauth.adapters.services import Services

APP_ACCOUNT_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
METADATA_KEYS = 10
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 256
RETURN_URL_MAX = 2048
# The largest valid body, every character escaped, fits well within this.
MAX_BODY = 65536
# secrets.token_urlsafe(32): the link's ``session`` parameter.
SESSION_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
SESSION_ID = re.compile(r"ses_[A-Za-z0-9_-]{16}")
_FIELDS = frozenset({"app_account_id", "return_url", "metadata"})


@dataclass(frozen=True, slots=True, eq=False)
class SessionRequest:
    """A validated ``POST /install-sessions`` body."""

    app_account_id: str
    return_url: str | None
    metadata: dict[str, str]


def is_app_account_id(value: object) -> bool:
    return isinstance(value, str) and APP_ACCOUNT_ID.fullmatch(value) is not None


def _metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > METADATA_KEYS:
        raise BadInput("metadata must be an object of at most 10 keys")
    for key, item in value.items():
        fits = 1 <= len(key) <= METADATA_KEY_MAX and isinstance(item, str) and len(item) <= METADATA_VALUE_MAX
        if not fits:
            raise BadInput("metadata keys are 1-64 characters, values strings of at most 256")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key + item):
            raise BadInput("metadata must not carry control characters")
    return dict(value)


def _return_url(value: object, origins: tuple[str, ...]) -> str:
    if not isinstance(value, str) or len(value) > RETURN_URL_MAX or any(ord(c) <= 0x20 for c in value):
        raise BadInput("return_url must be a URL")
    origin = origin_of(value)
    if origin is None or origin not in origins:
        raise BadInput("return_url is not on an allowed origin")
    return value


def parse_request(raw: bytes, *, origins: tuple[str, ...]) -> SessionRequest:
    """The body, validated exactly (BadInput for anything else, an unknown field included)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadInput("The body is not JSON.") from None
    if not isinstance(data, dict) or set(data) - _FIELDS or "app_account_id" not in data:
        raise BadInput("The body must be an object with app_account_id, return_url and metadata.")
    if not is_app_account_id(data["app_account_id"]):
        raise BadInput("app_account_id must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    return SessionRequest(
        app_account_id=data["app_account_id"],
        return_url=None if "return_url" not in data else _return_url(data["return_url"], origins),
        metadata={} if "metadata" not in data else _metadata(data["metadata"]),
    )


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


def create_session(services: Services, request: SessionRequest, *, install_url: str) -> dict[str, Any]:
    """Store a new session; the 201 body: ``session_id``, ``install_url``, ``expires_at``."""
    secret = secrets.token_urlsafe(32)
    session_id = "ses_" + secrets.token_urlsafe(12)
    now = services.now()
    ttl = services.settings.install_session_ttl_seconds
    link = AccountLink(session_id, request.app_account_id, request.metadata, request.return_url)
    services.install_sessions.put(secret, link, now=now, ttl_seconds=ttl)
    from ucoauth.base.observability import logger

    logger.info("install session created", session_id=session_id, app_account_id=request.app_account_id)
    return {
        "session_id": session_id,
        "install_url": f"{install_url}?{urlencode({'session': secret})}",
        "expires_at": _iso(now + ttl),
    }
