"""Revoke worker: uninstall requests (webhook or EventBridge) → UltraCart revoke → crypto-shred;
and grants a reinstall replaced → UltraCart revoke."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ucoauth.adapters.queues import back_off, defer
from ucoauth.adapters.services import get_services
from ucoauth.base.errors import RetryLaterError, RevokePendingError
from ucoauth.base.observability import logger, metrics
from ucoauth.base.timing import Deadline
from ucoauth.edges.batch import (
    BatchProcessor,
    EventType,
    PartialItemFailureResponse,
    SQSRecord,
    process_partial_response,
)
from ucoauth.usecases.superseded import is_superseded_message, revoke_superseded
from ucoauth.usecases.uninstall import process_uninstall

# A batch whose records all failed still answers per record (no exception), so the event source
# mapping retries exactly those records with their own backoff.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> str:
    try:
        body = json.loads(record.body)
    except ValueError:
        body = None
    services = get_services()
    deadline = Deadline.of_context(lambda_context, services.clock)
    try:
        result: str = (
            revoke_superseded(services, body, deadline=deadline)
            if is_superseded_message(body)
            else process_uninstall(services, body, deadline=deadline)
        )
    except RetryLaterError as exc:
        # UltraCart could not confirm the revoke (or nothing was attempted): the request comes back
        # as a new, delayed message, so an outage of hours never walks it into the DLQ.
        if isinstance(exc, RevokePendingError):
            body = {k: v for k, v in body.items() if k != "app_refused_at"}
            body["retry_since"] = exc.retry_since
            if exc.app_refused_at is not None:  # the app was refused: that wait does not count
                body["app_refused_at"] = exc.app_refused_at
            metrics.add_metric(name="RevokeRetried", unit="Count", value=1)
        if defer(services.settings.revoke_queue_url, json.dumps(body), not_before=exc.retry_after):
            return "deferred"
        raise
    except Exception:
        back_off(services.settings.revoke_queue_url, record)
        raise
    logger.info("uninstall handled", result=result)
    return result


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
