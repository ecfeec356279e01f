"""The merchant's browser: ``GET /install`` and ``GET /oauth/callback`` (HttpApi 2.0)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from ucoauth import pages, web
from ucoauth.errors import (
    KeyUnavailableError,
    PermanentUltraCartError,
    RetryLaterError,
    StateInvalidError,
    TransientUltraCartError,
)
from ucoauth.install import STATE_COOKIE, begin_install, complete_install
from ucoauth.observability import logger, metrics
from ucoauth.services import get_services
from ucoauth.timing import Deadline
from ucoauth.validation import OAUTH_ERROR, OAUTH_VALUE, BadInput, parse_query

app = APIGatewayHttpResolver()
_CALLBACK_PARAMS = frozenset({"code", "state", "error", "error_description", "error_uri"})


def _retry_href() -> str:
    return web.install_href(get_services().settings, app.current_event.raw_event)


@app.get("/install")
def install() -> Response[str]:
    services = get_services()
    start = begin_install(
        services, redirect_uri=web.redirect_uri(services.settings, app.current_event.raw_event)
    )
    cookie = web.state_cookie(start.browser_nonce, max_age=services.settings.state_ttl_seconds)
    return web.redirect(start.authorize_url, cookies=[cookie])


@app.get("/oauth/callback")
def callback() -> Response[str]:
    event = app.current_event.raw_event
    query = parse_query(event.get("rawQueryString", ""), allowed=_CALLBACK_PARAMS)
    error = query.get("error")
    if error is not None:
        metrics.add_metric(name="InstallDeclined", unit="Count", value=1)
        if error == "access_denied":
            return web.html_response(pages.declined(_retry_href()), cookies=[web.clear_state_cookie()])
        if not OAUTH_ERROR.match(error) or error == "invalid_request":
            return web.html_response(pages.link_expired(_retry_href()), cookies=[web.clear_state_cookie()])
        raise BadInput("UltraCart did not authorize the app.")
    code, state = query.get("code", ""), query.get("state", "")
    if not OAUTH_VALUE.match(code) or not OAUTH_VALUE.match(state):
        raise BadInput("The link back from UltraCart is missing its code or state.")
    nonce = web.read_cookie(event, STATE_COOKIE)
    if not nonce:
        raise BadInput("Finish the installation in the same browser you started it in, with cookies enabled.")
    services = get_services()
    result = complete_install(
        services,
        code=code,
        state=state,
        browser_nonce=nonce,
        redirect_uri=web.redirect_uri(services.settings, event),
        deadline=Deadline.of_context(app.lambda_context, services.clock),
    )
    cookies = [web.clear_state_cookie()]
    if services.settings.post_install_redirect_url:
        target = web.with_query(services.settings.post_install_redirect_url, merchant_id=result.merchant_id)
        return web.redirect(target, cookies=cookies)
    return web.html_response(pages.installed(result.merchant_id, reinstall=result.reinstall), cookies=cookies)


@app.exception_handler(BadInput)
def bad_input(exc: BadInput) -> Response[str]:
    return web.html_response(pages.bad_request(str(exc), _retry_href()), cookies=[web.clear_state_cookie()])


@app.exception_handler(StateInvalidError)
def bad_state(_: StateInvalidError) -> Response[str]:
    metrics.add_metric(name="InstallStateRejected", unit="Count", value=1)
    reason = "This installation link has expired or was already used."
    return web.html_response(pages.bad_request(reason, _retry_href()), cookies=[web.clear_state_cookie()])


@app.exception_handler(PermanentUltraCartError)
def code_refused(exc: PermanentUltraCartError) -> Response[str]:
    logger.warning("UltraCart refused the authorization code", error=str(exc))
    reason = "UltraCart refused the authorization. Start the installation again."
    return web.html_response(pages.bad_request(reason, _retry_href()), cookies=[web.clear_state_cookie()])


@app.exception_handler(TransientUltraCartError)
def upstream(exc: TransientUltraCartError) -> Response[str]:
    logger.error("UltraCart failed during the install", error=str(exc))
    status = 504 if "timed out" in str(exc) else 502
    return web.html_response(pages.upstream_failed(status, _retry_href()), cookies=[web.clear_state_cookie()])


@app.exception_handler(RetryLaterError)
def busy(exc: RetryLaterError) -> Response[str]:
    # Nothing was sent to UltraCart (its budget is spent, or too little time is left): the
    # state is consumed, so the merchant starts again, later.
    logger.warning("install not attempted", error=str(exc))
    return web.html_response(pages.upstream_failed(503, _retry_href()), cookies=[web.clear_state_cookie()])


@app.exception_handler(KeyUnavailableError)
@app.exception_handler(ClientError)
@app.exception_handler(BotoCoreError)
def aws_failed(exc: Exception) -> Response[str]:
    logger.error("AWS call failed during the install", error=type(exc).__name__)
    return web.html_response(pages.upstream_failed(503, _retry_href()))


@app.not_found
def not_found(_: Exception) -> Response[str]:
    return web.html_response(pages.render(404, "err", "Page not found", "There is nothing at this address."))


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
