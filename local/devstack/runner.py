"""The local stand-ins for EventBridge Scheduler and Lambda's SQS event source mappings.

The planner runs on the template's schedule (``DEVSTACK_SCHEDULE_SECONDS`` overrides the period
for development); each queue of an ``SQS`` event source is long-polled and its batches go to
the worker, and records are deleted the way an event source mapping with
``ReportBatchItemFailures`` deletes them: everything except the reported failures, and nothing
when the handler raises (the messages come back after their visibility timeout, or earlier when
the worker set a backoff).
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from devstack.invoke import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY
from devstack.resources import LocalResources, SqsEventSource, schedules, sqs_event_sources

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger("devstack.runner")

Invoke = Callable[[str, dict[str, Any]], Any]

# The record attributes Lambda passes on from SQS (the rest of "All" stays out of the event).
_RECORD_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "DeadLetterQueueSourceArn",
)
_SQS_CONFIG = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=10)


def _message_attributes(message: MessageTypeDef) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    for name, attribute in message.get("MessageAttributes", {}).items():
        value: dict[str, Any] = {
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": attribute["DataType"],
        }
        if "StringValue" in attribute:
            value["stringValue"] = attribute["StringValue"]
        if "BinaryValue" in attribute:
            value["binaryValue"] = base64.b64encode(attribute["BinaryValue"]).decode("ascii")
        converted[name] = value
    return converted


def sqs_event(messages: list[MessageTypeDef], *, queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping delivers for a batch of messages."""
    records = []
    for message in messages:
        attributes = message.get("Attributes", {})
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message.get("Body", ""),
                "attributes": {k: attributes[k] for k in _RECORD_ATTRIBUTES if k in attributes},
                "messageAttributes": _message_attributes(message),
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def scheduler_event(*, account_id: str, region: str, schedule_name: str) -> dict[str, Any]:
    """What EventBridge Scheduler sends a target that has no Input of its own."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": account_id,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:scheduler:{region}:{account_id}:schedule/default/{schedule_name}"],
        "detail": "{}",
    }


def failed_ids(result: Any, batch_ids: set[str]) -> set[str] | None:
    """The message ids a ``ReportBatchItemFailures`` answer reports, or None when the answer
    is malformed (Lambda then treats the whole batch as failed)."""
    if result is None:
        return set()
    if not isinstance(result, dict):
        return None
    failures = result.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in batch_ids:
            return None
        failed.add(identifier)
    return failed


class Runner:
    """The schedule and the queue drains of the template, against a local stack's resources."""

    def __init__(
        self,
        resources: LocalResources,
        invoke: Invoke,
        *,
        schedule_seconds: float | None = None,
        wait_seconds: int = 1,
        event_source_client: Callable[[str], SQSClient] | None = None,
    ) -> None:
        """``event_source_client(function)``: the SQS client that function's event source mapping
        polls with. Lambda's poller uses the function's role, and so does the local stack's (the
        default is one client with the fake credentials, for an AWS that enforces nothing)."""
        self.resources = resources
        self._invoke = invoke
        self._wait_seconds = wait_seconds
        template = resources.template
        self.sources: dict[str, SqsEventSource] = sqs_event_sources(template)
        self._workers = {source.queue_logical_id: fn for fn, source in self.sources.items()}
        found = schedules(template, parameters=_template_parameters(resources))
        if not found:
            raise ValueError("template.yaml has no schedule for the refresh planner")
        self.schedules = found
        self.schedule_seconds: dict[str, float] = {}
        for schedule in found:
            seconds = schedule_seconds if schedule_seconds is not None else schedule.rate_seconds
            if seconds is None:
                raise ValueError(
                    f"{schedule.logical_id}: {schedule.expression} is not a rate(); "
                    "set DEVSTACK_SCHEDULE_SECONDS to run it locally"
                )
            self.schedule_seconds[schedule.logical_id] = float(seconds)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        if event_source_client is None:
            shared: SQSClient = boto3.session.Session(
                aws_access_key_id=LOCAL_ACCESS_KEY_ID,
                aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
                region_name=resources.region,
            ).client("sqs", endpoint_url=resources.endpoint_url, config=_SQS_CONFIG)
            self._pollers = dict.fromkeys(self.sources, shared)
        else:
            self._pollers = {function: event_source_client(function) for function in self.sources}

    # -- one step at a time (tests) ------------------------------------------------------------

    def run_planner_once(self) -> list[Any]:
        """Invoke every scheduled function once; returns their results."""
        results = []
        for schedule in self.schedules:
            event = scheduler_event(
                account_id=self.resources.account_id,
                region=self.resources.region,
                schedule_name=f"{self.resources.stack_name}-{schedule.logical_id}-{schedule.event_name}",
            )
            results.append(self._invoke(schedule.logical_id, event))
        return results

    def drain_once(self, queue_logical_id: str, *, wait_seconds: int | None = None) -> int:
        """Receive one batch from the queue and give it to its worker; returns the records handled."""
        function = self._workers.get(queue_logical_id)
        if function is None:
            raise KeyError(f"no function of template.yaml is fed by {queue_logical_id}")
        source = self.sources[function]
        queue_url = self.resources.queue_url(queue_logical_id)
        poller = self._pollers[function]
        answer = poller.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, source.batch_size),
            WaitTimeSeconds=self._wait_seconds if wait_seconds is None else wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = answer.get("Messages", [])
        if not messages:
            return 0
        event = sqs_event(
            messages,
            queue_arn=self.resources.attributes[f"{queue_logical_id}.Arn"],
            region=self.resources.region,
        )
        try:
            result = self._invoke(function, event)
        except Exception:
            # Lambda deletes nothing when the invocation fails: the batch comes back later.
            print(f"devstack runner: {function} failed on a batch of {len(messages)}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            return len(messages)
        batch_ids = {m["MessageId"] for m in messages}
        failed = failed_ids(result, batch_ids) if source.report_batch_item_failures else set()
        if failed is None:
            log.warning("%s returned malformed batchItemFailures: the whole batch is retried", function)
            return len(messages)
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            poller.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        log.info("%s: %d record(s), %d failed", function, len(messages), len(failed))
        return len(messages)

    def drain_until_empty(self, timeout: float = 10.0) -> int:
        """Drain every queue until none has a visible message; returns the records handled."""
        deadline = time.monotonic() + timeout
        total = 0
        while True:
            handled = sum(self.drain_once(queue, wait_seconds=0) for queue in self._workers)
            total += handled
            if handled == 0:
                return total
            if time.monotonic() >= deadline:
                raise TimeoutError(f"queues still had messages after {timeout} s")

    # -- in the background (python -m devstack) ------------------------------------------------

    def start(self) -> Runner:
        if self._threads:
            raise RuntimeError("runner already started")
        self._stop.clear()
        for schedule in self.schedules:
            self._threads.append(
                threading.Thread(
                    target=self._schedule_loop,
                    args=(self.schedule_seconds[schedule.logical_id],),
                    name=f"devstack-schedule-{schedule.logical_id}",
                    daemon=True,
                )
            )
        for queue in self._workers:
            self._threads.append(
                threading.Thread(
                    target=self._drain_loop, args=(queue,), name=f"devstack-drain-{queue}", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loops; each wait is bounded, so this returns within a poll plus a handler."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads = []

    def _schedule_loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                for result in self.run_planner_once():
                    log.info("refresh planner: %s", json.dumps(result, default=str))
            except Exception:
                print("devstack runner: the scheduled planner failed", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)

    def _drain_loop(self, queue: str) -> None:
        while not self._stop.is_set():
            try:
                self.drain_once(queue)
            except Exception:
                if self._stop.is_set():
                    return
                print(f"devstack runner: draining {queue} failed", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
                self._stop.wait(1.0)


def _template_parameters(resources: LocalResources) -> Mapping[str, str]:
    """The stack's parameters, as ``schedules()`` accepts them (Stage is set separately)."""
    return {name: value for name, value in resources.parameters.items() if name != "Stage"}
