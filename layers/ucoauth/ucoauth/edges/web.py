"""HttpApi (payload 2.0) edge helpers shared by the HTTP functions: cookies, URLs, bodies."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from aws_lambda_powertools.shared.cookies import Cookie, SameSite

from ucoauth.base.errors import RequestTooLargeError
from ucoauth.base.validation import BadInput
from ucoauth.edges.resolver import Response

if TYPE_CHECKING:
    from ucoauth.base.settings import Settings
    from ucoauth.edges.pages import Branding, Page

# The browser's pages and cookies (ucoauth.edges.pages, ucoauth.usecases.install) are imported where they are
# used: the JSON functions (token API, webhook, admin, device flow) use only the helpers below
# them; a redirect needs only the headers (ucoauth.edges.headers).

JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def json_response(status: int, body: Any, *, retry_after: float | None = None) -> Response[Any]:
    """A JSON API answer (never cached); ``Retry-After`` in whole seconds (at least 1) when given."""
    headers = dict(JSON_HEADERS)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return Response(status_code=status, content_type="application/json", body=body, headers=headers)


def json_error(status: int, error: str, *, retry_after: float | None = None) -> Response[Any]:
    """``{"error": "<code>"}``, the one error shape of the JSON APIs."""
    return json_response(status, {"error": error}, retry_after=retry_after)


def html_response(page: Page, *, cookies: list[Cookie] | None = None) -> Response[str]:
    """An HTML page with the browser security headers."""
    from ucoauth.edges.headers import SECURITY_HEADERS

    return Response(
        status_code=page.status,
        content_type="text/html; charset=utf-8",
        body=page.html,
        headers=dict(SECURITY_HEADERS),
        cookies=cookies,
    )


def redirect(location: str, *, cookies: list[Cookie] | None = None, status: int = 302) -> Response[str]:
    """A redirect (302 unless told; 303 "see other" after the callback) with the security headers."""
    from ucoauth.edges.headers import SECURITY_HEADERS

    return Response(
        status_code=status, body="", headers={**SECURITY_HEADERS, "Location": location}, cookies=cookies
    )


def _host_cookie(name: str, value: str, *, max_age: int) -> Cookie:
    """A ``__Host-`` cookie: Secure, HttpOnly, SameSite=Lax, Path=/, no Domain."""
    return Cookie(
        name=name,
        value=value,
        path="/",
        secure=True,
        http_only=True,
        same_site=SameSite.LAX_MODE,
        max_age=max_age,
    )


def state_cookie(nonce: str, *, max_age: int) -> Cookie:
    """The ``__Host-`` cookie binding the OAuth state to this browser."""
    from ucoauth.usecases.install import STATE_COOKIE

    return _host_cookie(STATE_COOKIE, nonce, max_age=max_age)


def clear_state_cookie() -> Cookie:
    """Expire the state cookie (after a callback that spent this browser's state)."""
    return state_cookie("", max_age=0)


def receipt_cookie(nonce: str) -> Cookie:
    """The ``__Host-`` cookie proving this browser just completed an install (see ``/installed``)."""
    from ucoauth.usecases.install import RECEIPT_COOKIE, RECEIPT_SECONDS

    return _host_cookie(RECEIPT_COOKIE, nonce, max_age=RECEIPT_SECONDS)


def read_cookie(event: dict[str, Any], name: str) -> str | None:
    """The value of one cookie from a 2.0 event's ``cookies`` list; BadInput if it is repeated."""
    found: list[str] = []
    for raw in event.get("cookies") or []:
        key, sep, value = str(raw).partition("=")
        if sep and key.strip() == name:
            found.append(value.strip())
    if len(set(found)) > 1:
        raise BadInput("Your browser sent conflicting installation cookies.")
    return found[0] if found else None


def redirect_uri(settings: Settings, event: dict[str, Any]) -> str:
    """The callback URL registered with UltraCart: the parameter, else the API's own URL.

    Built from the API id API Gateway puts in the request context, never from a Host header.
    """
    if settings.oauth_redirect_uri:
        return settings.oauth_redirect_uri
    api_id = str(event.get("requestContext", {}).get("apiId", ""))
    suffix = "amazonaws.com.cn" if settings.region.startswith("cn-") else "amazonaws.com"
    return f"https://{api_id}.execute-api.{settings.region}.{suffix}/oauth/callback"


def _next_to_callback(settings: Settings, event: dict[str, Any], path: str) -> str:
    parts = urlsplit(redirect_uri(settings, event))
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rsplit("/oauth/", 1)[0] + path, "", ""))


def install_href(settings: Settings, event: dict[str, Any]) -> str:
    """Where "start again" points: ``/install`` next to the callback URL."""
    return _next_to_callback(settings, event, "/install")


def installed_href(settings: Settings, event: dict[str, Any]) -> str:
    """The clean success URL: ``/installed`` next to the callback URL (no code, no state)."""
    return _next_to_callback(settings, event, "/installed")


def ultracart_href(settings: Settings) -> str:
    """ "Return to UltraCart": the home page of the UltraCart the app talks to."""
    parts = urlsplit(settings.ultracart_base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))


def branding(settings: Settings) -> Branding:
    """What the pages say about the app (template parameters AppName, AppUrl, SupportUrl)."""
    from ucoauth.edges.pages import Branding

    return Branding(app_name=settings.app_name, app_url=settings.app_url, support_url=settings.support_url)


def with_query(url: str, **params: str) -> str:
    """``url`` with extra query parameters (for the post-install redirect)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def raw_body(event: dict[str, Any], *, limit: int) -> bytes:
    """The request body as bytes: the one place its size is checked.

    Raises :class:`BadInput` when malformed and :class:`RequestTooLargeError` past ``limit`` bytes.
    """
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        if len(body) > (limit * 4) // 3 + 8:
            raise RequestTooLargeError(f"the body is over {limit} bytes")
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput("The body is not valid base64.") from None
    else:
        data = body.encode("utf-8", "surrogatepass")
    if len(data) > limit:
        raise RequestTooLargeError(f"the body is over {limit} bytes")
    return data
