"""The security headers every browser response carries, and the one stylesheet their policy allows.

Apart from ``ucoauth.edges.pages`` so that a response without a page (the redirects of ``/install`` and
of a completed callback) needs neither the pages' templates nor their classes.
"""

from __future__ import annotations

import base64
import hashlib

# Colours are custom properties so that both schemes are declared in one place each, and the
# contrast test can read them back (tests/unit/test_validation_and_pages.py). Every text colour
# is at least 4.5:1 on the card in both schemes (WCAG AA).
STYLE = (
    ":root{color-scheme:light dark;--page:#f4f6f8;--card:#fff;--text:#1f2933;--muted:#52606d;"
    "--ok:#17803d;--warn:#b45309;--err:#b91c1c;--info:#1f2933;--link:#1d4ed8;--button:#1d4ed8;"
    "--button-text:#fff;--focus:#1d4ed8;--edge:#d9dee3}"
    "@media (prefers-color-scheme:dark){:root{--page:#0f1419;--card:#1c232b;--text:#e6e9ed;"
    "--muted:#a7b1bc;--ok:#5ad68a;--warn:#f6b85a;--err:#ff8f8f;--info:#e6e9ed;--link:#9cc3ff;"
    "--button:#9cc3ff;--button-text:#0b1220;--focus:#9cc3ff;--edge:#3a4550}}"
    "*{box-sizing:border-box}"
    "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:var(--page);"
    "color:var(--text);margin:0;padding:1rem;display:flex;min-height:100vh;align-items:center;"
    "justify-content:center}"
    "main{background:var(--card);width:100%;max-width:34rem;min-width:0;padding:2.5rem;"
    "border:1px solid var(--edge);border-radius:12px;box-shadow:0 4px 24px #0001;"
    "overflow-wrap:anywhere}"
    "h1{font-size:1.5rem;margin:0 0 1rem;line-height:1.3}p{line-height:1.5}"
    ".ok h1{color:var(--ok)}.warn h1{color:var(--warn)}.err h1{color:var(--err)}.info h1{color:var(--info)}"
    "a{color:var(--link)}"
    ".actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1.5rem}"
    "a.button{display:inline-block;padding:.7rem 1.2rem;background:var(--button);color:var(--button-text);"
    "border:2px solid var(--button);border-radius:8px;text-decoration:none;font-weight:600}"
    "a:focus-visible{outline:3px solid var(--focus);outline-offset:2px}"
    "small{color:var(--muted)}"
    "@media (max-width:30rem){body{padding:.75rem;align-items:flex-start}main{padding:1.5rem}}"
    "@media (forced-colors:active){main{border-color:CanvasText}"
    "a.button{border:2px solid ButtonText;color:LinkText;background:ButtonFace}}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

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
