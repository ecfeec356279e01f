"""``/admin/*`` for operators (AWS_IAM on every route): installations, refresh now, uninstall,
dead-letter redrive and stats. JSON in and out; errors as ``{"error": "<code>"}``."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ucoauth.adapters.services import get_services
from ucoauth.base.observability import logger, metrics
from ucoauth.base.timing import Deadline
from ucoauth.base.validation import is_merchant_id
from ucoauth.edges.api_errors import answer_errors
from ucoauth.edges.resolver import APIGatewayHttpResolver, Response
from ucoauth.edges.web import json_error, json_response
from ucoauth.usecases import admin
from ucoauth.usecases.install_sessions import is_app_account_id

app = APIGatewayHttpResolver()
LIST_PARAMETERS = {"status", "limit", "cursor", "app_account_id"}


def _caller() -> str:
    context = app.current_event.request_context
    iam = context.authorizer.iam if context.authorizer else None
    return (iam.user_arn if iam else None) or "unknown"


def _query(allowed: set[str]) -> dict[str, str]:
    given = app.current_event.query_string_parameters or {}
    if set(given) - allowed:
        raise admin.AdminRequestError("unknown_parameter")
    return dict(given)


def _merchant(merchant_id: str) -> str:
    _query(set())
    if not is_merchant_id(merchant_id):
        raise admin.AdminRequestError("invalid_merchant_id")
    return merchant_id


@app.get("/admin/installations")
def list_installations() -> Response[Any]:
    query = _query(LIST_PARAMETERS)
    limit = admin.parse_limit(query.get("limit"))
    status = admin.parse_status(query.get("status"))
    cursor = query.get("cursor")
    account = query.get("app_account_id")
    if account is not None:
        return _list_by_account(account, status=status, limit=limit, cursor=cursor)
    if cursor is not None:
        admin.decode_cursor(cursor)
    page = admin.list_installations(get_services(), status=status, limit=limit, cursor=cursor)
    logger.info("installations listed", caller=_caller(), status=status, count=len(page.items))
    return json_response(200, {"items": page.items, "next_cursor": page.next_cursor})


def _list_by_account(account: str, *, status: str | None, limit: int, cursor: str | None) -> Response[Any]:
    if not is_app_account_id(account):
        raise admin.AdminRequestError("invalid_app_account_id")
    if status is not None:  # one filter at a time: each is one index
        raise admin.AdminRequestError("invalid_filter")
    page = admin.list_by_account(get_services(), account, limit=limit, cursor=cursor)
    logger.info("installations listed", caller=_caller(), app_account_id=account, count=len(page.items))
    return json_response(200, {"items": page.items, "next_cursor": page.next_cursor})


@app.get("/admin/installations/<merchant_id>")
def show_installation(merchant_id: str) -> Response[Any]:
    item = admin.show(get_services(), _merchant(merchant_id))
    logger.info("installation shown", caller=_caller(), merchant_id=merchant_id)
    return json_response(200, item)


@app.post("/admin/installations/<merchant_id>/refresh")
def refresh_installation(merchant_id: str) -> Response[Any]:
    services = get_services()
    deadline = Deadline.of_context(app.lambda_context, services.clock)
    result = admin.refresh(services, _merchant(merchant_id), deadline=deadline)
    admin.announce(services, "refresh", caller=_caller(), merchant_id=merchant_id, result=result)
    if result == "reauthorization":
        return json_error(409, "reauthorization_required")
    return json_response(200, {"merchant_id": merchant_id, "result": result})


@app.post("/admin/installations/<merchant_id>/uninstall")
def uninstall_installation(merchant_id: str) -> Response[Any]:
    services = get_services()
    caller = _caller()
    request_id = admin.uninstall(services, _merchant(merchant_id), caller=caller)
    admin.announce(services, "uninstall", caller=caller, merchant_id=merchant_id, request_id=request_id)
    return json_response(202, {"merchant_id": merchant_id, "result": "queued"})


@app.post("/admin/dead-letters/<queue>/redrive")
def redrive(queue: str) -> Response[Any]:
    _query(set())
    if queue not in ("refresh", "revoke"):
        return json_error(404, "not_found")
    services = get_services()
    deadline = Deadline.of_context(app.lambda_context, services.clock)
    moved = admin.redrive(services, "refresh" if queue == "refresh" else "revoke", deadline=deadline)
    admin.announce(services, "redrive", caller=_caller(), queue=queue, moved=moved)
    return json_response(202, {"queue": queue, "moved": moved})


@app.get("/admin/stats")
def stats() -> Response[Any]:
    _query(set())
    return json_response(200, admin.stats(get_services()))


answer_errors(app, {admin.AdminRequestError: lambda exc: json_error(400, exc.code)})


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
