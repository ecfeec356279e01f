"""The merchant-facing HTML pages and the security headers every browser response carries.

Everything a request sent is escaped before it reaches HTML; pages never show a token, code or
state, and never a stack trace.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from html import escape

_STYLE = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f4f6f8;color:#1f2933;"
    "margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}"
    "main{background:#fff;max-width:34rem;padding:2.5rem;border-radius:12px;box-shadow:0 4px 24px #0001}"
    "h1{font-size:1.5rem;margin:0 0 1rem}p{line-height:1.5}"
    ".ok h1{color:#17803d}.warn h1{color:#b45309}.err h1{color:#b91c1c}"
    "a.button{display:inline-block;margin-top:1rem;padding:.7rem 1.2rem;background:#1d4ed8;color:#fff;"
    "border-radius:8px;text-decoration:none}small{color:#52606d}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS: dict[str, str] = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered page and its HTTP status."""

    status: int
    html: str


def render(status: int, kind: str, title: str, message: str, *, retry_href: str | None = None) -> Page:
    """A complete, self-contained HTML page. ``title`` and ``message`` are escaped here."""
    button = (
        f'<p><a class="button" id="retry" href="{escape(retry_href, quote=True)}">'
        "Start the installation again</a></p>"
        if retry_href
        else ""
    )
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body><main class="{escape(kind, quote=True)}"><h1>{escape(title)}</h1>'
        f"<p>{escape(message)}</p>{button}"
        "<p><small>UltraCart app installation</small></p></main></body></html>"
    )
    return Page(status=status, html=html)


def installed(merchant_id: str, *, reinstall: bool) -> Page:
    """Success: the app is connected to the merchant's account."""
    verb = "reconnected to" if reinstall else "installed on"
    return render(
        200,
        "ok",
        "App installed",
        f"The app is now {verb} UltraCart account {merchant_id}. You can close this window.",
    )


def declined(retry_href: str) -> Page:
    """The merchant pressed Deny on UltraCart's consent page."""
    return render(
        200,
        "warn",
        "Installation cancelled",
        "You declined the app's access on UltraCart, so nothing was installed. "
        "If that was a mistake, start again and choose Approve.",
        retry_href=retry_href,
    )


def link_expired(retry_href: str) -> Page:
    """UltraCart said the authorize link was invalid or expired."""
    return render(
        400,
        "warn",
        "This installation link has expired",
        "UltraCart reported that the authorization request was invalid or expired. "
        "Start the installation again.",
        retry_href=retry_href,
    )


def bad_request(reason: str, retry_href: str) -> Page:
    """Any malformed or unverifiable callback; ``reason`` is a fixed, user-safe sentence."""
    return render(400, "err", "We could not complete the installation", reason, retry_href=retry_href)


def upstream_failed(status: int, retry_href: str) -> Page:
    """UltraCart failed (502), was too slow (504), or our own storage was unavailable (503)."""
    titles = {
        504: "UltraCart did not answer in time",
        503: "The installation service is temporarily unavailable",
    }
    return render(
        status,
        "err",
        titles.get(status, "UltraCart is not responding correctly"),
        "Nothing was installed. This is usually temporary: wait a minute, then start the installation again.",
        retry_href=retry_href,
    )
