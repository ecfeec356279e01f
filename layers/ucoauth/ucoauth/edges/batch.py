"""The queue workers' batch processing: Powertools' ``BatchProcessor`` for SQS."""

from __future__ import annotations

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

__all__ = [
    "BatchProcessor",
    "EventType",
    "PartialItemFailureResponse",
    "SQSRecord",
    "process_partial_response",
]
