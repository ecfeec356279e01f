"""One cold start, in a fresh interpreter: ``python -m bench.cold_child CANDIDATE``.

Prints ``{"import": s, "clients": s, "ready": s, "cpu": s, "ready_epoch": t}``, measured with
``perf_counter`` from the first line of this module (the parent adds the interpreter's own
start-up through wall time). Nothing touches the network: the environment carries fake names,
ARNs and credentials, and building a botocore client or a ``requests`` session makes no call.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import json  # noqa: E402 - the clock starts before anything else is imported
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# What the first, typical request of each function needs built: its clients and sessions, as
# counted in docs/BENCHMARKS.md section 2 (browser: a callback; token API: a stored token;
# webhook: a signed uninstall; planner: a schedule; workers: one record; admin: one item; device
# flow: a start, which takes from the budget, asks UltraCart, encrypts the device code, stores it
# and queues the first poll; device worker: a poll still pending, which decrypts the device code,
# asks UltraCart and queues the next poll; EventBridge only on an approval).
FUNCTION_CLIENTS: dict[str, tuple[str, ...]] = {
    "oauth_browser": ("dynamodb", "kms", "events", "ultracart"),
    "token_api": ("dynamodb", "kms"),
    "uninstall_webhook": ("dynamodb", "sqs", "secretsmanager", "webhook_verifier"),
    "refresh_planner": ("dynamodb", "sqs"),
    "refresh_worker": ("dynamodb", "kms", "ultracart"),
    "revoke_worker": ("dynamodb", "kms", "events", "ultracart", "import:ucoauth.core.rotation"),
    "admin_api": ("dynamodb",),
    "device_flow": ("dynamodb", "kms", "sqs", "ultracart"),
    "device_worker": ("dynamodb", "kms", "sqs", "ultracart"),
    # The browser's other cold start: /install stores a state and redirects (DynamoDB only).
    "oauth_browser@install": ("dynamodb",),
}


def _import_function(candidate: str) -> None:
    # Lambda puts the function's code directory first on sys.path and imports "app". A candidate
    # "<dir>@<route>" is the same function whose first request is another route.
    functions = Path(os.environ.get("BENCH_FUNCTIONS_ROOT") or ROOT / "functions")
    sys.path.insert(0, str(functions / candidate.split("@")[0]))
    __import__("app")


def _function_clients(directory: str) -> None:
    from ucoauth.adapters import aws
    from ucoauth.adapters.services import get_services

    get_services()
    for name in FUNCTION_CLIENTS[directory]:
        if name == "ultracart":
            # Imported only here: a function that never calls UltraCart never loads requests.
            from ucoauth.adapters.ultracart import get_client

            get_client()
        elif name.startswith("import:"):
            # A module the package imports inside the request's code path, not at module level.
            __import__(name.removeprefix("import:"))
        elif name == "webhook_verifier":
            # What ucoauth.usecases.uninstall builds once it has read the secret (that read is a call).
            from standardwebhooks.webhooks import Webhook

            Webhook("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        else:
            aws.client(name)


def prepare(directory: str) -> None:
    """What a cold start of ``directory`` does before its first request: import, build."""
    _import_function(directory)
    _function_clients(directory)


def _boto3_pair() -> None:
    import boto3

    session = boto3.session.Session()
    session.client("dynamodb")
    session.client("kms")


def _five_clients(*, shared_session: bool) -> None:
    """Diagnostic: the worker's five clients, from one session or from one session each."""
    import boto3

    session = boto3.session.Session()
    for service in ("dynamodb", "kms", "events", "sqs", "secretsmanager"):
        (session if shared_session else boto3.session.Session()).client(service)


def run(candidate: str) -> dict[str, float]:
    start = _T0
    if candidate == "floor":
        import boto3

        imported = time.perf_counter()
        _boto3_pair()
    elif candidate == "powertools_peer":
        import boto3
        from aws_lambda_powertools import Logger, Metrics, Tracer
        from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

        imported = time.perf_counter()
        built: list[Any] = [
            Logger(service="peer"),
            Tracer(service="peer"),
            Metrics(namespace="Peer", service="peer"),
            APIGatewayHttpResolver(),
        ]
        assert built
        _boto3_pair()
    elif candidate == "ultracart_sdk_peer":
        import boto3
        from ultracart.api.oauth_api import OauthApi
        from ultracart.api_client import ApiClient

        imported = time.perf_counter()
        OauthApi(ApiClient())
        _boto3_pair()
    elif candidate in ("diag_one_session", "diag_session_each"):
        import boto3  # noqa: F401

        imported = time.perf_counter()
        _five_clients(shared_session=candidate == "diag_one_session")
    elif candidate in FUNCTION_CLIENTS:
        _import_function(candidate)
        imported = time.perf_counter()
        _function_clients(candidate)
    else:
        raise SystemExit(f"unknown candidate {candidate}")
    ready = time.perf_counter()
    cpu = time.process_time()
    return {
        "import": imported - start,
        "clients": ready - imported,
        "ready": ready - start,
        # CPU seconds of this process at ready, interpreter start-up included: less sensitive to
        # other work on the machine than wall time (a busy machine stretches wall time only).
        "cpu": cpu,
        # Wall clock at ready, so the parent can tell spawn-to-ready from teardown.
        "ready_epoch": time.time(),
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])), flush=True)
    # A Lambda execution environment is frozen and discarded, never finalized: interpreter
    # teardown (0.1-0.4 s with botocore's data loaded) is part of no request, so skip it.
    os._exit(0)
