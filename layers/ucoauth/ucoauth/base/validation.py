"""Input checks shared by the routes: ids and query parameters, length- and charset-bound."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from ucoauth.base.errors import UcOAuthError

# Matched with fullmatch: a `$` anchor would also accept a trailing newline.
MERCHANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# OAuth codes and our own states are URL-safe tokens; UltraCart's codes are hex/base64-ish.
OAUTH_VALUE = re.compile(r"^[A-Za-z0-9._~+/=-]{8,1024}$")
OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")
MAX_QUERY = 4096


class BadInput(UcOAuthError, ValueError):
    """A request parameter is missing, repeated, oversize or malformed. The text is user-safe.

    Still a ``ValueError`` (it is one), under the package's one base class like every other.
    """


def is_merchant_id(value: str) -> bool:
    """A merchant id we are willing to use as a key."""
    return MERCHANT_ID.fullmatch(value) is not None


def parse_query(raw: str, *, allowed: frozenset[str], refuse_unknown: bool = False) -> dict[str, str]:
    """Parse a raw query string strictly: known names once each, UTF-8, no control characters.
    Unknown names are ignored, or refused with ``refuse_unknown`` (an API that has no reason to
    receive anything else)."""
    if len(raw) > MAX_QUERY:
        raise BadInput("The address is too long.")
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, errors="strict", max_num_fields=16)
    except (ValueError, UnicodeDecodeError):
        raise BadInput("The address is malformed.") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            if refuse_unknown:
                raise BadInput("The address has a parameter this route does not take.")
            continue  # unknown parameters are ignored, never echoed
        if name in out:
            raise BadInput(f"The parameter {name} appears more than once.")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise BadInput(f"The parameter {name} contains control characters.")
        out[name] = value
    return out


def bounded_int(value: str, *, low: int, high: int) -> int:
    """A decimal integer written with digits only (no sign, space or exponent) in ``low..high``."""
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(high)):
        raise BadInput("A number parameter is malformed.")
    number = int(value)
    if not low <= number <= high:
        raise BadInput("A number parameter is out of range.")
    return number


# UltraCart's application-level scopes (e.g. "crm", "ultraship"), space- or comma-separated.
SCOPE = re.compile(r"^[A-Za-z0-9_.:-]+(?:[ ,]+[A-Za-z0-9_.:-]+)*$")
SCOPE_MAX = 256


def is_scope(value: str) -> bool:
    return 0 < len(value) <= SCOPE_MAX and SCOPE.fullmatch(value) is not None


DEFAULT_PORTS = {"https": 443, "http": 80}


def origin_of(url: str) -> str | None:
    """``scheme://host:port`` of an absolute http(s) URL (lower-case, default port made explicit),
    or None when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    return f"{scheme}://{parts.hostname.lower()}:{port or DEFAULT_PORTS[scheme]}"
