"""AWS clients: created lazily on first use, cached per process, injectable for tests.

Nothing here touches AWS at import time. Retries are botocore's ``standard`` mode with a
bound, and timeouts are short: a Lambda invocation must not hang on a dependency.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_session: Any = None
_injected_session: Any = None


def _make(service: str) -> Any:
    """Build a client; the caller holds ``_lock``."""
    global _session
    # Deferred: botocore is most of a cold start, paid once, when a client is first needed.
    # botocore's own session, not boto3's: the clients are the same botocore clients, while
    # importing boto3 also loads its resource layer and s3transfer (concurrent.futures,
    # multiprocessing), a tenth of a cold start that no function here uses.
    import botocore.session
    from botocore.config import Config

    if _session is None:
        # One session for every client: each new session loads botocore's endpoint and
        # partition data again (about 50 ms per client on a cold start).
        _session = botocore.session.get_session()
    from ucoauth.base.timing import AWS_ATTEMPTS, AWS_CONNECT_TIMEOUT, AWS_READ_TIMEOUT

    # Bounded so that the longest call is known (ucoauth.base.timing.AWS_CALL_MAX): leases and
    # write reserves are computed from it.
    config = Config(
        retries={"mode": "standard", "total_max_attempts": AWS_ATTEMPTS},
        connect_timeout=AWS_CONNECT_TIMEOUT,
        read_timeout=AWS_READ_TIMEOUT,
        tcp_keepalive=True,
    )
    return _session.create_client(service, config=config)


def client(service: str) -> Any:
    """The cached client for ``service``; created on first call."""
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(service)
        if found is None:
            found = _make(service)
            _clients[service] = found
        return found


def set_client(service: str, value: Any) -> None:
    """Inject a client (tests, benchmarks, or an app that wants its own session)."""
    with _lock:
        _clients[service] = value


def set_session(session: Any) -> None:
    """Build every client from this botocore session from now on (an app's own session, or the
    local stack's, whose clients sign as the function being run); None: a default session."""
    global _session, _injected_session
    with _lock:
        _clients.clear()
        _injected_session = _session = session


def reset_clients() -> None:
    """Forget every cached client (and a default session), so the next ones read the environment
    anew; a session given to :func:`set_session` stays."""
    global _session
    with _lock:
        _clients.clear()
        _session = _injected_session


def dynamodb() -> DynamoDBClient:
    """DynamoDB client."""
    return client("dynamodb")  # type: ignore[no-any-return]


def kms() -> KMSClient:
    """KMS client."""
    return client("kms")  # type: ignore[no-any-return]


def sqs() -> SQSClient:
    """SQS client."""
    return client("sqs")  # type: ignore[no-any-return]


def events() -> EventBridgeClient:
    """EventBridge client."""
    return client("events")  # type: ignore[no-any-return]


def secretsmanager() -> SecretsManagerClient:
    """Secrets Manager client."""
    return client("secretsmanager")  # type: ignore[no-any-return]
