"""Refresh worker: one SQS record per merchant, partial batch failures go back with backoff."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ucoauth.adapters.queues import back_off, defer
from ucoauth.adapters.services import get_services
from ucoauth.base.errors import RetryLaterError
from ucoauth.base.observability import logger, metrics
from ucoauth.base.timing import Deadline
from ucoauth.base.validation import is_merchant_id
from ucoauth.edges.batch import (
    BatchProcessor,
    EventType,
    PartialItemFailureResponse,
    SQSRecord,
    process_partial_response,
)
from ucoauth.usecases.refresh import apply_recovery_message, refresh_due

# A batch whose records all failed still answers per record (no exception), so the event source
# mapping retries exactly those records with their own backoff.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> str:
    try:
        body = json.loads(record.body)
        merchant_id = body["merchant_id"]
    except (ValueError, KeyError, TypeError):
        body, merchant_id = None, None
    if not isinstance(merchant_id, str) or not is_merchant_id(merchant_id):
        logger.warning("malformed refresh message dropped")
        return "invalid"
    services = get_services()
    deadline = Deadline.of_context(lambda_context, services.clock)
    try:
        if "recovery" in body:
            result = apply_recovery_message(services, body, deadline=deadline)
        else:
            result = refresh_due(services, merchant_id, deadline=deadline)
    except RetryLaterError as exc:
        # Not attempted (pace, budget, too little time left, an unsettled grant): re-queued as a
        # new message for later. A batch item failure would spend one of its receives toward
        # the DLQ; acknowledging it would leave it for the planner's next run.
        metrics.add_metric(name="RefreshDeferred", unit="Count", value=1)
        if defer(services.settings.refresh_queue_url, record.body, not_before=exc.retry_after):
            return "deferred"
        raise  # not re-queued: the record comes back after its visibility timeout
    except Exception:
        back_off(services.settings.refresh_queue_url, record)
        raise
    logger.info("refresh handled", merchant_id=merchant_id, result=result)
    return result


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
