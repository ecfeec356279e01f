"""``POST /webhooks/uninstall``: a Standard Webhooks uninstall, verified and queued (202)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ucoauth.adapters.services import get_services
from ucoauth.base.errors import RequestTooLargeError, WebhookPayloadError, WebhookSignatureError
from ucoauth.base.observability import logger, metrics
from ucoauth.base.validation import BadInput
from ucoauth.edges.api_errors import answer_errors
from ucoauth.edges.resolver import APIGatewayHttpResolver, Response
from ucoauth.edges.web import json_error, json_response, raw_body
from ucoauth.usecases.uninstall import MAX_WEBHOOK_BODY, accept_webhook

app = APIGatewayHttpResolver()


@app.post("/webhooks/uninstall")
def uninstall() -> Response[dict[str, str]]:
    body = raw_body(app.current_event.raw_event, limit=MAX_WEBHOOK_BODY)
    outcome = accept_webhook(get_services(), body, dict(app.current_event.headers))
    return json_response(202, {"status": outcome})


def _rejected_too_large(exc: RequestTooLargeError) -> Response[Any]:
    logger.info("webhook rejected", status=413, reason=str(exc))
    return json_error(413, "body_too_large")


def _rejected(status: int) -> Callable[[Exception], Response[Any]]:
    def answer(exc: Exception) -> Response[Any]:
        logger.info("webhook rejected", status=status, reason=str(exc))
        return json_error(status, str(exc))

    return answer


# A sender is told why its webhook was refused (the reasons carry no secret); AWS faults and the
# rest answer as every JSON API does.
answer_errors(
    app,
    {
        WebhookSignatureError: _rejected(401),
        WebhookPayloadError: _rejected(400),
        BadInput: _rejected(400),
        RequestTooLargeError: _rejected_too_large,
    },
)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
