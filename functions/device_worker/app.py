"""Device worker: one poll of UltraCart's token endpoint per SQS record, the next one queued delayed."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ucoauth.adapters.services import get_services
from ucoauth.base.observability import logger, metrics
from ucoauth.base.timing import Deadline
from ucoauth.edges.batch import (
    BatchProcessor,
    EventType,
    PartialItemFailureResponse,
    SQSRecord,
    process_partial_response,
)
from ucoauth.usecases.device import parse_poll_message, poll_device_authorization

# Failed records come back after their visibility timeout (the claim they held expires first).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> str:
    parsed = parse_poll_message(record.body)
    if parsed is None:
        logger.warning("malformed device poll message dropped")
        return "invalid"
    authorization_id, seq = parsed
    services = get_services()
    deadline = Deadline.of_context(lambda_context, services.clock)
    result = poll_device_authorization(services, authorization_id, seq, deadline=deadline)
    logger.info("device poll handled", authorization_id=authorization_id, seq=seq, result=result)
    return result


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
