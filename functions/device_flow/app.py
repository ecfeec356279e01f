"""``POST /device/authorizations`` and ``GET /device/authorizations/{id}`` (AWS_IAM): the device flow."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ucoauth.adapters.browser_items import AccountLink
from ucoauth.adapters.devices import is_authorization_id
from ucoauth.adapters.services import get_services
from ucoauth.base.errors import PermanentUltraCartError
from ucoauth.base.observability import logger, metrics
from ucoauth.base.timing import Deadline
from ucoauth.base.validation import BadInput, is_scope
from ucoauth.edges.api_errors import Answer, answer_errors
from ucoauth.edges.resolver import APIGatewayHttpResolver, Response
from ucoauth.edges.web import json_error, json_response, raw_body
from ucoauth.usecases.device import device_status, start_device_authorization
from ucoauth.usecases.install_sessions import parse_request

app = APIGatewayHttpResolver()
# The scope, and an account with its metadata (escaped, at their limits).
MAX_BODY = 32768
_FIELDS = frozenset({"scope", "app_account_id", "metadata"})


def _request(event: dict[str, Any]) -> tuple[str | None, AccountLink | None]:
    """The optional ``{"scope", "app_account_id", "metadata"}`` body (the account and its metadata
    validated as an install session's); BadInput for anything else."""
    raw = raw_body(event, limit=MAX_BODY)
    if not raw.strip():
        return None, None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadInput("The body is not JSON.") from None
    if not isinstance(data, dict) or set(data) - _FIELDS:
        raise BadInput("The body must be a JSON object with at most scope, app_account_id, metadata.")
    scope = data.get("scope")
    if scope is not None and (not isinstance(scope, str) or not is_scope(scope)):
        raise BadInput("scope must be one or more scope names.")
    if "app_account_id" not in data:
        if "metadata" in data:
            raise BadInput("metadata comes with an app_account_id.")
        return scope, None
    account = {k: data[k] for k in ("app_account_id", "metadata") if k in data}
    linked = parse_request(json.dumps(account).encode(), origins=())
    return scope, AccountLink("", linked.app_account_id, linked.metadata)


@app.post("/device/authorizations")
def create_authorization() -> Response[dict[str, Any]]:
    if app.current_event.query_string_parameters:
        return json_error(400, "invalid_request")
    scope, link = _request(app.current_event.raw_event)
    services = get_services()
    deadline = Deadline.of_context(app.lambda_context, services.clock)
    started = start_device_authorization(services, scope=scope, deadline=deadline, link=link)
    return json_response(201, started.as_json())


@app.get("/device/authorizations/<authorization_id>")
def get_authorization(authorization_id: str) -> Response[dict[str, Any]]:
    if not is_authorization_id(authorization_id):
        return json_error(400, "invalid_authorization_id")
    return json_response(200, device_status(get_services(), authorization_id))


def _refused(exc: PermanentUltraCartError) -> Response[Any]:
    if exc.error == "invalid_scope":
        return json_error(400, "invalid_scope")
    # The app itself was refused (client id, ...): the operator's to fix, not the caller's.
    logger.error("UltraCart refused a device authorization", error=exc.error, status=exc.status)
    return json_error(502, "ultracart_refused")


# The device flow's own contract: a bad body is an invalid request, and UltraCart refusing the
# authorization is either the caller's scope or the operator's registration.
answer_errors(app, {BadInput: Answer(400, "invalid_request"), PermanentUltraCartError: _refused})


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
