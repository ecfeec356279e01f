"""The merchant's browser: ``GET /install``, ``GET /oauth/callback``, ``GET /installed`` and the
HTML 404 page for every other address (the HttpApi ``$default`` route). HttpApi 2.0 events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.shared.cookies import Cookie
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters.services import get_services
from ucoauth.base.errors import (
    APP_MISCONFIGURED_ERRORS,
    AccountConflictError,
    AppCredentialsRejectedError,
    InstallSessionError,
    InstallSessionExpiredError,
    InstallSessionRequiredError,
    InstallSessionUsedError,
    KeyUnavailableError,
    PermanentUltraCartError,
    RetryLaterError,
    StateCookieMissingError,
    StateExpiredError,
    StateForeignBrowserError,
    StateInvalidError,
    TransientUltraCartError,
    UltraCartTimeoutError,
)
from ucoauth.base.observability import logger, metrics
from ucoauth.base.timing import Deadline
from ucoauth.base.validation import OAUTH_ERROR, OAUTH_VALUE, BadInput, parse_query
from ucoauth.edges import web
from ucoauth.edges.resolver import APIGatewayHttpResolver, Response
from ucoauth.usecases.install import (
    RECEIPT_COOKIE,
    STATE_COOKIE,
    begin_install,
    complete_install,
    issue_receipt,
    read_receipt,
    receipt_for_callback,
    state_issued_here,
)

if TYPE_CHECKING:
    # Imported where a page is rendered: /install and a completed callback (a redirect with the
    # receipt cookie) render none, so their cold start does without the pages' templates.
    from ucoauth.edges import pages

app = APIGatewayHttpResolver()
_CALLBACK_PARAMS = frozenset({"code", "state", "error", "error_description", "error_uri"})
# UltraCart's own trouble, reported on the redirect: worth a retry in a minute.
_TEMPORARY_ERRORS = {"temporarily_unavailable": 503, "server_error": 502}


def _brand() -> pages.Branding:
    return web.branding(get_services().settings)


def _retry_href() -> str:
    return web.install_href(get_services().settings, app.current_event.raw_event)


def _page(page: pages.Page, *, cookies: list[Cookie] | None = None) -> Response[str]:
    """A callback page; the spent state cookie is cleared unless told otherwise."""
    return web.html_response(page, cookies=[web.clear_state_cookie()] if cookies is None else cookies)


_INSTALL_PARAMS = frozenset({"session"})


@app.get("/install")
def install() -> Response[str]:
    services = get_services()
    event = app.current_event.raw_event
    raw = event.get("rawQueryString", "")
    # Only an install link's query is read (strictly); any other is ignored, as it always was.
    session = parse_query(raw, allowed=_INSTALL_PARAMS).get("session") if "session" in raw else None
    start = begin_install(services, redirect_uri=web.redirect_uri(services.settings, event), session=session)
    cookie = web.state_cookie(start.browser_nonce, max_age=services.settings.state_ttl_seconds)
    return web.redirect(start.authorize_url, cookies=[cookie])


@app.get("/oauth/callback")
def callback() -> Response[str]:
    event = app.current_event.raw_event
    query = parse_query(event.get("rawQueryString", ""), allowed=_CALLBACK_PARAMS)
    error = query.get("error")
    if error is not None:
        return _authorization_refused(error, query.get("state", ""))
    code, state = query.get("code", ""), query.get("state", "")
    if not OAUTH_VALUE.match(code) or not OAUTH_VALUE.match(state):
        raise BadInput("callback without a well-formed code and state")
    services = get_services()
    try:
        nonce = web.read_cookie(event, STATE_COOKIE)
        if not nonce:
            raise StateCookieMissingError("no state cookie")
        result = complete_install(
            services,
            code=code,
            state=state,
            browser_nonce=nonce,
            redirect_uri=web.redirect_uri(services.settings, event),
            deadline=Deadline.of_context(app.lambda_context, services.clock),
        )
    except StateInvalidError:
        # F5, back/forward or a restored tab on this very callback URL: the code is spent and
        # the state cookie cleared, but the receipt cookie proves this browser's install.
        if receipt_for_callback(services, web.read_cookie(event, RECEIPT_COOKIE), state=state):
            return web.redirect(
                web.installed_href(services.settings, event), cookies=[web.clear_state_cookie()], status=303
            )
        raise
    cookies = [web.clear_state_cookie()]
    if services.settings.post_install_redirect_url:
        target = web.with_query(services.settings.post_install_redirect_url, merchant_id=result.merchant_id)
        return web.redirect(target, cookies=cookies)
    receipt = issue_receipt(services, result, state=state)
    if receipt is None:  # the install is done; without a receipt, show its page right here
        from ucoauth.edges import pages

        page = pages.installed(
            _brand(),
            result.merchant_id,
            reinstall=result.reinstall,
            ultracart_href=web.ultracart_href(services.settings),
            return_url=result.return_url,
        )
        return _page(page, cookies=cookies)
    cookies.append(web.receipt_cookie(receipt))
    return web.redirect(web.installed_href(services.settings, event), cookies=cookies, status=303)


@app.get("/installed")
def installed() -> Response[str]:
    from ucoauth.edges import pages

    services = get_services()
    try:
        nonce = web.read_cookie(app.current_event.raw_event, RECEIPT_COOKIE)
    except BadInput:  # two different receipt cookies prove nothing: the neutral page
        nonce = None
    receipt = read_receipt(services, nonce)
    if receipt is None:
        return web.html_response(pages.receipt_expired(_brand(), _retry_href()))
    page = pages.installed(
        _brand(),
        receipt.merchant_id,
        reinstall=receipt.reinstall,
        ultracart_href=web.ultracart_href(services.settings),
        return_url=receipt.return_url,
    )
    return web.html_response(page)


def _authorization_refused(error: str, state: str) -> Response[str]:
    """UltraCart redirected back with ``error=`` instead of a code."""
    from ucoauth.edges import pages

    metrics.add_metric(name="InstallDeclined", unit="Count", value=1)
    # The state cookie is cleared only when this attempt set it: after a Deny in an older tab, it
    # belongs to the newer tab's installation, which must still finish.
    try:
        nonce = web.read_cookie(app.current_event.raw_event, STATE_COOKIE)
    except BadInput:  # two different state cookies: neither is provably this attempt's
        nonce = None
    ours = OAUTH_VALUE.match(state) is not None and state_issued_here(get_services(), nonce, state=state)
    cookies: list[Cookie] | None = None if ours else []
    if error == "access_denied":
        return _page(pages.declined(_brand(), _retry_href()), cookies=cookies)
    if error == "invalid_request":
        return _page(pages.link_expired(_brand(), _retry_href()), cookies=cookies)
    if error in _TEMPORARY_ERRORS:
        logger.warning("UltraCart reported a temporary failure on the redirect", error=error)
        return _page(
            pages.upstream_failed(_brand(), _TEMPORARY_ERRORS[error], _retry_href()), cookies=cookies
        )
    if error in APP_MISCONFIGURED_ERRORS:
        logger.error("UltraCart refused the app's registration: check the client id and scopes", error=error)
        return _page(pages.misconfigured(_brand()), cookies=cookies)
    logger.warning(
        "unknown error on the redirect from UltraCart", error=error if OAUTH_ERROR.match(error) else "?"
    )
    return _page(pages.damaged_link(_brand(), _retry_href()), cookies=cookies)


@app.exception_handler(BadInput)
def bad_input(exc: BadInput) -> Response[str]:
    from ucoauth.edges import pages

    logger.info("malformed browser request", reason=str(exc))
    return _page(pages.damaged_link(_brand(), _retry_href()))


@app.exception_handler(StateCookieMissingError)
@app.exception_handler(StateExpiredError)
def timed_out(exc: StateInvalidError) -> Response[str]:
    from ucoauth.edges import pages

    metrics.add_metric(name="InstallStateRejected", unit="Count", value=1)
    logger.info("install session timed out", reason=type(exc).__name__)
    minutes = max(1, get_services().settings.state_ttl_seconds // 60)
    return _page(pages.session_timed_out(_brand(), _retry_href(), minutes=minutes))


# The two below keep the state cookie: it belongs to another, newer installation in this
# browser (another tab), which clearing it would break.
@app.exception_handler(StateForeignBrowserError)
def other_tab(_: StateForeignBrowserError) -> Response[str]:
    from ucoauth.edges import pages

    metrics.add_metric(name="InstallStateRejected", unit="Count", value=1)
    logger.info("install state bound to another browser nonce")
    return _page(pages.started_in_another_tab(_brand(), _retry_href()), cookies=[])


@app.exception_handler(StateInvalidError)
def already_used(exc: StateInvalidError) -> Response[str]:
    from ucoauth.edges import pages

    metrics.add_metric(name="InstallStateRejected", unit="Count", value=1)
    logger.info("install state unknown or already used", reason=type(exc).__name__)
    return _page(pages.already_used(_brand(), _retry_href()), cookies=[])


@app.exception_handler(InstallSessionError)
def session_refused(exc: InstallSessionError) -> Response[str]:
    """An install link that cannot start or complete an install: a page, never a redirect. At the
    callback the state is spent, so the state cookie is cleared."""
    from ucoauth.edges import pages

    metrics.add_metric(name="InstallSessionRejected", unit="Count", value=1)
    logger.info("install session refused", reason=type(exc).__name__)
    brand = _brand()
    if isinstance(exc, InstallSessionUsedError):
        page = pages.install_link_used(brand)
    elif isinstance(exc, InstallSessionExpiredError):
        minutes = max(1, get_services().settings.install_session_ttl_seconds // 60)
        page = pages.install_link_expired(brand, minutes=minutes)
    elif isinstance(exc, InstallSessionRequiredError):
        page = pages.install_link_required(brand)
    else:
        page = pages.install_link_invalid(brand)
    return _page(page)


@app.exception_handler(AccountConflictError)
def account_conflict(exc: AccountConflictError) -> Response[str]:
    from ucoauth.edges import pages

    # The tokens this install obtained were given back; the installation is unchanged.
    logger.info("install refused: merchant linked to another account", merchant_id=str(exc))
    return _page(pages.account_already_linked(_brand(), str(exc)))


@app.exception_handler(PermanentUltraCartError)
def code_refused(exc: PermanentUltraCartError) -> Response[str]:
    from ucoauth.edges import pages

    if exc.app_misconfigured:
        logger.error(
            "UltraCart refused the app's registration: check the client id and scopes", error=str(exc)
        )
        return _page(pages.misconfigured(_brand()))
    logger.warning("UltraCart refused the authorization code", error=str(exc))
    return _page(pages.code_refused(_brand(), _retry_href()))


@app.exception_handler(AppCredentialsRejectedError)
def app_refused(_: AppCredentialsRejectedError) -> Response[str]:
    from ucoauth.edges import pages

    # Alarmed where it happened (AppCredentialsRejected); the state is spent, the code was not.
    return _page(pages.app_unavailable(_brand(), _retry_href()))


@app.exception_handler(TransientUltraCartError)
def upstream(exc: TransientUltraCartError) -> Response[str]:
    from ucoauth.edges import pages

    logger.error("UltraCart failed during the install", error=str(exc))
    status = 504 if isinstance(exc, UltraCartTimeoutError) else 502
    return _page(pages.upstream_failed(_brand(), status, _retry_href()))


@app.exception_handler(RetryLaterError)
def busy(exc: RetryLaterError) -> Response[str]:
    from ucoauth.edges import pages

    # Nothing was sent to UltraCart (its budget is spent, or too little time is left): the
    # state is consumed, so the merchant starts again, later.
    logger.warning("install not attempted", error=str(exc))
    return _page(pages.upstream_failed(_brand(), 503, _retry_href()))


@app.exception_handler(KeyUnavailableError)
@app.exception_handler(ClientError)
@app.exception_handler(BotoCoreError)
def aws_failed(exc: Exception) -> Response[str]:
    from ucoauth.edges import pages

    logger.error("AWS call failed during the install", error=type(exc).__name__)
    return web.html_response(pages.upstream_failed(_brand(), 503, _retry_href()))


@app.not_found
def not_found(_: Exception) -> Response[str]:
    from ucoauth.edges import pages

    return web.html_response(pages.not_found(_brand(), _retry_href()))


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
