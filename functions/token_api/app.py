"""``GET /tokens/{merchant_id}`` for the app's own services (AWS_IAM auth on the route)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.errors import (
    NotInstalledError,
    ReauthorizationRequiredError,
    TokenDecryptError,
    UpstreamUnavailableError,
)
from ucoauth.observability import logger, metrics
from ucoauth.services import get_services
from ucoauth.tokens import Refresher
from ucoauth.validation import is_merchant_id
from ucoauth.web import JSON_HEADERS

app = APIGatewayHttpResolver()


def _error(status: int, error: str) -> Response[dict[str, str]]:
    return Response(
        status_code=status, content_type="application/json", body={"error": error}, headers=JSON_HEADERS
    )


@app.get("/tokens/<merchant_id>")
def get_token(merchant_id: str) -> Response[Any]:
    if not is_merchant_id(merchant_id):
        return _error(400, "invalid_merchant_id")
    token = Refresher(get_services()).access_token(merchant_id)
    return Response(
        status_code=200, content_type="application/json", body=token.as_json(), headers=JSON_HEADERS
    )


@app.exception_handler(NotInstalledError)
def not_installed(_: NotInstalledError) -> Response[dict[str, str]]:
    return _error(404, "not_installed")


@app.exception_handler(ReauthorizationRequiredError)
@app.exception_handler(TokenDecryptError)
def reauthorization(_: Exception) -> Response[dict[str, str]]:
    return _error(409, "reauthorization_required")


@app.exception_handler(UpstreamUnavailableError)
def upstream(_: UpstreamUnavailableError) -> Response[dict[str, str]]:
    return _error(503, "upstream_unavailable")


@app.exception_handler(ClientError)
@app.exception_handler(BotoCoreError)
def aws_failed(exc: Exception) -> Response[dict[str, str]]:
    logger.error("AWS call failed serving a token", error=type(exc).__name__)
    return _error(503, "temporarily_unavailable")


@app.not_found
def not_found(_: Exception) -> Response[dict[str, str]]:
    return _error(404, "not_found")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
