"""SQS plumbing for the planner and the workers: batched sends and retry backoff."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters import aws
from ucoauth.base.errors import QueueSendError
from ucoauth.base.observability import logger

_BATCH = 10
_BASE_BACKOFF = 30
_MAX_BACKOFF = 900
_MAX_DELAY = 900  # SQS's DelaySeconds limit


def send_refresh_requests(queue_url: str, merchant_ids: Iterable[str]) -> int:
    """Queue one refresh message per merchant, ten per SendMessageBatch. Returns the count."""
    sent = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal sent
        entries: list[Any] = [
            {"Id": str(i), "MessageBody": json.dumps({"merchant_id": mid})} for i, mid in enumerate(batch)
        ]
        for _ in range(3):
            answer = aws.sqs().send_message_batch(QueueUrl=queue_url, Entries=entries)
            failed = {f["Id"] for f in answer.get("Failed", [])}
            sent += len(entries) - len(failed)
            entries = [e for e in entries if e["Id"] in failed]
            if not entries:
                break
        if entries:
            raise QueueSendError(f"{len(entries)} refresh messages could not be queued")
        batch.clear()

    for merchant_id in merchant_ids:
        batch.append(merchant_id)
        if len(batch) == _BATCH:
            flush()
    if batch:
        flush()
    return sent


def receive_count(record: Any) -> int:
    """How many times SQS has delivered this record (1 on the first delivery)."""
    try:
        return int(record.attributes.approximate_receive_count)
    except (AttributeError, TypeError, ValueError):
        return 1


def defer(queue_url: str, body: str, *, not_before: float) -> bool:
    """Re-queue a message that was not attempted (or must be tried again much later) as a new
    message, delayed by ``not_before`` seconds (at most SQS's 15 minutes).

    Returned as a batch item failure, it would spend one of the message's receives (the queue
    dead-letters it after maxReceiveCount). A new message starts at receive count zero. False
    when the send failed (the caller then fails the record, which comes back on its own).
    """
    delay = min(_MAX_DELAY, max(1, math.ceil(not_before)))
    try:
        aws.sqs().send_message(QueueUrl=queue_url, MessageBody=body, DelaySeconds=delay)
    except (ClientError, BotoCoreError) as exc:
        logger.warning("could not re-queue a message for later", error=type(exc).__name__)
        return False
    return True


def back_off(queue_url: str, record: Any) -> None:
    """Delay the record's next delivery with capped exponential backoff and full jitter.

    UltraCart gives no Retry-After; without this every failed message would come back after
    the same visibility timeout, in a herd.
    """
    attempt = receive_count(record)
    delay = int(random.uniform(1, min(_MAX_BACKOFF, _BASE_BACKOFF * 2 ** (attempt - 1))))
    try:
        aws.sqs().change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=record.receipt_handle, VisibilityTimeout=delay
        )
    except (ClientError, BotoCoreError) as exc:
        logger.warning("could not set retry backoff", error=type(exc).__name__)
