"""``POST /webhooks/uninstall``: a Standard Webhooks uninstall, verified and queued (202)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.errors import RequestTooLargeError, WebhookPayloadError, WebhookSignatureError
from ucoauth.observability import logger, metrics
from ucoauth.resolver import APIGatewayHttpResolver, Response
from ucoauth.services import get_services
from ucoauth.uninstall import MAX_WEBHOOK_BODY, accept_webhook
from ucoauth.validation import BadInput
from ucoauth.web import json_response, raw_body

app = APIGatewayHttpResolver()


@app.post("/webhooks/uninstall")
def uninstall() -> Response[dict[str, str]]:
    body = raw_body(app.current_event.raw_event, limit=MAX_WEBHOOK_BODY)
    outcome = accept_webhook(get_services(), body, dict(app.current_event.headers))
    return json_response(202, {"status": outcome})


@app.exception_handler(WebhookSignatureError)
def not_signed(exc: WebhookSignatureError) -> Response[dict[str, str]]:
    logger.info("webhook rejected", status=401, reason=str(exc))
    return json_response(401, {"error": str(exc)})


@app.exception_handler(WebhookPayloadError)
def not_an_uninstall(exc: WebhookPayloadError) -> Response[dict[str, str]]:
    logger.info("webhook rejected", status=400, reason=str(exc))
    return json_response(400, {"error": str(exc)})


@app.exception_handler(RequestTooLargeError)
def too_large(exc: RequestTooLargeError) -> Response[dict[str, str]]:
    logger.info("webhook rejected", status=413, reason=str(exc))
    return json_response(413, {"error": "body_too_large"})


@app.exception_handler(BadInput)
def bad_input(exc: BadInput) -> Response[dict[str, str]]:
    return json_response(400, {"error": str(exc)})


@app.exception_handler(ClientError)
@app.exception_handler(BotoCoreError)
def aws_failed(exc: Exception) -> Response[dict[str, str]]:
    logger.error("AWS call failed accepting a webhook", error=type(exc).__name__)
    return json_response(503, {"error": "temporarily_unavailable"})


@app.not_found
def not_found(_: Exception) -> Response[dict[str, str]]:
    return json_response(404, {"error": "not_found"})


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
