"""The queue workers' batch processing: Powertools' ``BatchProcessor`` for SQS, loaded without
the rest of ``aws_lambda_powertools.utilities.data_classes`` (see :mod:`ucoauth.edges.powertools`)."""

from __future__ import annotations

from ucoauth.edges.powertools import DATA_CLASSES, lazy_packages

lazy_packages(DATA_CLASSES)

from aws_lambda_powertools.utilities.batch import (  # noqa: E402 - after the registration
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse  # noqa: E402
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord  # noqa: E402

__all__ = [
    "BatchProcessor",
    "EventType",
    "PartialItemFailureResponse",
    "SQSRecord",
    "process_partial_response",
]
