"""What the code published on EventBridge, read from the local observer queue (the template's
resources add a rule that copies every event of the stack's bus there)."""

from __future__ import annotations

import json
from typing import Any

from devstack.resources import LocalResources
from tests.support.roles import harness_boto3_session


def published_events(resources: LocalResources) -> list[dict[str, Any]]:
    """Everything the code published on EventBridge (read from the local observer queue)."""
    sqs = harness_boto3_session(resources.region).client("sqs")
    out: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=resources.events_observer_queue_url, MaxNumberOfMessages=10)
        messages = answer.get("Messages", [])
        if not messages:
            return out
        for message in messages:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(
                QueueUrl=resources.events_observer_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )


def observed_events(resources: LocalResources) -> list[dict[str, Any]]:
    """What the code published on EventBridge, via the local observer queue."""
    sqs = harness_boto3_session(resources.region).client("sqs", endpoint_url=resources.endpoint_url)
    out: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=resources.events_observer_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return out
        for message in messages:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(
                QueueUrl=resources.events_observer_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
