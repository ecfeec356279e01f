"""``POST /device/authorizations`` and ``GET /device/authorizations/{id}`` (AWS_IAM): the device flow."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.device import (
    device_status,
    get_device_settings,
    is_authorization_id,
    start_device_authorization,
)
from ucoauth.errors import (
    AppCredentialsRejectedError,
    BudgetExhaustedError,
    DeadlineTooCloseError,
    DeviceAuthorizationNotFoundError,
    KeyUnavailableError,
    PermanentUltraCartError,
    QueueSendError,
    RequestTooLargeError,
    TransientUltraCartError,
)
from ucoauth.observability import logger, metrics
from ucoauth.resolver import APIGatewayHttpResolver, Response
from ucoauth.services import get_services
from ucoauth.timing import Deadline
from ucoauth.validation import BadInput, is_scope
from ucoauth.web import json_error, json_response, raw_body

app = APIGatewayHttpResolver()
MAX_BODY = 1024
_FIELDS = frozenset({"scope"})


def _requested_scope(event: dict[str, Any]) -> str | None:
    """The optional ``{"scope": "..."}`` body; BadInput for anything else."""
    raw = raw_body(event, limit=MAX_BODY)
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadInput("The body is not JSON.") from None
    if not isinstance(data, dict) or set(data) - _FIELDS:
        raise BadInput("The body must be a JSON object with at most a scope.")
    scope = data.get("scope")
    if scope is None:
        return None
    if not isinstance(scope, str) or not is_scope(scope):
        raise BadInput("scope must be one or more scope names.")
    return scope


@app.post("/device/authorizations")
def create_authorization() -> Response[dict[str, Any]]:
    if app.current_event.query_string_parameters:
        return json_error(400, "invalid_request")
    scope = _requested_scope(app.current_event.raw_event)
    services = get_services()
    deadline = Deadline.of_context(app.lambda_context, services.clock)
    started = start_device_authorization(services, get_device_settings(), scope=scope, deadline=deadline)
    return json_response(201, started.as_json())


@app.get("/device/authorizations/<authorization_id>")
def get_authorization(authorization_id: str) -> Response[dict[str, Any]]:
    if not is_authorization_id(authorization_id):
        return json_error(400, "invalid_authorization_id")
    return json_response(200, device_status(get_services(), authorization_id))


@app.exception_handler(BadInput)
def bad_input(_: BadInput) -> Response[dict[str, Any]]:
    return json_error(400, "invalid_request")


@app.exception_handler(RequestTooLargeError)
def too_large(_: RequestTooLargeError) -> Response[dict[str, Any]]:
    return json_error(413, "request_too_large")


@app.exception_handler(DeviceAuthorizationNotFoundError)
def not_found_id(_: DeviceAuthorizationNotFoundError) -> Response[dict[str, Any]]:
    return json_error(404, "not_found")


@app.exception_handler(BudgetExhaustedError)
def budget(exc: BudgetExhaustedError) -> Response[dict[str, Any]]:
    return json_error(503, "budget_exhausted", retry_after=exc.retry_after)


@app.exception_handler(DeadlineTooCloseError)
def too_late(exc: DeadlineTooCloseError) -> Response[dict[str, Any]]:
    return json_error(503, "retry_later", retry_after=exc.retry_after)


@app.exception_handler(AppCredentialsRejectedError)
def app_refused(exc: AppCredentialsRejectedError) -> Response[dict[str, Any]]:
    # UltraCart refused the app's own credentials (alarmed where it happened): the caller retries.
    return json_error(503, "upstream_unavailable", retry_after=exc.retry_after)


@app.exception_handler(PermanentUltraCartError)
def refused(exc: PermanentUltraCartError) -> Response[dict[str, Any]]:
    if exc.error == "invalid_scope":
        return json_error(400, "invalid_scope")
    # The app itself was refused (client id, ...): the operator's to fix, not the caller's.
    logger.error("UltraCart refused a device authorization", error=exc.error, status=exc.status)
    return json_error(502, "ultracart_refused")


@app.exception_handler(TransientUltraCartError)
def upstream(_: TransientUltraCartError) -> Response[dict[str, Any]]:
    return json_error(503, "upstream_unavailable", retry_after=30)


@app.exception_handler(KeyUnavailableError)
@app.exception_handler(QueueSendError)
@app.exception_handler(ClientError)
@app.exception_handler(BotoCoreError)
def aws_failed(exc: Exception) -> Response[dict[str, Any]]:
    logger.error("AWS call failed in the device flow", error=type(exc).__name__)
    return json_error(503, "temporarily_unavailable", retry_after=30)


@app.not_found
def not_found(_: Exception) -> Response[dict[str, Any]]:
    return json_error(404, "not_found")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
