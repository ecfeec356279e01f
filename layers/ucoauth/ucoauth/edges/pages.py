"""The merchant-facing HTML pages (the security headers every browser response carries, and the
stylesheet their policy allows, are in ``ucoauth.edges.headers``).

Everything a request or the configuration supplies is escaped before it reaches HTML; pages
never show a token, code, state or receipt, never a stack trace, and never technical wording:
each says in one plain sentence what happened and what to do. Technical detail goes to the logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

# Re-exported: the pages are where the stylesheet and the policy are read.
from ucoauth.edges.headers import CONTENT_SECURITY_POLICY as CONTENT_SECURITY_POLICY
from ucoauth.edges.headers import SECURITY_HEADERS as SECURITY_HEADERS
from ucoauth.edges.headers import STYLE as STYLE

START_AGAIN = "Start the installation again"


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered page and its HTTP status."""

    status: int
    html: str


@dataclass(frozen=True, slots=True)
class Branding:
    """What the pages say about the app: its name, and optional links to it and to its developer."""

    app_name: str
    app_url: str = ""
    support_url: str = ""


@dataclass(frozen=True, slots=True)
class Link:
    """A button on a page."""

    label: str
    href: str
    id: str


def _link(link: Link) -> str:
    return (
        f'<a class="button" id="{escape(link.id, quote=True)}" href="{escape(link.href, quote=True)}">'
        f"{escape(link.label)}</a>"
    )


def render(
    brand: Branding,
    status: int,
    kind: str,
    heading: str,
    message: str,
    *,
    retry_href: str | None = None,
    links: tuple[Link, ...] = (),
    title: str | None = None,
    support: bool = True,
) -> Page:
    """A complete, self-contained HTML page. Every string is escaped here.

    ``retry_href`` adds the "start again" button; ``support`` adds the way to the developer
    (the configured support link, or the app's name when there is none).
    """
    buttons = list(links)
    if retry_href:
        buttons.append(Link(START_AGAIN, retry_href, "retry"))
    actions = f'<div class="actions">{"".join(_link(b) for b in buttons)}</div>' if buttons else ""
    name = escape(brand.app_name)
    if support and brand.support_url:
        help_line = (
            f'<p>Need help? <a id="support" href="{escape(brand.support_url, quote=True)}">'
            f"Contact the developer of {name}</a>.</p>"
        )
    elif support:
        help_line = f"<p>Need help? Contact the developer of {name}.</p>"
    else:
        help_line = ""
    page_title = title or f"{heading} \N{EN DASH} {brand.app_name}"
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{escape(page_title)}</title><style>{STYLE}</style></head>"
        f'<body><main class="{escape(kind, quote=True)}"><h1>{escape(heading)}</h1>'
        f"<p>{escape(message)}</p>{actions}{help_line}"
        f"<p><small>{name} · installation on UltraCart</small></p></main></body></html>"
    )
    return Page(status=status, html=html)


def installed(
    brand: Branding, merchant_id: str, *, reinstall: bool, ultracart_href: str, return_url: str | None = None
) -> Page:
    """Success: the app is connected to the merchant's account, with the next steps (first, the
    way back to the app, when the install link named one)."""
    verb = "reconnected to" if reinstall else "installed on"
    heading = f"{brand.app_name} is installed"
    links = [Link(f"Continue to {brand.app_name}", return_url, "continue")] if return_url else []
    if brand.app_url:
        links.append(Link(f"Open {brand.app_name}", brand.app_url, "open-app"))
    links.append(Link("Return to UltraCart", ultracart_href, "return"))
    return render(
        brand,
        200,
        "ok",
        heading,
        f"{brand.app_name} is now {verb} UltraCart account {merchant_id}. You can close this window.",
        links=tuple(links),
        title=heading,
        support=False,
    )


def receipt_expired(brand: Branding, retry_href: str) -> Page:
    """The success URL without a valid receipt: neutral, never an error, never an account."""
    return render(
        brand,
        200,
        "info",
        "This page has expired",
        f"If you finished installing {brand.app_name}, it is installed; "
        "to install it again, start the installation again.",
        retry_href=retry_href,
    )


def declined(brand: Branding, retry_href: str) -> Page:
    """The merchant pressed Deny on UltraCart's consent page."""
    return render(
        brand,
        200,
        "warn",
        f"Installation of {brand.app_name} cancelled",
        f"You declined {brand.app_name}'s access on UltraCart, so nothing was installed; "
        "if that was a mistake, start again and choose Approve.",
        retry_href=retry_href,
    )


def link_expired(brand: Branding, retry_href: str) -> Page:
    """UltraCart said the authorize link was invalid or expired."""
    return render(
        brand,
        400,
        "warn",
        "This installation link has expired",
        f"UltraCart reported that the link to install {brand.app_name} was invalid or too old; "
        "start the installation again.",
        retry_href=retry_href,
    )


def session_timed_out(brand: Branding, retry_href: str, *, minutes: int) -> Page:
    """The state cookie or the state itself ran out before the merchant came back."""
    return render(
        brand,
        400,
        "warn",
        "The installation session timed out",
        f"Installing {brand.app_name} has to be finished within {minutes} minutes of starting it, "
        "so nothing was installed; start the installation again.",
        retry_href=retry_href,
    )


def started_in_another_tab(brand: Branding, retry_href: str) -> Page:
    """This browser started a newer install (another tab or window) that replaced this one."""
    return render(
        brand,
        400,
        "warn",
        "The installation was started again in another tab",
        f"You started installing {brand.app_name} again in another tab or window; "
        "finish it there, or start the installation again here.",
        retry_href=retry_href,
    )


def already_used(brand: Branding, retry_href: str) -> Page:
    """The state is unknown: the link was already used, or is far too old."""
    return render(
        brand,
        400,
        "warn",
        "This installation link was already used",
        f"This link back from UltraCart has already been used or is too old to install {brand.app_name}; "
        "start the installation again.",
        retry_href=retry_href,
    )


def damaged_link(brand: Branding, retry_href: str) -> Page:
    """Missing, repeated or malformed parameters or cookies, or an unknown UltraCart answer."""
    return render(
        brand,
        400,
        "err",
        "This link is incomplete or damaged",
        f"The link back from UltraCart is incomplete or damaged, so {brand.app_name} was not installed; "
        "start the installation again.",
        retry_href=retry_href,
    )


def misconfigured(brand: Branding) -> Page:
    """UltraCart refused the app's own registration (client or scope): retrying cannot help."""
    return render(
        brand,
        400,
        "err",
        f"{brand.app_name} cannot be installed right now",
        f"UltraCart did not accept {brand.app_name}'s setup, so trying again will not help; "
        "please let the app's developer know.",
    )


def app_unavailable(brand: Branding, retry_href: str) -> Page:
    """UltraCart refused the app's own credentials (a rotated or mistyped client secret): the
    app's fault, never the merchant's; it works again once its developer fixes them."""
    return render(
        brand,
        503,
        "err",
        f"{brand.app_name} cannot complete installations right now",
        f"{brand.app_name} was not installed because of a problem on the app's side, not with your "
        "account; its developer has been alerted. Please try again later.",
        retry_href=retry_href,
    )


def code_refused(brand: Branding, retry_href: str) -> Page:
    """UltraCart refused the authorization code (used, expired or revoked meanwhile)."""
    return render(
        brand,
        400,
        "err",
        "UltraCart refused the installation",
        f"UltraCart did not accept the authorization for {brand.app_name}, so nothing was installed; "
        "start the installation again.",
        retry_href=retry_href,
    )


def upstream_failed(brand: Branding, status: int, retry_href: str) -> Page:
    """UltraCart failed (502), was too slow (504), or the service was unavailable (503)."""
    titles = {
        504: "UltraCart did not answer in time",
        503: "The installation service is temporarily unavailable",
    }
    return render(
        brand,
        status,
        "err",
        titles.get(status, "UltraCart is not responding correctly"),
        f"{brand.app_name} was not installed. This is usually temporary: wait a minute, "
        "then start the installation again.",
        retry_href=retry_href,
    )


def not_found(brand: Branding, install_href: str) -> Page:
    """Any address the app does not serve."""
    return render(
        brand,
        404,
        "err",
        "Page not found",
        f"There is nothing at this address; to install {brand.app_name}, start the installation here.",
        retry_href=install_href,
    )


def _back_to_app(brand: Branding) -> tuple[Link, ...]:
    return (Link(f"Open {brand.app_name}", brand.app_url, "open-app"),) if brand.app_url else ()


def install_link_invalid(brand: Branding) -> Page:
    """An install link whose session is unknown or damaged (never issued, mistyped, truncated)."""
    return render(
        brand,
        400,
        "err",
        "This install link is not valid",
        f"The link to connect UltraCart to {brand.app_name} is incomplete or was never issued, so "
        f"nothing was installed; go back to {brand.app_name} and use its Connect UltraCart button again.",
        links=_back_to_app(brand),
    )


def install_link_used(brand: Branding) -> Page:
    """An install link whose session already completed an installation."""
    return render(
        brand,
        410,
        "warn",
        "This install link was already used",
        f"This link already connected an UltraCart account to {brand.app_name} and works only once; "
        f"to connect again, go back to {brand.app_name} and use its Connect UltraCart button.",
        links=_back_to_app(brand),
    )


def install_link_expired(brand: Branding, *, minutes: int) -> Page:
    """An install link whose session ran out before an install completed through it."""
    return render(
        brand,
        410,
        "warn",
        "This install link has expired",
        f"Links to connect UltraCart to {brand.app_name} work for {minutes} minutes, so nothing was "
        f"installed; go back to {brand.app_name} and use its Connect UltraCart button again.",
        links=_back_to_app(brand),
    )


def install_link_required(brand: Branding) -> Page:
    """``RequireInstallSession`` is on and the browser came to the install address directly."""
    return render(
        brand,
        403,
        "info",
        f"Install {brand.app_name} from the app",
        f"{brand.app_name} is connected to UltraCart from inside {brand.app_name}: sign in there and "
        "use its Connect UltraCart button.",
        links=_back_to_app(brand),
    )


def account_already_linked(brand: Branding, merchant_id: str) -> Page:
    """The merchant's installation belongs to another account of the app and may not be moved."""
    return render(
        brand,
        409,
        "warn",
        "This UltraCart account is connected to another account",
        f"UltraCart account {merchant_id} is already connected to another account in {brand.app_name}, "
        "so nothing was changed; disconnect it there first (or uninstall the app in UltraCart), "
        "then connect again.",
        links=_back_to_app(brand),
    )
