"""``GET /tokens/{merchant_id}`` and ``POST /install-sessions`` for the app's own services (AWS_IAM
auth on both routes)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ucoauth.adapters.services import get_services
from ucoauth.base.errors import RequestTooLargeError
from ucoauth.base.observability import logger, metrics
from ucoauth.base.timing import Deadline
from ucoauth.base.validation import BadInput, bounded_int, is_merchant_id, parse_query
from ucoauth.edges import web
from ucoauth.edges.api_errors import Answer, answer_errors
from ucoauth.edges.resolver import APIGatewayHttpResolver, Response
from ucoauth.edges.web import json_error, json_response
from ucoauth.usecases.install_sessions import MAX_BODY, create_session, parse_request
from ucoauth.usecases.tokens import MAX_MIN_VALID_SECONDS, Demand, access_token

app = APIGatewayHttpResolver()

QUERY = frozenset({"min_valid_seconds", "newer_than"})
# Versions count state changes of one installation; 15 digits is more than any will reach.
MAX_VERSION = 10**15 - 1


@app.get("/tokens/<merchant_id>")
def get_token(merchant_id: str) -> Response[Any]:
    if not is_merchant_id(merchant_id):
        return json_error(400, "invalid_merchant_id")
    demand = _demand(app.current_event.raw_query_string or "")
    services = get_services()
    deadline = Deadline.of_context(app.lambda_context, services.clock)
    token = access_token(services, merchant_id, deadline=deadline, demand=demand)
    return json_response(200, token.as_json())


@app.post("/install-sessions")
def create_install_session() -> Response[Any]:
    """An install link for one of the app's own accounts (validated exactly, nothing stored for a
    rejected request)."""
    event = app.current_event.raw_event
    if event.get("rawQueryString"):
        raise BadInput("POST /install-sessions takes no query parameters")
    services = get_services()
    request = parse_request(
        web.raw_body(event, limit=MAX_BODY), origins=services.settings.install_return_origins
    )
    body = create_session(services, request, install_url=web.install_href(services.settings, event))
    return json_response(201, body)


def _demand(raw_query: str) -> Demand:
    """``?min_valid_seconds=N`` (0..3300) and ``?newer_than=<version>``, each at most once, nothing
    else (BadInput otherwise). Checked before anything is read or written."""
    query = parse_query(raw_query, allowed=QUERY, refuse_unknown=True)
    min_valid = query.get("min_valid_seconds")
    newer = query.get("newer_than")
    return Demand(
        min_valid_seconds=None
        if min_valid is None
        else bounded_int(min_valid, low=0, high=MAX_MIN_VALID_SECONDS),
        newer_than=None if newer is None else bounded_int(newer, low=0, high=MAX_VERSION),
    )


# A body past the limit is one more invalid request of POST /install-sessions (GET has none).
answer_errors(app, {RequestTooLargeError: Answer(400, "invalid_parameter")})


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
