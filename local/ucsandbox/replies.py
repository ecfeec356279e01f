"""Building the sandbox's HTTP answers: UltraCart's JSON shapes, injected faults, redirects."""

from __future__ import annotations

import dataclasses
import json
import secrets
from html import escape
from urllib.parse import urlencode, urlsplit, urlunsplit

from ucsandbox.faults import Fault
from ucsandbox.models import UC_REST_ERROR_HEADER, MalformedKind

JSON = "application/json; charset=UTF-8"
HTML = "text/html; charset=UTF-8"
TEXT = "text/plain; charset=UTF-8"
# Token answers must never be cached (RFC 6749 section 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclasses.dataclass(frozen=True)
class Reply:
    """A complete HTTP answer."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def header_safe(text: str) -> str:
    """A header value that cannot break the response: one line, latin-1 only."""
    one_line = " ".join(text.split())
    return one_line.encode("latin-1", "replace").decode("latin-1")


def json_reply(status: int, payload: object, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), JSON, dict(headers or {}))


def uc_error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    """UltraCart's generic REST error: an `ErrorResponse` body and the `UC-REST-ERROR` header."""
    payload = {
        "error": {"developer_message": message, "user_message": message},
        "metadata": {},
        "success": False,
    }
    return json_reply(status, payload, {UC_REST_ERROR_HEADER: header_safe(message), **(headers or {})})


def oauth_error_reply(status: int, error: str, description: str) -> Reply:
    """An OAuth error (`invalid_grant`, ...) in the `OauthTokenResponse` error fields."""
    return json_reply(
        status,
        {"error": error, "error_description": description},
        {UC_REST_ERROR_HEADER: header_safe(description), **NO_STORE},
    )


def html_reply(status: int, page: str, headers: dict[str, str] | None = None) -> Reply:
    base = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
    return Reply(status, page.encode(), HTML, {**base, **(headers or {})})


def redirect_reply(location: str) -> Reply:
    page = f'<!doctype html><title>Redirecting</title><a href="{escape(location)}">Continue</a>\n'
    return html_reply(302, page, {"Location": location})


def with_query(url: str, params: dict[str, str]) -> str:
    """`url` with `params` appended to whatever query it already has (fragment dropped)."""
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query, fragment=""))


def fault_status_reply(fault: Fault, status: int) -> Reply:
    """The answer of a `status` fault (or of `after_success` alone: a 500)."""
    headers: dict[str, str] = {}
    if status >= 400 and fault.uc_rest_error != "":
        headers[UC_REST_ERROR_HEADER] = header_safe(fault.uc_rest_error or f"Injected fault: HTTP {status}")
    body = fault.body
    if body is None:
        if status >= 400:
            message = fault.uc_rest_error or f"Injected fault: HTTP {status}"
            return uc_error_reply(status, message, headers)
        return json_reply(status, {}, headers)
    if isinstance(body, bytes):
        return Reply(status, body, JSON, headers)
    if isinstance(body, str):
        # Raw text lets a test send exactly the bytes it wants, valid JSON or not.
        return Reply(status, body.encode(), JSON, headers)
    return json_reply(status, body, headers)


def _canned_body(endpoint: str) -> bytes:
    """A plausible successful body, for a malformed answer that stands in for the real one."""
    if endpoint == "revoke":
        return json.dumps({"successful": True, "message": "Token revoked"}).encode()
    return json.dumps(
        {
            "access_token": secrets.token_hex(32),
            "refresh_token": secrets.token_hex(32),
            "expires_in": "3600",
            "token_type": "bearer",
        }
    ).encode()


def malformed_reply(kind: MalformedKind, endpoint: str, real: Reply | None) -> Reply:
    """A 200 whose body a client cannot use."""
    if kind == "truncated":
        source = real.body if real is not None and real.body else _canned_body(endpoint)
        # Content-Length matches what is sent: the body is complete but its JSON is cut short.
        return Reply(200, source[: max(1, len(source) // 2)], JSON)
    if kind == "html":
        page = (
            "<!doctype html><html><head><title>503 Service Unavailable</title></head>"
            "<body><h1>Service Unavailable</h1><p>Please try again later.</p></body></html>\n"
        )
        return Reply(200, page.encode(), HTML)
    if kind == "not_json":
        return Reply(200, b"Service temporarily unavailable\n", TEXT)
    return Reply(200, b"", JSON)
