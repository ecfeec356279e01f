"""AWS fault injection on the package's own clients (botocore event hooks), and UltraCart outages.

Nothing here edits the code under test: a fault is a handler on the event system of the client
``ucoauth.adapters.aws.client(service)`` returns, so only calls the package makes are affected, and a
test's own boto3 clients still see moto as it is.

Two ways in:

- ``via="call"`` (default) short-circuits the API call in ``before-call``: botocore raises the
  modelled error class (``client.exceptions.ProvisionedThroughputExceededException`` ...) at
  once, without its own retries, so the package's retry logic is what gets tested.
- ``via="send"`` answers the HTTP request in ``before-send`` with the error AWS would send
  (status 400, a JSON error body): botocore parses it and its bounded ``standard`` retries
  engage, as they would against AWS.

A fault hits ``times`` matching calls (-1: until removed) and only calls whose API parameters
satisfy ``match`` (e.g. only the ``UpdateItem`` that writes tokens). It counts its hits.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import boto3
from botocore.awsrequest import AWSResponse

from tests.support.roles import harness_boto3_session
from ucoauth.adapters import aws
from ucoauth.adapters.services import Services
from ucoauth.adapters.ultracart import UltraCartClient

Params = Mapping[str, Any]
Match = Callable[[Params], bool]
_MARK = "tests.support.faults"

# AWS service name (boto3) -> service id in event names (``before-call.<id>.<Operation>``).
SERVICE_IDS = {"dynamodb": "dynamodb", "kms": "kms", "sqs": "sqs", "events": "eventbridge"}


class _Body:
    """The ``raw`` of an :class:`AWSResponse`: what botocore reads the body from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


_own_lock = threading.Lock()
_own_session: boto3.Session | None = None
_own_clients: dict[tuple[str, str | None], Any] = {}


def own_client(service: str) -> Any:
    """A client of the test's own (no fault applies to it) for the current ``AWS_ENDPOINT_URL``.

    One boto3 session for all of them, so each service's model is loaded once per process.
    """
    global _own_session
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    key = (service, endpoint)
    with _own_lock:
        if key not in _own_clients:
            if _own_session is None:
                # The harness's credentials of whatever enforcement is active, even when asked from
                # inside a function's call (a fault wrapper reads the item as the test, not the role).
                _own_session = harness_boto3_session(os.environ.get("AWS_REGION", "us-east-1"))
            _own_clients[key] = _own_session.client(service, endpoint_url=endpoint)  # type: ignore[call-overload]
        return _own_clients[key]


def _item_of(params: Params) -> dict[str, Any] | None:
    """The item as stored now (moto, through a client of our own: no fault applies to it)."""
    found = own_client("dynamodb").get_item(
        TableName=params["TableName"], Key=params["Key"], ConsistentRead=True
    )
    item: dict[str, Any] | None = found.get("Item")
    return item


class AwsFault:
    """One injected AWS error on ``service``'s ``operation`` (see the module docstring)."""

    def __init__(
        self,
        service: str,
        operation: str,
        code: str,
        *,
        message: str = "injected fault",
        status: int = 400,
        times: int = -1,
        match: Match | None = None,
        via: Literal["call", "send"] = "call",
        when: Callable[[], bool] | None = None,
        per: Callable[[Params], str] | None = None,
    ) -> None:
        self.service = service
        self.operation = operation
        self.code = code
        self.message = message
        self.status = status
        self.times = times
        self.per = per
        self._remaining: dict[str, int] = {}
        self.match = match
        self.via = via
        self.when = when
        self.hits = 0
        self._lock = threading.Lock()
        self._key = f"{_MARK}:{id(self)}"
        self._client: Any = None
        self._events: list[tuple[str, Callable[..., Any]]] = []

    # -- lifecycle ---------------------------------------------------------------------

    def install(self) -> AwsFault:
        """Register the hooks on the package's client for ``service``."""
        self._client = aws.client(self.service)
        service_id = SERVICE_IDS[self.service]
        suffix = f"{service_id}.{self.operation}"
        self._events = [(f"before-parameter-build.{suffix}", self._select)]
        if self.via == "call":
            self._events.append((f"before-call.{suffix}", self._answer_call))
        else:
            self._events.append((f"before-send.{suffix}", self._answer_send))
        for event, handler in self._events:
            self._client.meta.events.register(event, handler, unique_id=f"{self._key}:{event}")
        return self

    def remove(self) -> None:
        """Unregister (the next call reaches moto as usual)."""
        if self._client is not None:
            for event, _ in self._events:
                self._client.meta.events.unregister(event, unique_id=f"{self._key}:{event}")
        self._client = None

    def __enter__(self) -> AwsFault:
        return self.install()

    def __exit__(self, *_: object) -> None:
        self.remove()

    # -- hooks ---------------------------------------------------------------------------

    def _take(self, key: str) -> bool:
        """Use up one hit (of ``key``'s own count with ``per``); False when it has run out."""
        with self._lock:
            remaining = self._remaining.get(key, self.times)
            if remaining == 0:
                return False
            if remaining > 0:
                self._remaining[key] = remaining - 1
            self.hits += 1
            return True

    def _select(self, params: Params, context: dict[str, Any], **_: Any) -> None:
        """Decide on the API parameters whether this call is a target (marks the request context)."""
        if self.match is not None and not self.match(params):
            return
        if self.when is not None and not self.when():
            return
        key = self.per(params) if self.per is not None else ""
        if self.via == "call" and not self._take(key):
            return
        context[self._key] = (key, dict(params))

    def _error(self, params: Params) -> dict[str, Any]:
        error: dict[str, Any] = {
            "Error": {"Code": self.code, "Message": self.message},
            "ResponseMetadata": {"HTTPStatusCode": self.status, "RetryAttempts": 0},
        }
        if (
            self.code == "ConditionalCheckFailedException"
            and params.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
        ):
            # What DynamoDB does: the item as it was, when there is one.
            item = _item_of(params)
            if item is not None:
                error["Item"] = item
        return error

    def _answer_call(self, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        selected = context.pop(self._key, None)
        if selected is None:
            return None
        no_headers: Any = {}  # botocore wraps any mapping in its HeadersDict
        http = AWSResponse("https://injected.invalid/", self.status, no_headers, _Body(b""))
        return http, self._error(selected[1])

    def _answer_send(self, request: Any, **_: Any) -> AWSResponse | None:
        # Emitted once per attempt (botocore's retries reuse the context): one hit per attempt.
        selected = request.context.get(self._key)
        if selected is None or not self._take(selected[0]):
            return None
        body = json.dumps({"__type": self.code, "message": self.message}).encode()
        headers: Any = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "injected"}
        return AWSResponse(request.url, self.status, headers, _Body(body))


@contextmanager
def aws_faults(*faults: AwsFault) -> Iterator[tuple[AwsFault, ...]]:
    """Install faults for the ``with`` block."""
    for fault in faults:
        fault.install()
    try:
        yield faults
    finally:
        for fault in faults:
            fault.remove()


# -- the faults the matrix uses ----------------------------------------------------------------


def throttle(
    service: str,
    operation: str,
    *,
    times: int = -1,
    match: Match | None = None,
    via: Literal["call", "send"] = "call",
    per: Callable[[Params], str] | None = None,
) -> AwsFault:
    """Throttling: DynamoDB's ``ProvisionedThroughputExceededException`` / KMS's ``ThrottlingException``."""
    code = "ProvisionedThroughputExceededException" if service == "dynamodb" else "ThrottlingException"
    return AwsFault(
        service, operation, code, message="Rate exceeded", times=times, match=match, via=via, per=per
    )


def ddb_throttling(
    operation: str, *, times: int = -1, match: Match | None = None, per: Callable[[Params], str] | None = None
) -> AwsFault:
    """DynamoDB's on-demand throttle (``ThrottlingException``)."""
    return AwsFault("dynamodb", operation, "ThrottlingException", times=times, match=match, per=per)


def conditional_failure(operation: str, *, times: int = 1, match: Match | None = None) -> AwsFault:
    """``ConditionalCheckFailedException`` (carrying the old item when ALL_OLD was asked for)."""
    return AwsFault(
        "dynamodb",
        operation,
        "ConditionalCheckFailedException",
        message="The conditional request failed",
        times=times,
        match=match,
    )


def kms_disabled(operation: str, *, times: int = -1) -> AwsFault:
    """``DisabledException``: the key is disabled."""
    return AwsFault("kms", operation, "DisabledException", message="key is disabled", times=times)


def kms_invalid_ciphertext(*, times: int = -1) -> AwsFault:
    """``InvalidCiphertextException`` on Decrypt."""
    return AwsFault("kms", "Decrypt", "InvalidCiphertextException", times=times)


# What the package asks of a token key: a data key before tokens are issued, Decrypt to read them
# (and the device-code key's Encrypt).
KMS_KEY_OPERATIONS = ("GenerateDataKey", "Encrypt", "Decrypt")


def kms_key_state_enforced(key_id: str) -> list[AwsFault]:
    """moto lets a disabled key encrypt and decrypt; KMS does not. These faults make moto's real
    key state count: GenerateDataKey/Encrypt/Decrypt fail with ``DisabledException`` while
    DescribeKey says so."""
    kms = own_client("kms")

    def disabled() -> bool:
        return bool(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] != "Enabled")

    return [
        AwsFault("kms", op, "DisabledException", message=f"{key_id} is disabled", when=disabled)
        for op in KMS_KEY_OPERATIONS
    ]


# -- matching the package's DynamoDB writes by what they do --------------------------------------


def expression(params: Params) -> str:
    return str(params.get("UpdateExpression", ""))


def _clause_attributes(params: Params, clause: str) -> set[str]:
    """The attributes an UpdateExpression's SET or REMOVE clause names (placeholders resolved)."""
    names: dict[str, str] = dict(params.get("ExpressionAttributeNames") or {})
    found = re.search(rf"\b{clause}\s+(.*?)(?=\s+(?:SET|REMOVE|ADD|DELETE)\s|$)", expression(params))
    if found is None:
        return set()
    attributes = set()
    for action in found.group(1).split(","):
        target = action.split("=", 1)[0].strip()
        attributes.add(names.get(target, target))
    return attributes


def is_token_write(params: Params) -> bool:
    """replace_installation / write_refreshed_tokens: the UpdateItem that stores a ciphertext."""
    return "tokens" in _clause_attributes(params, "SET")


def is_lease_take(params: Params) -> bool:
    return expression(params).startswith("SET lease_owner = :owner")


def is_shred(params: Params) -> bool:
    """mark_uninstalled: the UpdateItem that removes the ciphertext."""
    return "tokens" in _clause_attributes(params, "REMOVE")


def item_key(params: Params) -> str:
    """The item a DynamoDB call is about (``per=item_key``: a count of its own per merchant)."""
    return str(params.get("Key", {}).get("pk", {}).get("S", ""))


def is_state_consume(params: Params) -> bool:
    return str(params.get("Key", {}).get("pk", {}).get("S", "")).startswith("STATE#")


# -- UltraCart unreachable -----------------------------------------------------------------------


class ClosedPort:
    """A loopback TCP port that refuses connections: bound (so nobody else gets it), never listening."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> ClosedPort:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def point_ultracart_at(services: Services, port: int, client_id: str) -> None:
    """Make the package's UltraCart client talk to ``127.0.0.1:port`` (the injectable factory)."""
    settings = services.settings
    client = UltraCartClient(
        f"http://127.0.0.1:{port}/rest/v2",
        client_id,
        connect_timeout=settings.ultracart_connect_timeout,
        read_timeout=settings.ultracart_read_timeout,
    )
    services.ultracart_factory = lambda: client


def restore_ultracart(services: Services) -> None:
    services.ultracart_factory = None
