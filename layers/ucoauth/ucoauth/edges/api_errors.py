"""The JSON APIs' answers to the errors they meet: one table, and each route's few exceptions.

Every JSON function (token API, admin API, device flow, uninstall webhook) registers this table
as its exception handlers, with the overrides its contract needs beside it. Powertools finds a
handler by the error's class hierarchy, most specific first, so ``BudgetExhaustedError`` answers
``budget_exhausted`` and any other ``RetryLaterError`` ``retry_later``. Two routes can no longer
disagree on the status or the ``Retry-After`` of the same fault.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.base.errors import (
    AppCredentialsRejectedError,
    BudgetExhaustedError,
    DeviceAuthorizationNotFoundError,
    KeyUnavailableError,
    LeaseBusyError,
    NotInstalledError,
    PermanentUltraCartError,
    QueueSendError,
    ReauthorizationRequiredError,
    RequestTooLargeError,
    RetryLaterError,
    TokenDecryptError,
    TransientUltraCartError,
    UpstreamUnavailableError,
)
from ucoauth.base.observability import logger
from ucoauth.base.validation import BadInput
from ucoauth.edges.web import json_error

if TYPE_CHECKING:
    from ucoauth.edges.resolver import APIGatewayHttpResolver, Response

# Seconds a caller waits before asking again, by the kind of fault.
AWS_RETRY_SECONDS = 5  # an AWS call failed after its own retries: usually brief
LEASE_BUSY_RETRY_SECONDS = 5  # a refresh or a revoke holds the merchant's lease
UPSTREAM_RETRY_SECONDS = 30  # UltraCart failing (5xx, 429, timeouts)
KEY_RETRY_SECONDS = 30  # KMS refused the key: alarmed, an operator's to fix


@dataclass(frozen=True, eq=False, repr=False)
class Answer:
    """A JSON error answer: status, ``{"error": code}``, and ``Retry-After`` (fixed seconds, or the
    error's own ``retry_after`` with ``retry_from_error``); ``log`` is logged as an error."""

    status: int
    error: str
    retry_after: float | None = None
    retry_from_error: bool = False
    log: str | None = None

    def render(self, exc: BaseException) -> Response[Any]:
        if self.log:
            logger.error(self.log, error=type(exc).__name__)
        retry = getattr(exc, "retry_after", None) if self.retry_from_error else self.retry_after
        return json_error(self.status, self.error, retry_after=retry)


_AWS_FAILED = Answer(503, "temporarily_unavailable", AWS_RETRY_SECONDS, log="AWS call failed")

ANSWERS: Mapping[type[Exception], Answer] = {
    BadInput: Answer(400, "invalid_parameter"),
    RequestTooLargeError: Answer(413, "request_too_large"),
    NotInstalledError: Answer(404, "not_installed"),
    DeviceAuthorizationNotFoundError: Answer(404, "not_found"),
    # UltraCart refused the stored grant, or the stored row is damaged: the merchant installs again.
    ReauthorizationRequiredError: Answer(409, "reauthorization_required"),
    TokenDecryptError: Answer(409, "reauthorization_required"),
    LeaseBusyError: Answer(503, "lease_busy", LEASE_BUSY_RETRY_SECONDS),
    UpstreamUnavailableError: Answer(503, "upstream_unavailable", retry_from_error=True),
    # UltraCart refused the app's own credentials (alarmed where it happened): nobody's grant.
    AppCredentialsRejectedError: Answer(503, "upstream_unavailable", retry_from_error=True),
    BudgetExhaustedError: Answer(503, "budget_exhausted", retry_from_error=True),
    RetryLaterError: Answer(503, "retry_later", retry_from_error=True),
    TransientUltraCartError: Answer(503, "upstream_unavailable", UPSTREAM_RETRY_SECONDS),
    # UltraCart refused the request itself, not a grant (logged where it happened).
    PermanentUltraCartError: Answer(502, "upstream_rejected"),
    KeyUnavailableError: Answer(503, "temporarily_unavailable", KEY_RETRY_SECONDS),
    QueueSendError: _AWS_FAILED,
    ClientError: _AWS_FAILED,
    BotoCoreError: _AWS_FAILED,
}

Handler = Callable[[Any], "Response[Any]"]


def answer_errors(
    app: APIGatewayHttpResolver, overrides: Mapping[type[Exception], Answer | Handler] | None = None
) -> None:
    """Register :data:`ANSWERS` (with this route's ``overrides``: an :class:`Answer`, or a function
    of the error for an answer that depends on it) as ``app``'s exception handlers, and the JSON
    404 for a path no route serves."""
    table: dict[type[Exception], Answer | Handler] = {**ANSWERS, **(overrides or {})}
    for error_type, answer in table.items():
        app.exception_handler(error_type)(answer.render if isinstance(answer, Answer) else answer)
    app.not_found(lambda _: json_error(404, "not_found"))
