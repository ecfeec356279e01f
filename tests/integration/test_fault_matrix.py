"""The fault matrix, over real HTTP: every operation x every fault, then recovery, then the invariant.

Operations (each through its Lambda handler, with moto's server and the UltraCart sandbox):
``callback`` (a real /install, then the callback with a code the sandbox issued), ``refresh``
(RefreshWorkerFunction fed from the real refresh queue), ``token`` (TokenApiFunction),
``revoke`` (RevokeWorkerFunction fed from the real revoke queue, ``ApproximateReceiveCount``
included) and ``device`` (DeviceWorkerFunction polling an approved device authorization, fed
from the real device queue). Faults: UltraCart failing every way it can (status codes, refused
and reset connections, read timeouts, unreadable bodies, a garbage ``expires_in``, refusing the
app's own client credentials), DynamoDB and KMS
errors injected on the package's own clients (tests/support/faults.py), and the refresh
worker killed at each step under its lease (tests/support/refresh_process.py).

Each cell:
1. injects the fault and runs the operation; asserts what the user (merchant, app, queue) sees;
2. removes the fault and recovers the way the real system would: the queue redelivers after
   the worker's backoff (modelled by moving the package's clock past any lease left behind,
   as a backoff of seconds to minutes would), the DLQ is redriven, the planner runs again,
   the merchant starts the install again;
3. asserts the invariant for every installation touched: active with tokens the sandbox accepts
   now *and an hour later* (planner and token API keep it alive), or
   ``reauthorization_required`` with its event (after which the merchant reinstalls), or, for
   revoke, ``uninstalled`` with no ciphertext. Never "active but broken", never lost.

Every cell appends a row to the JSON-lines file named by ``RELIABILITY_REPORT`` (if set).
``FAULT_MERCHANTS`` installations are touched per cell (CI: 1; ``make reliability``: more).
"""

from __future__ import annotations

import functools
import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from devstack.iam import acting_as
from devstack.resources import LocalResources, create_resources, load_template
from tests.support import faults
from tests.support.deadlines import a_deadline
from tests.support.installs import seed_installation
from tests.support.lambdas import call_handler, follow_to_installed, invoke, load_event, signed_webhook_event
from tests.support.processes import results_of, start_processes
from tests.support.roles import package_under_roles
from ucoauth.adapters import aws as uc_aws
from ucoauth.adapters import queues as uc_queues
from ucoauth.adapters.crypto import TokenCipher, TokenSet
from ucoauth.adapters.installations.model import ACTIVE, REAUTHORIZATION_REQUIRED, UNINSTALLED, Installation
from ucoauth.adapters.installations.store import InstallationStore
from ucoauth.adapters.services import Services
from ucoauth.base.settings import Settings
from ucoauth.base.timing import ultracart_call_max
from ucoauth.usecases.refresh import refresh_due
from ucsandbox import Sandbox
from ucsandbox.models import EndpointName

pytestmark = pytest.mark.integration

MERCHANTS = int(os.environ.get("FAULT_MERCHANTS", "1"))
REDIRECT = "http://localhost:3000/oauth/callback"
READ_TIMEOUT = 1.0  # the UltraCart client's read timeout in this module
HANG = READ_TIMEOUT + 0.5  # a sandbox `timeout` fault holds the answer longer than the client waits
LATER = 3700  # "an hour later": past the sandbox's 3600 s token lifetime
MAX_RECEIVES = 5  # the queues' maxReceiveCount in template.yaml
DEFAULT_EXPIRES_IN = "3600"  # the sandbox's default `expires_in`

# What each fault injects (the report's legend).
DESCRIPTIONS = {
    "uc_500": "UltraCart answers 500 with a UC-REST-ERROR header",
    "uc_502": "UltraCart answers 502",
    "uc_429": "UltraCart answers 429 (rate limited) with a UC-REST-ERROR header",
    "uc_refused": "UltraCart refuses the grant (callback: 400 invalid_grant for the code; otherwise the "
    "merchant removed the app in UltraCart, so its tokens are dead)",
    "uc_conn_refused": "connection refused (the client points at a closed loopback port)",
    "uc_conn_reset": "connection reset (TCP RST, no answer)",
    "uc_read_timeout": f"UltraCart holds the answer {HANG}s, past the client's {READ_TIMEOUT}s read timeout",
    "uc_truncated": "200 with its JSON body cut in half",
    "uc_not_json": "200 with a text/plain body",
    "uc_html": "200 with an HTML error page",
    "uc_expires_garbage": 'token answers carry `expires_in: "soon"`',
    "uc_app_refused": "UltraCart refuses the app's own client: 401 invalid_client on the token, revoke and "
    "device authorize endpoints (a rotated or mistyped client secret), every grant still live",
    "uc_refused_events_throttled": "the merchant removed the app in UltraCart; "
    "EventBridge PutEvents throttles",
    "ddb_throttled": "ProvisionedThroughputExceededException on the first DynamoDB call "
    "(callback: state consume; refresh, revoke: lease; token: GetItem)",
    "ddb_throttled_write": "ThrottlingException on every write of the result "
    "(installation, refreshed tokens, shred)",
    "ddb_throttled_write_x2": "ThrottlingException on the first 2 writes of the result per merchant",
    "ddb_retried_by_sdk": "ThrottlingException answered twice over HTTP on the first DynamoDB call "
    "(botocore's 2 attempts see both and give up)",
    "ddb_conditional": "ConditionalCheckFailedException (callback: state consume; refresh: token write; "
    "token: inline lease, old item returned; revoke: shred)",
    "kms_throttled": "KMS ThrottlingException on GenerateDataKey, Encrypt and Decrypt",
    "kms_disabled": "KMS DisabledException on GenerateDataKey, Encrypt and Decrypt",
    "kms_key_disabled": "the key disabled in moto (kms.disable_key; KMS's refusal enforced by a hook)",
    "kms_invalid_ciphertext": "KMS InvalidCiphertextException on every Decrypt (a fresh probe fails too: "
    "no evidence that the row is damaged)",
    "kill_after_lease": "refresh worker process killed (os._exit) right after taking the lease",
    "kill_after_ultracart": "refresh worker killed when UltraCart answered (rotated), before the write",
    "kill_after_write": "refresh worker killed right after the new tokens were stored",
}

REAUTH_EVENT = "Reauthorization Required"
REMOVED_EVENT = "Installation Removed"


# -- fixtures: the conftest's, made cheap enough for ~80 cells -------------------------------------

_package_clients: dict[tuple[str, str], Any] = {}


@functools.cache
def boto_session() -> boto3.Session:
    return boto3.Session(region_name="us-east-1")


@functools.cache
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture
def aws_server(aws_env: None, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalResources]:
    """The conftest's ``aws_server`` (moto reset, template.yaml's resources created, every role
    enforced), with one boto3 session and one parsed template per process instead of new ones per test."""
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    resources = create_resources(boto_session(), endpoint_url=moto_server, stage="test", template=template())
    with package_under_roles(resources, moto_server, monkeypatch):
        yield resources


def reuse_package_clients(endpoint: str) -> None:
    """The package's clients, built by the package on the first test and handed back to it on the
    next ones (building a boto3 client costs ~0.1 s; ``live`` forgets them after every test)."""
    for service in ("dynamodb", "kms", "sqs", "events"):
        key = (service, endpoint)
        if key in _package_clients:
            uc_aws.set_client(service, _package_clients[key])
        else:
            _package_clients[key] = uc_aws.client(service)


@pytest.fixture
def live_env(live_env: dict[str, str]) -> dict[str, str]:
    """The conftest's environment with a short read timeout and lease, and no pacing in the way."""
    return {
        **live_env,
        "ULTRACART_READ_TIMEOUT": str(READ_TIMEOUT),
        "REFRESH_PACE_LIMIT": "1000",
    }


# -- the queues, fed to the workers the way Lambda's event source mapping does ---------------------


@dataclass
class Delivery:
    """One worker invocation: which merchants' records were received, and which failed."""

    received: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    raised: str | None = None


class Queue:
    """A queue in moto's server; ``deliver`` is one invocation of its worker with what is visible."""

    def __init__(
        self, res: LocalResources, url: str, dlq_url: str, function: str, merchant_of: Callable[[Any], str]
    ) -> None:
        self.sqs: Any = faults.own_client("sqs")
        self.url, self.dlq_url, self.function = url, dlq_url, function
        self.region = res.region
        self.merchant_of = merchant_of
        self.arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    def send(self, body: dict[str, Any]) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps(body))

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        attributes = message.get("Attributes", {})
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {
                "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
                "SentTimestamp": attributes.get("SentTimestamp", "0"),
                "SenderId": attributes.get("SenderId", "local"),
                "ApproximateFirstReceiveTimestamp": attributes.get("ApproximateFirstReceiveTimestamp", "0"),
            },
            "messageAttributes": {},
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": self.region,
        }

    def deliver(self, *, timeout_seconds: float | None = None) -> Delivery:
        """Receive what is visible (≤ 10), invoke the worker (with ``timeout_seconds`` left, default
        the template's Timeout); delete successes, make failures visible again at once (their
        backoff is taken as elapsed)."""
        messages = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=120,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
        ).get("Messages", [])
        delivery = Delivery()
        if not messages:
            return delivery
        records = [self._record(m) for m in messages]
        try:
            if timeout_seconds is None:
                answer = invoke(self.function, {"Records": records})
            else:
                answer = call_handler(self.function, {"Records": records}, timeout_seconds=timeout_seconds)
            failed_ids = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
        except Exception as exc:  # the whole batch comes back; and it is a finding
            delivery.raised = f"{type(exc).__name__}: {exc}"
            failed_ids = {m["MessageId"] for m in messages}
        for message in messages:
            merchant = self.merchant_of(json.loads(message["Body"]))
            delivery.received.append(merchant)
            if message["MessageId"] in failed_ids:
                delivery.failed.append(merchant)
                self.sqs.change_message_visibility(
                    QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return delivery

    def _count(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def pending(self) -> int:
        return self._count(self.url)

    def dead(self) -> int:
        return self._count(self.dlq_url)

    def redrive(self) -> int:
        """What ``aws sqs start-message-move-task`` does: the DLQ's messages back to the queue."""
        moved = 0
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return moved
            for message in messages:
                self.sqs.send_message(QueueUrl=self.url, MessageBody=message["Body"])
                self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"])
                moved += 1


# -- the world of one cell --------------------------------------------------------------------------


@dataclass
class World:
    live: Services
    sandbox: Sandbox
    res: LocalResources
    env: dict[str, str]
    refresh_queue: Queue
    revoke_queue: Queue
    merchants: list[str]
    seeded: dict[str, TokenSet] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    package_offset: float = 0.0

    def __post_init__(self) -> None:
        # The test's own view of the table and the key: no injected fault applies to it.
        self.store = InstallationStore(self.res.table_name, client=lambda: faults.own_client("dynamodb"))
        self.live.clock = self.clock
        self.cipher = TokenCipher(self.res.key_id, kms_client=lambda: faults.own_client("kms"))

    def get(self, merchant_id: str) -> Installation | None:
        return self.store.get(merchant_id)

    def clock(self) -> float:
        """The package's clock: real time plus whatever the test let pass."""
        return time.time() + self.package_offset

    def advance(self, seconds: float, *, ultracart: bool = True) -> None:
        """Time passes (without waiting): the package's clock, and UltraCart's unless told not to.
        (One clock object whose offset moves, so deadlines already computed move with it.)"""
        self.package_offset += seconds
        self.live.clock = self.clock
        if ultracart:
            self.sandbox.advance_time(seconds)

    def event_count(self, detail_type: str, merchant_id: str) -> int:
        """Events published on the bus (seen through the local observer queue)."""
        sqs = faults.own_client("sqs")
        while messages := sqs.receive_message(
            QueueUrl=self.res.events_observer_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            for message in messages:
                self.events.append(json.loads(message["Body"]))
                sqs.delete_message(
                    QueueUrl=self.res.events_observer_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        return sum(
            1
            for e in self.events
            if e["detail-type"] == detail_type and e["detail"].get("merchant_id") == merchant_id
        )

    def let_backoff_pass(self) -> None:
        """A retry comes back after its backoff (≥ 1 s, up to minutes), by then any lease a failed
        or dead worker left has expired: move the package's clock past the leases still held."""
        now = self.live.now()
        installations = [inst for m in self.merchants if (inst := self.get(m)) is not None]
        held = [i.lease_expires_at for i in installations if i.lease_expires_at and i.lease_held(now)]
        if held:
            self.advance(max(held) - now + 1, ultracart=False)

    def tokens(self, merchant_id: str) -> TokenSet | None:
        inst = self.get(merchant_id)
        if inst is None or inst.tokens_ciphertext is None:
            return None
        return self.cipher.decrypt(merchant_id, inst.tokens_ciphertext)

    def refresh_dead(self, merchant_id: str) -> bool:
        tokens = self.tokens(merchant_id)
        return tokens is not None and not self.sandbox.refresh_token_is_valid(tokens.refresh_token or "")


@pytest.fixture
def world(
    live: Services,
    sandbox: Sandbox,
    aws_server: LocalResources,
    live_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    assert aws_server.endpoint_url is not None
    # A message re-sent for later (pace, budget, time, a revoke UltraCart could not confirm) is
    # visible at once here; the delay it asked for is modelled by moving the package's clock.
    monkeypatch.setattr(uc_queues, "_MAX_DELAY", 0)
    reuse_package_clients(aws_server.endpoint_url)
    refresh = Queue(
        aws_server,
        aws_server.refresh_queue_url,
        aws_server.refresh_dlq_url,
        "RefreshWorkerFunction",
        lambda body: str(body["merchant_id"]),
    )
    revoke = Queue(
        aws_server,
        aws_server.revoke_queue_url,
        aws_server.revoke_dlq_url,
        "RevokeWorkerFunction",
        # an uninstall (EventBridge's shape) or a replaced grant's revoke (``merchant_id`` on top)
        lambda body: str(body.get("detail", body)["merchant_id"]),
    )
    merchants = [f"FM{i}" for i in range(1, MERCHANTS + 1)]
    return World(live, sandbox, aws_server, live_env, refresh, revoke, merchants)


# -- the handlers, as their callers use them --------------------------------------------------------


def assert_no_traceback(response: dict[str, Any]) -> None:
    body = str(response.get("body", ""))
    assert response["statusCode"] != 500, response
    assert "Traceback" not in body and 'File "' not in body, body[:500]


def install(world: World, merchant_id: str) -> dict[str, Any]:
    """The merchant's browser: GET /install, Approve at UltraCart (the sandbox), the callback."""
    start = invoke("OAuthBrowserFunction", load_event("install.json"))
    assert start["statusCode"] == 302, start
    state = parse_qs(urlsplit(start["headers"]["Location"]).query)["state"][0]
    nonce = start["cookies"][0].split(";")[0].split("=", 1)[1]
    code = world.sandbox.issue_code(merchant_id, REDIRECT)
    response: dict[str, Any] = follow_to_installed(
        invoke(
            "OAuthBrowserFunction", load_event("callback-success.json", code=code, state=state, nonce=nonce)
        )
    )
    assert_no_traceback(response)
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    assert headers.get("content-type", "").startswith("text/html"), headers
    assert headers.get("cache-control") == "no-store", headers
    return response


def token_call(merchant_id: str, *, nested: bool = False) -> tuple[int, dict[str, Any]]:
    """GET /tokens/{merchant_id} (``nested``: from inside another invocation, as another caller)."""
    event = load_event("tokens-get.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/tokens/{merchant_id}"
    event["pathParameters"] = {"merchant_id": merchant_id}
    response = call_handler("TokenApiFunction", event) if nested else invoke("TokenApiFunction", event)
    assert_no_traceback(response)
    return int(response["statusCode"]), json.loads(response["body"])


def uninstall_message(merchant_id: str) -> dict[str, Any]:
    return {
        "id": f"webhook:msg_{merchant_id}",
        "source": "webhook",
        "detail-type": "App Uninstalled",
        "time": datetime.fromtimestamp(time.time() + 1, tz=UTC).isoformat().replace("+00:00", "Z"),
        "detail": {"merchant_id": merchant_id},
    }


def run_planner(world: World) -> int:
    planned: dict[str, int] = invoke("RefreshPlannerFunction", load_event("schedule-refresh.json"))
    return planned["planned"]


def drain_refreshes(world: World, rounds: int = 3) -> None:
    """Deliver refresh messages until the queue is empty (bounded)."""
    for _ in range(rounds):
        if world.refresh_queue.pending() == 0:
            return
        world.let_backoff_pass()
        world.refresh_queue.deliver()


# -- faults -----------------------------------------------------------------------------------------

UC_FAULTS: dict[str, dict[str, Any]] = {
    "uc_500": {"status": 500, "uc_rest_error": "Internal Server Error"},
    "uc_502": {"status": 502},
    "uc_429": {"status": 429, "uc_rest_error": "Rate limit exceeded: 1000 requests per hour"},
    "uc_refused": {
        "status": 400,
        "body": {"error": "invalid_grant", "error_description": "The grant is invalid or was revoked."},
    },
    "uc_conn_reset": {"reset": True},
    "uc_read_timeout": {"timeout": HANG},
    "uc_truncated": {"malformed": "truncated"},
    "uc_not_json": {"malformed": "not_json"},
    "uc_html": {"malformed": "html"},
}
UC_TRANSIENT = [
    "uc_500",
    "uc_502",
    "uc_429",
    "uc_conn_refused",
    "uc_conn_reset",
    "uc_read_timeout",
    "uc_truncated",
    "uc_not_json",
    "uc_html",
]
Matcher = Callable[[faults.Params], bool] | None
# The DynamoDB call each operation makes first, the one that stores its result, and the one
# chosen for ConditionalCheckFailedException.
FIRST: dict[str, tuple[str, Matcher]] = {
    "callback": ("DeleteItem", faults.is_state_consume),
    "refresh": ("UpdateItem", faults.is_lease_take),
    "token": ("GetItem", None),
    "revoke": ("UpdateItem", faults.is_lease_take),
}
WRITE: dict[str, tuple[str, Matcher]] = {
    "callback": ("UpdateItem", faults.is_token_write),
    "refresh": ("UpdateItem", faults.is_token_write),
    "token": ("UpdateItem", faults.is_token_write),
    "revoke": ("UpdateItem", faults.is_shred),
}
CONDITIONAL: dict[str, tuple[str, Matcher]] = {
    "callback": FIRST["callback"],  # the state consume: the state looks used
    "refresh": WRITE["refresh"],  # the token write: the version looks moved
    "token": FIRST["refresh"],  # the inline lease: not free (the old item comes back)
    "revoke": WRITE["revoke"],  # the shred: the version looks moved
}


def wait_until_ultracart_idle(sandbox: Sandbox, timeout: float = 2 * HANG) -> None:
    """Until the sandbox has let go of the calls it held (as UltraCart still works on a call the
    client gave up on, it answers the merchant's next call with 429 until then)."""
    deadline = time.monotonic() + timeout
    while sandbox.in_flight._busy and time.monotonic() < deadline:
        time.sleep(0.05)


def inject(world: World, operation: str, fault: str) -> Callable[[], None]:
    """Apply ``fault`` for ``operation``; returns what removes it."""
    endpoint: EndpointName = "revoke" if operation == "revoke" else "token"
    live, sandbox = world.live, world.sandbox
    if fault == "uc_refused" and operation != "callback":
        # UltraCart refuses a grant because it is dead: the merchant removed the app in UltraCart.
        # (A refusal injected over a live grant would be a lie the judge rightly calls a loss.)
        for merchant in world.merchants:
            sandbox.remove_app(merchant)
        return lambda: None
    if fault in UC_FAULTS:
        sandbox.add_fault(endpoint, times=-1, **UC_FAULTS[fault])

        def clear() -> None:
            sandbox.clear_faults()
            if fault == "uc_read_timeout":
                wait_until_ultracart_idle(sandbox)

        return clear
    if fault == "uc_conn_refused":
        closed = faults.ClosedPort()
        faults.point_ultracart_at(live, closed.port, sandbox.client_id)

        def reconnect() -> None:
            faults.restore_ultracart(live)
            closed.close()

        return reconnect
    if fault == "uc_app_refused":
        sandbox.configure(refuse_client=True)

        def accept_the_app() -> None:
            sandbox.configure(refuse_client=False)

        return accept_the_app
    if fault == "uc_expires_garbage":
        sandbox.configure(expires_in="soon")

        def sane_expiry() -> None:
            sandbox.configure(expires_in=DEFAULT_EXPIRES_IN)

        return sane_expiry

    injected: list[faults.AwsFault]
    if fault == "uc_refused_events_throttled":
        for merchant in world.merchants:
            sandbox.remove_app(merchant)
        injected = [faults.throttle("events", "PutEvents")]
    elif fault == "ddb_throttled":
        op, match = FIRST[operation]
        injected = [faults.throttle("dynamodb", op, match=match)]
    elif fault == "ddb_throttled_write":
        op, match = WRITE[operation]
        injected = [faults.ddb_throttling(op, match=match)]
    elif fault == "ddb_throttled_write_x2":
        op, match = WRITE[operation]
        injected = [faults.ddb_throttling(op, match=match, times=2, per=faults.item_key)]
    elif fault == "ddb_retried_by_sdk":
        op, match = FIRST[operation]
        injected = [faults.throttle("dynamodb", op, match=match, times=2, via="send", per=faults.item_key)]
    elif fault == "ddb_conditional":
        op, match = CONDITIONAL[operation]
        injected = [faults.conditional_failure(op, match=match, times=-1)]
    elif fault == "kms_throttled":
        injected = [faults.throttle("kms", op) for op in faults.KMS_KEY_OPERATIONS]
    elif fault == "kms_disabled":
        injected = [faults.kms_disabled(op) for op in faults.KMS_KEY_OPERATIONS]
    elif fault == "kms_key_disabled":
        injected = faults.kms_key_state_enforced(world.res.key_id)
        faults.own_client("kms").disable_key(KeyId=world.res.key_id)
    elif fault == "kms_invalid_ciphertext":
        injected = [faults.kms_invalid_ciphertext()]
    else:  # pragma: no cover - a typo in a table below
        raise AssertionError(f"unknown fault {fault}")
    for one in injected:
        one.install()

    def remove() -> None:
        sandbox.clear_faults()
        for one in injected:
            one.remove()
        if fault == "kms_key_disabled":
            faults.own_client("kms").enable_key(KeyId=world.res.key_id)

    return remove


# -- the invariant ----------------------------------------------------------------------------------

# A process killed between UltraCart's answer and the write (a crash, not a timeout: the deadline
# rules keep a timeout out of that window) takes the rotated tokens with it. No design can keep
# them; these cells report the loss in their own column, apart from "lost".
UNAVOIDABLE = {("refresh", "kill_after_ultracart")}


def judge_by_ultracart(world: World) -> tuple[dict[str, str], int]:
    """Lost, as the merchant lives it, judged by the grants UltraCart (the sandbox) still honours,
    not by our own table: a merchant who must reinstall while UltraCart holds a live grant, an
    active installation whose stored refresh token is dead while another is live, or a grant
    still live after an uninstall. Also counts orphaned grants (live, never stored, nobody lost)."""
    lost: dict[str, str] = {}
    orphans = 0
    for merchant in world.merchants:
        grants = world.sandbox.live_grants(merchant)
        inst = world.get(merchant)
        stored = world.tokens(merchant)
        stored_refresh = stored.refresh_token if stored is not None else None
        orphans += len([t for t in grants.refresh_tokens if t != stored_refresh])
        if inst is None:
            continue
        if inst.status in (UNINSTALLED, "uninstalling"):
            if grants.any:
                lost[merchant] = f"{inst.status}, but UltraCart still honours a grant"
        elif inst.status == REAUTHORIZATION_REQUIRED:
            if grants.refresh_tokens:
                lost[merchant] = "must reinstall while UltraCart holds a live grant"
        elif stored_refresh not in grants.refresh_tokens and grants.refresh_tokens:
            lost[merchant] = "stored refresh token dead while UltraCart holds a live grant"
    return lost, orphans


def end_state(world: World, merchant: str) -> str:
    """The state a merchant ended in, with what UltraCart says of its grant."""
    inst = world.get(merchant)
    grants = world.sandbox.live_grants(merchant)
    if inst is None:
        return "not installed" + (", an orphaned grant live" if grants.any else "")
    stored = world.tokens(merchant)
    live = stored is not None and stored.refresh_token in grants.refresh_tokens
    if inst.status == ACTIVE:
        return "active, its grant live" if live else "active, its grant dead"
    if inst.status == REAUTHORIZATION_REQUIRED:
        return "reauthorization_required, " + (
            "a grant still live" if grants.refresh_tokens else "grant dead"
        )
    if inst.status == UNINSTALLED:
        confirmed = "revoke confirmed" if inst.revoke_confirmed else "revoke NOT confirmed"
        return f"uninstalled, {confirmed}, " + ("a grant still live" if grants.any else "no grant live")
    return inst.status


def judge(world: World, cell: Cell) -> None:
    """Record what UltraCart says was lost (before any reinstall replaces the evidence)."""
    cell.end_state = summarize({m: end_state(world, m) for m in world.merchants})
    lost, orphans = judge_by_ultracart(world)
    cell.orphans = max(cell.orphans, orphans)
    for merchant, why in lost.items():
        if (cell.operation, cell.fault) in UNAVOIDABLE:
            cell.crash_lost.setdefault(merchant, why)
        else:
            cell.lost_by_ultracart.setdefault(merchant, why)


def reinstall_if_refused(world: World, steps: list[str]) -> dict[str, str]:
    """Merchants whose grant UltraCart refused: their event must be out; then they install again."""
    problems: dict[str, str] = {}
    for merchant in world.merchants:
        inst = world.get(merchant)
        if inst is None or inst.status != REAUTHORIZATION_REQUIRED:
            continue
        if world.event_count(REAUTH_EVENT, merchant) < 1:
            problems[merchant] = "reauthorization_required without its event"
            continue
        response = install(world, merchant)
        if response["statusCode"] != 200:
            problems[merchant] = f"reinstall answered {response['statusCode']}"
        elif "merchant reinstalled" not in steps:
            steps.append("merchant reinstalled")
    return problems


def active_problems(world: World) -> dict[str, str]:
    """Every merchant active with tokens the sandbox accepts, now and an hour later."""
    problems: dict[str, str] = {}

    def check(when: str) -> None:
        for merchant in world.merchants:
            if merchant in problems:
                continue
            inst = world.get(merchant)
            if inst is None:
                problems[merchant] = f"{when}: installation lost"
                continue
            if inst.status != ACTIVE:
                problems[merchant] = f"{when}: status {inst.status}"
                continue
            status, body = token_call(merchant)
            if status != 200:
                problems[merchant] = f"{when}: token API answered {status} {body}"
            elif not world.sandbox.token_is_valid(body["access_token"]):
                problems[merchant] = (
                    f"{when}: active, but UltraCart refuses the access token it serves "
                    f"(expires_at {body['expires_at']}, due_at {inst.due_at})"
                )
            elif world.refresh_dead(merchant):
                problems[merchant] = f"{when}: active, but UltraCart refuses its refresh token"

    check("now")
    # An hour later: the planner runs, the queue drains, and the token API must still serve a
    # token UltraCart accepts.
    world.advance(LATER)
    run_planner(world)
    drain_refreshes(world)
    check("an hour later")
    return problems


def removed_problems(world: World) -> dict[str, str]:
    problems: dict[str, str] = {}
    for merchant in world.merchants:
        inst = world.get(merchant)
        if inst is None:
            problems[merchant] = "tombstone lost"
        elif inst.status != UNINSTALLED or inst.tokens_ciphertext is not None:
            problems[merchant] = (
                f"status {inst.status}, ciphertext kept: {inst.tokens_ciphertext is not None}"
            )
        elif world.event_count(REMOVED_EVENT, merchant) < 1:
            problems[merchant] = "uninstalled without its event"
        elif token_call(merchant) != (404, {"error": "not_installed"}):
            problems[merchant] = "token API still answers for an uninstalled merchant"
    if world.revoke_queue.pending() or world.revoke_queue.dead():
        problems["queue"] = "uninstall messages left behind"
    return problems


# -- the report -------------------------------------------------------------------------------------


@dataclass
class Cell:
    operation: str
    fault: str
    expected: str
    outcome: str = "not run"
    recovery: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    completed: bool = False
    lost_by_ultracart: dict[str, str] = field(default_factory=dict)
    crash_lost: dict[str, str] = field(default_factory=dict)
    orphans: int = 0
    end_state: str = ""

    @property
    def lost(self) -> int:
        """Installations lost as UltraCart sees them (module docstring), plus any that ended in a
        state the rules forbid (a message left behind counts as one)."""
        merchants = {m for m in self.problems if m != "queue"} | set(self.lost_by_ultracart)
        return len(merchants) or (1 if self.problems else 0)

    def note(self, problems: dict[str, str]) -> None:
        """Add problems; the first one found for a merchant is the one that counts."""
        for key, problem in problems.items():
            self.problems.setdefault(key, problem)

    def record(self) -> None:
        path = os.environ.get("RELIABILITY_REPORT")
        if not path:
            return
        row = {
            "operation": self.operation,
            "fault": self.fault,
            "injected": DESCRIPTIONS[self.fault],
            "rank": list(DESCRIPTIONS).index(self.fault),
            "outcome": self.outcome,
            "expected": self.expected,
            "recovery": " → ".join(self.recovery) or "none needed",
            "completed": self.completed,
            "recovered": self.completed and not self.problems and not self.lost_by_ultracart,
            "lost": self.lost,
            "end_state": self.end_state,
            "lost_detail": self.lost_by_ultracart,
            "crash_lost": len(self.crash_lost),
            "orphaned_grants": self.orphans,
            "problems": self.problems,
            "merchants": MERCHANTS,
            "seconds": round(time.monotonic() - self.started, 2),
        }
        with open(path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def cells(operation: str, expected: dict[str, str]) -> pytest.MarkDecorator:
    """One test per fault of ``operation`` (``operation-fault``), given what it is expected to show."""
    return pytest.mark.parametrize(
        ("operation", "fault", "expected"),
        [pytest.param(operation, f, e, id=f"{operation}-{f}") for f, e in expected.items()],
    )


@pytest.fixture
def cell(operation: str, fault: str, expected: str) -> Iterator[Cell]:
    """The cell of the matrix the test fills (the parameters of :func:`cells`), recorded at the end."""
    one = Cell(operation, fault, expected)
    yield one
    one.record()


def conclude(cell: Cell) -> None:
    cell.completed = True
    assert cell.outcome == cell.expected, f"{cell.operation} x {cell.fault}: saw {cell.outcome!r}"
    assert not cell.problems, f"{cell.operation} x {cell.fault}, after recovery: {cell.problems}"
    assert not cell.lost_by_ultracart, f"{cell.operation} x {cell.fault}, lost: {cell.lost_by_ultracart}"


def summarize(labels: dict[str, str]) -> str:
    distinct = sorted(set(labels.values()))
    return distinct[0] if len(distinct) == 1 else " | ".join(f"{m}: {labels[m]}" for m in sorted(labels))


# -- callback ---------------------------------------------------------------------------------------

CALLBACK = {
    **dict.fromkeys(UC_TRANSIENT, "502 page, nothing stored"),
    "uc_read_timeout": "504 page, nothing stored",
    "uc_refused": "400 page, nothing stored",
    "uc_expires_garbage": "200 page, installed, expiry unknown",
    "uc_app_refused": "503 page, nothing stored",  # "cannot complete installations right now"
    "ddb_throttled": "503 page, nothing stored",
    "ddb_throttled_write": "503 page, nothing stored",
    "ddb_throttled_write_x2": "200 page, installed",  # the write is retried: the spent code is not lost
    "ddb_retried_by_sdk": "503 page, nothing stored",
    "ddb_conditional": "400 page, nothing stored",
    "kms_throttled": "503 page, nothing stored",
    "kms_disabled": "503 page, nothing stored",
    "kms_key_disabled": "503 page, nothing stored",
}


def callback_label(world: World, merchant: str, response: dict[str, Any]) -> str:
    inst = world.get(merchant)
    label = f"{response['statusCode']} page, " + ("nothing stored" if inst is None else "installed")
    if inst is not None and inst.expiry_assumed:
        label += ", expiry unknown"
    return label


@cells("callback", CALLBACK)
def test_callback(world: World, cell: Cell, fault: str, expected: str) -> None:
    remove = inject(world, "callback", fault)
    try:
        responses = {m: install(world, m) for m in world.merchants}
    finally:
        remove()
    cell.outcome = summarize({m: callback_label(world, m, responses[m]) for m in world.merchants})
    failed = [m for m in world.merchants if world.get(m) is None]
    if failed:
        cell.recovery.append("merchant started again")
        for merchant in failed:
            response = install(world, merchant)
            if response["statusCode"] != 200:
                cell.problems[merchant] = f"starting again answered {response['statusCode']}"
    judge(world, cell)
    cell.note(active_problems(world))
    conclude(cell)


# -- refresh ----------------------------------------------------------------------------------------

ROTATED_LOST = "stored refresh token dead (rotated answer lost)"
KEPT = "rotated tokens kept in a recovery record"
REFRESH = {
    **dict.fromkeys(UC_TRANSIENT, "back to queue, tokens untouched"),
    "uc_refused": "acked, reauthorization_required + event",
    "uc_expires_garbage": "acked, refreshed, expiry unknown",
    # Acknowledged: still due, the planner's next run queues it again.
    "uc_app_refused": "acked, tokens untouched",
    "ddb_throttled": "back to queue, tokens untouched",
    "ddb_throttled_write": f"acked, {KEPT}",
    "ddb_throttled_write_x2": "acked, refreshed",
    "ddb_retried_by_sdk": "back to queue, tokens untouched",
    "ddb_conditional": f"acked, {KEPT}",
    "kms_throttled": "back to queue, tokens untouched",
    "kms_disabled": "back to queue, tokens untouched",
    "kms_key_disabled": "back to queue, tokens untouched",
    "kms_invalid_ciphertext": "back to queue, tokens untouched",
    # UltraCart refuses the grant while EventBridge throttles: is the merchant still told?
    "uc_refused_events_throttled": "acked, reauthorization_required, NO event",
}


def installation_facts(world: World, merchant: str) -> list[str]:
    """What is stored for a merchant, relative to what was seeded."""
    inst = world.get(merchant)
    if inst is None:
        return ["installation lost"]
    facts: list[str] = []
    if inst.status == REAUTHORIZATION_REQUIRED:
        event = world.event_count(REAUTH_EVENT, merchant) > 0
        facts.append("reauthorization_required + event" if event else "reauthorization_required, NO event")
    elif inst.status != ACTIVE:
        facts.append(inst.status)
    else:
        tokens = world.tokens(merchant)
        if tokens is None:
            facts.append("active without tokens")
        elif tokens.access_token != world.seeded[merchant].access_token:
            facts.append("refreshed" + (", expiry unknown" if inst.expiry_assumed else ""))
        elif inst.recovery is not None:
            facts.append(KEPT)
        elif world.refresh_dead(merchant):
            facts.append(ROTATED_LOST)
        else:
            facts.append("tokens untouched")
    if inst.lease_owner is not None:  # nobody released it (held or expired: time decides)
        facts.insert(0, "lease left behind")
    return facts


def seed(world: World, expires_in: int) -> None:
    for merchant in world.merchants:
        access, refresh = seed_installation(world.live, world.sandbox, merchant, expires_in=expires_in)
        world.seeded[merchant] = TokenSet(access, refresh)


def recover_refresh(world: World, cell: Cell) -> None:
    """The queue redelivers what failed, the next planner run queues what is still due."""
    if world.refresh_queue.pending():
        cell.recovery.append("redelivered")
        drain_refreshes(world)
    world.let_backoff_pass()
    if run_planner(world):
        cell.recovery.append("planner re-queued")
        drain_refreshes(world)
    refused = [m for m in world.merchants if (i := world.get(m)) and i.status == REAUTHORIZATION_REQUIRED]
    if refused:
        told = all(world.event_count(REAUTH_EVENT, m) for m in refused)
        cell.recovery.append("reauthorization_required" + (" + event" if told else ", no event"))
    judge(world, cell)
    cell.note(reinstall_if_refused(world, cell.recovery))
    cell.note(active_problems(world))


@cells("refresh", REFRESH)
def test_refresh(world: World, cell: Cell, fault: str, expected: str) -> None:
    seed(world, expires_in=60)
    for merchant in world.merchants:
        world.refresh_queue.send({"merchant_id": merchant})
    remove = inject(world, "refresh", fault)
    try:
        delivery = world.refresh_queue.deliver()
    finally:
        remove()
    assert delivery.raised is None, delivery.raised
    labels = {
        m: ", ".join(["back to queue" if m in delivery.failed else "acked", *installation_facts(world, m)])
        for m in world.merchants
    }
    cell.outcome = summarize(labels)
    recover_refresh(world, cell)
    conclude(cell)


KILLS = {
    "kill_after_lease": "worker died, lease left behind, tokens untouched",
    "kill_after_ultracart": f"worker died, lease left behind, {ROTATED_LOST}",
    "kill_after_write": "worker died, refreshed",
}


@pytest.mark.xdist_group("processes")
@cells("refresh", KILLS)
def test_refresh_worker_killed(world: World, cell: Cell, fault: str, expected: str) -> None:
    seed(world, expires_in=60)
    for merchant in world.merchants:
        # The dying worker's messages stay in the queue: nobody deleted them.
        world.refresh_queue.send({"merchant_id": merchant})
    mode = fault.replace("kill_", "die_")
    if fault == "kill_after_ultracart" and len(world.merchants) > 1:
        # UltraCart is called one call at a time for the application (the budget's line): a
        # worker that dies after UltraCart answered dies holding the line, and the other
        # merchants' workers find it busy (their messages come back) until it expires. So each
        # merchant's worker dies in turn, the next started once the dead one's line has expired.
        hold = ultracart_call_max(Settings.from_env(world.env))
        exits = []
        for index, merchant in enumerate(world.merchants):
            if index:
                time.sleep(hold + 0.2)
            exits += results_of(start_processes(world.env, merchant, 1, time.time(), mode=mode))
    else:
        processes = [
            process
            for merchant in world.merchants
            for process in start_processes(world.env, merchant, 1, time.time(), mode=mode)
        ]
        exits = results_of(processes)
    assert set(exits) == {"exit:9"}, exits
    labels = {m: ", ".join(["worker died", *installation_facts(world, m)]) for m in world.merchants}
    cell.outcome = summarize(labels)
    cell.recovery.append("lease expired")
    recover_refresh(world, cell)
    conclude(cell)


# -- token access -----------------------------------------------------------------------------------

TOKEN = {
    **dict.fromkeys(UC_TRANSIENT, "200 stored token; once expired: 503 upstream_unavailable"),
    "uc_refused": "409 reauthorization_required, reauthorization_required + event",
    "uc_expires_garbage": "200 new token, expiry unknown",
    "uc_app_refused": "200 stored token; once expired: 503 upstream_unavailable",
    "ddb_throttled": "503 temporarily_unavailable",
    "ddb_throttled_write": "200 new token",  # served, and kept in a recovery record
    "ddb_throttled_write_x2": "200 new token",
    "ddb_retried_by_sdk": "503 temporarily_unavailable",
    "ddb_conditional": "200 stored token",
    "kms_throttled": "503 temporarily_unavailable",
    "kms_disabled": "503 temporarily_unavailable",
    "kms_key_disabled": "503 temporarily_unavailable",
    "kms_invalid_ciphertext": "503 temporarily_unavailable",
}


def token_label(world: World, merchant: str, status: int, body: dict[str, Any]) -> str:
    if status != 200:
        label = f"{status} {body.get('error')}"
        facts = [f for f in installation_facts(world, merchant) if f.startswith("reauthorization")]
        return ", ".join([label, *facts])
    if body["access_token"] == world.seeded[merchant].access_token:
        label = "200 stored token"
        if world.refresh_dead(merchant):
            label += f", {ROTATED_LOST}"
        return label
    return "200 new token" + (", expiry unknown" if body["expires_at"] is None else "")


@cells("token", TOKEN)
def test_token_access(world: World, cell: Cell, fault: str, expected: str) -> None:
    seed(world, expires_in=60)  # inside the inline refresh margin: every call refreshes
    remove = inject(world, "token", fault)
    try:
        answers = {m: token_call(m) for m in world.merchants}
        expired: dict[str, tuple[int, dict[str, Any]]] = {}
        if fault in (*UC_TRANSIENT, "uc_app_refused"):
            world.advance(120, ultracart=False)  # the stored token has expired; UltraCart still fails
            expired = {m: token_call(m) for m in world.merchants}
    finally:
        remove()
    labels = {m: token_label(world, m, *answers[m]) for m in world.merchants}
    for merchant, (status, body) in expired.items():
        labels[merchant] += f"; once expired: {status} {body.get('error', 'token')}"
    cell.outcome = summarize(labels)
    world.let_backoff_pass()
    cell.recovery.append("next call")
    for merchant in world.merchants:
        status, body = token_call(merchant)
        if status == 409 and "409 reauthorization_required" not in cell.recovery:
            cell.recovery.append("409 reauthorization_required")
    judge(world, cell)
    cell.note(reinstall_if_refused(world, cell.recovery))
    cell.note(active_problems(world))
    conclude(cell)


# -- revoke -----------------------------------------------------------------------------------------

NOT_REVOKED = "tokens not revoked at UltraCart"
REVOKED = "tokens revoked at UltraCart"
DEFERRED = f"deferred {MAX_RECEIVES} times (uninstalling, tokens kept for the revoke), {NOT_REVOKED}"
REVOKE = {
    **dict.fromkeys(UC_TRANSIENT, DEFERRED),
    "uc_refused": f"shredded on delivery 1 (webhook), {REVOKED}",
    "uc_app_refused": DEFERRED,  # never confirmed, never given up while the app is refused
    "ddb_throttled": f"failed {MAX_RECEIVES} times, in the DLQ, still active, {NOT_REVOKED}",
    "ddb_throttled_write": f"failed {MAX_RECEIVES} times, in the DLQ, still active, {REVOKED}",
    "ddb_throttled_write_x2": f"shredded on delivery 1 (webhook), {REVOKED}",
    "ddb_retried_by_sdk": f"shredded on delivery 2 (webhook), {REVOKED}",
    "ddb_conditional": f"failed {MAX_RECEIVES} times, in the DLQ, still active, {REVOKED}",
    "kms_throttled": f"failed {MAX_RECEIVES} times, in the DLQ, still active, {NOT_REVOKED}",
    "kms_disabled": f"failed {MAX_RECEIVES} times, in the DLQ, still active, {NOT_REVOKED}",
    "kms_key_disabled": f"failed {MAX_RECEIVES} times, in the DLQ, still active, {NOT_REVOKED}",
    "kms_invalid_ciphertext": f"failed {MAX_RECEIVES} times, in the DLQ, still active, {NOT_REVOKED}",
}


def revoke_label(world: World, merchant: str, failures: int, deferrals: int, dead: bool) -> str:
    inst = world.get(merchant)
    assert inst is not None
    seeded = world.seeded[merchant]
    revoked = not world.sandbox.refresh_token_is_valid(seeded.refresh_token or "") and not (
        world.sandbox.token_is_valid(seeded.access_token)
    )
    tail = REVOKED if revoked else NOT_REVOKED
    if inst.status == UNINSTALLED:
        return f"shredded on delivery {failures + deferrals + 1} ({inst.uninstall_reason}), {tail}"
    if deferrals and not failures:
        return f"deferred {deferrals} times ({inst.status}, tokens kept for the revoke), {tail}"
    where = "in the DLQ" if dead else "still queued"
    return f"failed {failures} times, {where}, still {inst.status}, {tail}"


@cells("revoke", REVOKE)
def test_revoke(world: World, cell: Cell, fault: str, expected: str) -> None:
    seed(world, expires_in=3600)
    for merchant in world.merchants:
        world.revoke_queue.send(uninstall_message(merchant))
    failures = dict.fromkeys(world.merchants, 0)
    deferrals = dict.fromkeys(world.merchants, 0)
    remove = inject(world, "revoke", fault)
    try:
        for _ in range(MAX_RECEIVES):
            world.let_backoff_pass()
            before = {m: world.get(m) for m in world.merchants}
            delivery = world.revoke_queue.deliver()
            assert delivery.raised is None, delivery.raised
            if not delivery.received:
                break
            for merchant in delivery.failed:
                failures[merchant] += 1
            for merchant in set(delivery.received) - set(delivery.failed):
                inst = world.get(merchant)
                if inst is not None and inst.status != UNINSTALLED and before[merchant] is not None:
                    deferrals[merchant] += 1  # acknowledged and re-sent for later
            if not delivery.failed and all(
                (i := world.get(m)) is not None and i.status == UNINSTALLED for m in world.merchants
            ):
                break
            world.advance(900, ultracart=False)  # the backoff the re-sent message asked for
        world.revoke_queue.deliver()  # past maxReceiveCount, SQS moves a failing message to the DLQ
    finally:
        remove()
    dead = world.revoke_queue.dead() > 0
    cell.outcome = summarize(
        {m: revoke_label(world, m, failures[m], deferrals[m], dead) for m in world.merchants}
    )

    if dead:
        world.let_backoff_pass()
        cell.recovery.append("DLQ redriven")
        world.revoke_queue.redrive()
    if world.revoke_queue.pending():
        if not dead:
            cell.recovery.append("re-sent uninstall delivered")
        for _ in range(MAX_RECEIVES):
            world.let_backoff_pass()
            if not world.revoke_queue.deliver().received:
                break
    cell.recovery.append("duplicate uninstall acknowledged")
    for merchant in world.merchants:
        world.revoke_queue.send(uninstall_message(merchant))
    delivery = world.revoke_queue.deliver()
    if delivery.failed:
        cell.problems["queue"] = f"a repeated uninstall failed for {delivery.failed}"
    judge(world, cell)
    cell.note(removed_problems(world))
    conclude(cell)


# -- device poll ------------------------------------------------------------------------------------

DEVICE = {
    "uc_app_refused": "acked (the same poll queued again), pending, no grant issued",
}


def start_approved_device(world: World, merchant: str) -> str:
    """A device authorization started through DeviceFlowFunction, approved by the merchant on
    UltraCart's page (not yet polled). Returns its id."""
    response = invoke("DeviceFlowFunction", load_event("device-start.json"))
    assert response["statusCode"] == 201, response
    started = json.loads(response["body"])
    world.sandbox.device(started["user_code"], "approve", merchant_id=merchant)
    return str(started["authorization_id"])


@cells("device", DEVICE)
def test_device_poll(
    world: World, cell: Cell, fault: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ucoauth.usecases import device

    monkeypatch.setattr(device, "MAX_DELAY", 0)  # a poll queued for later is visible at once
    queue = Queue(
        world.res,
        world.res.queue_url("DeviceQueue"),
        world.res.queue_url("DeviceDeadLetterQueue"),
        "DeviceWorkerFunction",
        lambda body: str(body["authorization_id"]),
    )
    authorizations = {m: start_approved_device(world, m) for m in world.merchants}
    merchant_of = {aid: m for m, aid in authorizations.items()}
    remove = inject(world, "device", fault)
    try:
        delivery = queue.deliver()
    finally:
        remove()
    assert delivery.raised is None, delivery.raised
    labels = {}
    for merchant, aid in authorizations.items():
        head = "back to queue" if aid in delivery.failed else "acked"
        if aid not in delivery.failed and queue.pending():
            head += " (the same poll queued again)"
        status = device.device_status(world.live, aid)["status"]
        grant = "a grant issued" if world.sandbox.live_grants(merchant).any else "no grant issued"
        labels[merchant] = f"{head}, {status}, {grant}"
    cell.outcome = summarize(labels)
    cell.recovery.append("polled again")
    for _ in range(MAX_RECEIVES):
        if not queue.deliver().received:
            break
    for aid, merchant in merchant_of.items():
        ended = device.device_status(world.live, aid)
        if ended != {"status": "installed", "merchant_id": merchant}:
            cell.problems[merchant] = f"device authorization ended {ended}"
    if queue.dead():
        cell.problems["queue"] = "device polls dead-lettered"
    judge(world, cell)
    cell.note(active_problems(world))
    conclude(cell)


# -- the time axis ----------------------------------------------------------------------------------
#
# The cells above vary which call fails; these vary how long things take. A lease that ends while
# its holder can still write, an invocation whose deadline falls in the middle of the work, slow
# DynamoDB and KMS, a duplicate delivered after a dead holder's lease expired, and a function
# killed between any two of its calls. Time is the package's clock (moved, not waited for), so
# every cell is quick and deterministic.

SECOND_CALLER_AFTER = 40  # past the old fixed 30 s lease: the holder is slow, not dead
SLOW_CALL = 4  # seconds each DynamoDB or KMS call takes in the slow cells

TIME_DESCRIPTIONS = {
    "second_caller_after_lease": f"a second caller comes {SECOND_CALLER_AFTER} s after the holder took "
    "the lease, before it called UltraCart (refresh, revoke: the token API; token: a refresh worker)",
    "second_caller_after_ultracart": f"a second caller comes {SECOND_CALLER_AFTER} s after UltraCart "
    "answered the holder, before its write (a duplicate refresh delivery; revoke: after the first revoke)",
    "deadline_before_call": "the invocation starts with 10 s left: less than an UltraCart call and its "
    "write reserve need",
    "slow_aws": f"every DynamoDB and KMS call takes {SLOW_CALL} s: the work runs into the deadline",
    "duplicate_after_expiry": "the holder dies after taking the lease; a duplicate delivery comes after "
    "that lease's horizon",
}
for _name, _text in TIME_DESCRIPTIONS.items():
    DESCRIPTIONS[_name] = _text


class Once:
    """Run ``action`` the first time it is called (the competitor arrives once)."""

    def __init__(self, action: Callable[[], Any]) -> None:
        self.action = action
        self.result: Any = None
        self.fired = False

    def __call__(self) -> None:
        if not self.fired:
            self.fired = True
            self.result = self.action()


@contextmanager
def after_lease(world: World, hook: Callable[[], None]) -> Iterator[None]:
    """Run ``hook`` right after the package takes a lease (its first one only)."""
    store = world.live.installations
    original = store.lease

    def lease(*args: Any, **kwargs: Any) -> Any:
        taken = original(*args, **kwargs)
        hook()
        return taken

    store.lease = lease  # type: ignore[method-assign]
    try:
        yield
    finally:
        store.lease = original  # type: ignore[method-assign]


@contextmanager
def after_ultracart(world: World, method: str, hook: Callable[[], None]) -> Iterator[None]:
    """Run ``hook`` when UltraCart has answered ``method`` (refresh, revoke), before the caller sees it."""
    real = world.live.ultracart

    class Slow:
        def __getattr__(self, name: str) -> Any:
            attribute = getattr(real, name)
            if name != method:
                return attribute

            def call(*args: Any, **kwargs: Any) -> Any:
                answer = attribute(*args, **kwargs)
                hook()
                return answer

            return call

    slow = Slow()
    world.live.ultracart_factory = lambda: slow
    try:
        yield
    finally:
        world.live.ultracart_factory = None


@contextmanager
def slow_aws(world: World, seconds: float) -> Iterator[None]:
    """Every DynamoDB and KMS call of the package takes ``seconds`` (the clock moves)."""

    def took(**_: Any) -> None:
        world.advance(seconds)

    clients = [uc_aws.client(service) for service in ("dynamodb", "kms")]
    for client in clients:
        client.meta.events.register("before-call", took)
    try:
        yield
    finally:
        for client in clients:
            client.meta.events.unregister("before-call", took)


def second_token_call(world: World, merchant: str) -> Callable[[], Any]:
    def call() -> Any:
        world.advance(SECOND_CALLER_AFTER)
        return token_call(merchant, nested=True)

    return call


def second_refresh(world: World, merchant: str) -> Callable[[], Any]:
    def call() -> Any:
        world.advance(SECOND_CALLER_AFTER)
        try:
            with acting_as("RefreshWorkerFunction"):  # another invocation: the refresh worker's
                return refresh_due(world.live, merchant, deadline=a_deadline(world.live))
        except Exception as exc:
            return type(exc).__name__

    return call


def describe_second(result: Any) -> str:
    if isinstance(result, tuple):
        status, body = result
        return f"{status} " + ("token" if status == 200 else str(body.get("error")))
    if result == "GrantUnsettledError":
        return "refused refresh token, but the holder may still write: waits, no reauthorization"
    return str(result)


TIME_REFRESH = {
    "second_caller_after_lease": "acked, refreshed; second caller: 200 token",
    "second_caller_after_ultracart": "acked, refreshed; second caller: busy",
    "deadline_before_call": "acked (re-queued for later), tokens untouched, UltraCart not called",
    "slow_aws": "acked, refreshed",
}


@cells("refresh", TIME_REFRESH)
def test_refresh_in_time(world: World, cell: Cell, fault: str, expected: str) -> None:
    seed(world, expires_in=59)  # due, and inside the token API's 60 s inline margin
    merchant = world.merchants[0]
    for one in world.merchants:
        world.refresh_queue.send({"merchant_id": one})
    second = Once(
        second_token_call(world, merchant)
        if fault.endswith("after_lease")
        else second_refresh(world, merchant)
    )
    sent_before = len(world.sandbox.requests("token"))
    timeout = 10.0 if fault == "deadline_before_call" else None
    with ExitStack() as stack:
        if fault == "second_caller_after_lease":
            stack.enter_context(after_lease(world, second))
        elif fault == "second_caller_after_ultracart":
            stack.enter_context(after_ultracart(world, "refresh", second))
        elif fault == "slow_aws":
            stack.enter_context(slow_aws(world, SLOW_CALL))
        delivery = world.refresh_queue.deliver(timeout_seconds=timeout)
    assert delivery.raised is None, delivery.raised
    labels = {}
    for m in world.merchants:
        facts = installation_facts(world, m)
        head = "back to queue" if m in delivery.failed else "acked"
        if fault == "deadline_before_call":
            called = len(world.sandbox.requests("token")) > sent_before
            head += " (re-queued for later)"
            facts.append("UltraCart called" if called else "UltraCart not called")
        labels[m] = ", ".join([head, *facts])
    if second.fired:
        labels[merchant] += f"; second caller: {describe_second(second.result)}"
    cell.outcome = summarize(labels) if len(world.merchants) == 1 else labels[merchant]
    recover_refresh(world, cell)
    conclude(cell)


TIME_TOKEN = {
    # The token API's invocation (29 s) ends while it stalls: past its deadline it calls nobody
    # and serves what is valid; its lease ended too, so the worker refreshes.
    "second_caller_after_lease": "200 stored token (its deadline passed: no call); second caller: refreshed",
    # UltraCart rotated the grant for the token API, which stalls past its lease: the worker's
    # refresh token is refused, and it does not declare the grant dead; the holder's write lands.
    "second_caller_after_ultracart": "200 new token; second caller: refused refresh token, but the holder "
    "may still write: waits, no reauthorization",
    "deadline_before_call": "200 stored token (no time to refresh; still valid)",
    "slow_aws": "200 stored token (no time to refresh; still valid)",
}


@cells("token", TIME_TOKEN)
def test_token_access_in_time(world: World, cell: Cell, fault: str, expected: str) -> None:
    seed(world, expires_in=59)  # inside the 60 s inline margin, still valid for a minute
    merchant = world.merchants[0]
    second = Once(second_refresh(world, merchant))
    with ExitStack() as stack:
        if fault == "second_caller_after_lease":
            stack.enter_context(after_lease(world, second))
        elif fault == "second_caller_after_ultracart":
            stack.enter_context(after_ultracart(world, "refresh", second))
        elif fault == "slow_aws":
            stack.enter_context(slow_aws(world, SLOW_CALL))
        event = load_event("tokens-get.json")
        event["rawPath"] = event["requestContext"]["http"]["path"] = f"/tokens/{merchant}"
        event["pathParameters"] = {"merchant_id": merchant}
        timeout = 10.0 if fault == "deadline_before_call" else None
        response = call_handler("TokenApiFunction", event, timeout_seconds=timeout)
    assert_no_traceback(response)
    status, body = int(response["statusCode"]), json.loads(response["body"])
    label = token_label(world, merchant, status, body)
    if fault in ("deadline_before_call", "slow_aws") and label == "200 stored token":
        label += " (no time to refresh; still valid)"
    if fault == "second_caller_after_lease" and label == "200 stored token":
        label += " (its deadline passed: no call)"
    if second.fired:
        label += f"; second caller: {describe_second(second.result)}"
    cell.outcome = label
    world.let_backoff_pass()
    cell.recovery.append("next call")
    token_call(merchant)
    judge(world, cell)
    cell.note(reinstall_if_refused(world, cell.recovery))
    cell.note(active_problems(world))
    conclude(cell)


# -- KMS failing after UltraCart answered a rotation ------------------------------------------------

# UltraCart has rotated the grant (the old refresh token is spent) when KMS starts failing: every
# KMS call of the package is throttled from that answer on. Tokens encrypted only after the answer
# (KMS Encrypt for the write, again for the recovery record) would be lost with the grant; the data
# key fetched before the call lets the write go ahead without KMS.
AFTER_ANSWER_DESCRIPTIONS = {
    "kms_fault_after_rotation": "KMS ThrottlingException on every call (Encrypt, GenerateDataKey, Decrypt) "
    "from the moment UltraCart answered the refresh (the grant is rotated)",
}
for _name, _text in AFTER_ANSWER_DESCRIPTIONS.items():
    DESCRIPTIONS[_name] = _text


@contextmanager
def kms_fails_after_rotation(world: World) -> Iterator[list[faults.AwsFault]]:
    """Every KMS call of the package throttled once UltraCart answered a refresh (until the end)."""
    injected = [faults.throttle("kms", op) for op in faults.KMS_KEY_OPERATIONS]
    started = Once(lambda: [one.install() for one in injected])
    try:
        with after_ultracart(world, "refresh", started):
            yield injected
    finally:
        for one in injected:
            one.remove()


@cells("refresh", {"kms_fault_after_rotation": "acked, refreshed"})
def test_refresh_with_kms_failing_after_rotation(world: World, cell: Cell, fault: str, expected: str) -> None:
    # One merchant per cell: KMS fails from the first answer on, so a second merchant's refresh
    # would meet KMS failing before its call (the kms_throttled cells), not after it.
    world.merchants = world.merchants[:1]
    seed(world, expires_in=60)
    for merchant in world.merchants:
        world.refresh_queue.send({"merchant_id": merchant})
    with kms_fails_after_rotation(world):
        delivery = world.refresh_queue.deliver()
    assert delivery.raised is None, delivery.raised
    labels = {
        m: ", ".join(["back to queue" if m in delivery.failed else "acked", *installation_facts(world, m)])
        for m in world.merchants
    }
    cell.outcome = summarize(labels)
    recover_refresh(world, cell)
    conclude(cell)


@cells("token", {"kms_fault_after_rotation": "200 new token"})
def test_token_access_with_kms_failing_after_rotation(
    world: World, cell: Cell, fault: str, expected: str
) -> None:
    world.merchants = world.merchants[:1]  # one merchant per cell, as above
    seed(world, expires_in=60)  # inside the inline refresh margin: the call refreshes
    with kms_fails_after_rotation(world):
        answers = {m: token_call(m) for m in world.merchants}
    cell.outcome = summarize({m: token_label(world, m, *answers[m]) for m in world.merchants})
    world.let_backoff_pass()
    cell.recovery.append("next call")
    for merchant in world.merchants:
        token_call(merchant)
    judge(world, cell)
    cell.note(reinstall_if_refused(world, cell.recovery))
    cell.note(active_problems(world))
    conclude(cell)


TIME_REVOKE = {
    # Still installed until the shred: the token API serves the valid stored token meanwhile.
    "second_caller_after_lease": f"shredded on delivery 1 (webhook), {REVOKED}; second caller: 200 token",
    "second_caller_after_ultracart": f"shredded on delivery 1 (webhook), {REVOKED}; second caller: busy",
    "deadline_before_call": f"deferred 1 times (uninstalling, tokens kept for the revoke), {NOT_REVOKED}",
    "slow_aws": f"shredded on delivery 1 (webhook), {REVOKED}",
}


@cells("revoke", TIME_REVOKE)
def test_revoke_in_time(world: World, cell: Cell, fault: str, expected: str) -> None:
    seed(world, expires_in=120)
    merchant = world.merchants[0]
    for one in world.merchants:
        world.revoke_queue.send(uninstall_message(one))
    second = Once(
        second_token_call(world, merchant)
        if fault.endswith("after_lease")
        else second_refresh(world, merchant)
    )
    with ExitStack() as stack:
        if fault == "second_caller_after_lease":
            stack.enter_context(after_lease(world, second))
        elif fault == "second_caller_after_ultracart":
            stack.enter_context(after_ultracart(world, "revoke", second))
        elif fault == "slow_aws":
            stack.enter_context(slow_aws(world, SLOW_CALL))
        timeout = 10.0 if fault == "deadline_before_call" else None
        delivery = world.revoke_queue.deliver(timeout_seconds=timeout)
    assert delivery.raised is None, delivery.raised
    failures = {m: int(m in delivery.failed) for m in world.merchants}
    deferrals = {
        m: int(m not in delivery.failed and (i := world.get(m)) is not None and i.status != UNINSTALLED)
        for m in world.merchants
    }
    dead = world.revoke_queue.dead() > 0
    label = revoke_label(world, merchant, failures[merchant], deferrals[merchant], dead)
    if second.fired:
        label += f"; second caller: {describe_second(second.result)}"
    cell.outcome = label
    for _ in range(MAX_RECEIVES):
        world.let_backoff_pass()
        if not world.revoke_queue.deliver().received:
            break
        if not cell.recovery:
            cell.recovery.append("re-sent uninstall delivered")
    judge(world, cell)
    cell.note(removed_problems(world))
    conclude(cell)


@pytest.mark.xdist_group("processes")
@cells("refresh", {"duplicate_after_expiry": "busy until the dead holder's horizon, then refreshed"})
def test_a_duplicate_after_a_dead_holders_lease(world: World, cell: Cell, fault: str, expected: str) -> None:
    seed(world, expires_in=60)
    merchant = world.merchants[0]
    processes = start_processes(world.env, merchant, 1, time.time(), mode="die_after_lease")
    assert results_of(processes) == ["exit:9"]
    with acting_as("RefreshWorkerFunction"):
        early = refresh_due(world.live, merchant, deadline=a_deadline(world.live))
    world.let_backoff_pass()
    with acting_as("RefreshWorkerFunction"):
        later = refresh_due(world.live, merchant, deadline=a_deadline(world.live))
    cell.outcome = (
        "busy until the dead holder's horizon, then " + later if early == "busy" else f"{early}, then {later}"
    )
    cell.recovery.append("lease expired")
    recover_refresh(world, cell)
    conclude(cell)


# -- killed between any two calls: the webhook and the callback -------------------------------------


class Killed(BaseException):
    """The function stopped here (its timeout or a crash): not even ``finally`` blocks run after it."""


@contextmanager
def killed_at(service: str, event: str) -> Iterator[list[str]]:
    """Kill the invocation at a botocore event of the package's ``service`` client (first time only)."""
    fired: list[str] = []

    def die(**_: Any) -> None:
        if not fired:
            fired.append(event)
            raise Killed

    client = uc_aws.client(service)
    client.meta.events.register(event, die)
    try:
        yield fired
    finally:
        client.meta.events.unregister(event, die)


WEBHOOK_KILL_POINTS = {
    "kill_before_seen_check": ("dynamodb", "before-call.dynamodb.GetItem"),
    "kill_after_seen_check": ("dynamodb", "after-call.dynamodb.GetItem"),
    "kill_after_queueing": ("sqs", "after-call.sqs.SendMessage"),
    "kill_after_recording": ("dynamodb", "after-call.dynamodb.PutItem"),
}
CALLBACK_KILL_POINTS = {
    "kill_after_state_consumed": ("dynamodb", "after-call.dynamodb.DeleteItem"),
    "kill_after_budget": ("dynamodb", "after-call.dynamodb.UpdateItem"),
    "kill_after_data_key": ("kms", "after-call.kms.GenerateDataKey"),
    "kill_after_event": ("events", "after-call.eventbridge.PutEvents"),
}
for _name, (_service, _event) in {**WEBHOOK_KILL_POINTS, **CALLBACK_KILL_POINTS}.items():
    DESCRIPTIONS[_name] = f"the function is killed at `{_event}` (nothing after it runs)"
DESCRIPTIONS["kill_after_exchange"] = "the function is killed when UltraCart answered the code exchange"


WEBHOOK_KILLS = {
    "kill_before_seen_check": "killed; the sender's retry: 202 queued; 1 message queued",
    "kill_after_seen_check": "killed; the sender's retry: 202 queued; 1 message queued",
    "kill_after_queueing": "killed; the sender's retry: 202 queued; 2 messages queued",
    "kill_after_recording": "killed; the sender's retry: 202 duplicate; 1 message queued",
}


@cells("webhook", WEBHOOK_KILLS)
def test_webhook_killed(world: World, cell: Cell, fault: str, expected: str) -> None:
    world.merchants = world.merchants[:1]  # one sender, one webhook: one merchant per cell
    seed(world, expires_in=3600)
    merchant = world.merchants[0]
    event = signed_webhook_event(world.res.webhook_secret_value, merchant, sent_at=time.time() + 1)
    with killed_at(*WEBHOOK_KILL_POINTS[fault]) as fired, pytest.raises(Killed):
        call_handler("UninstallWebhookFunction", event)
    assert fired
    retry = call_handler("UninstallWebhookFunction", event)  # no answer reached the sender: it retries
    queued = world.revoke_queue.pending()
    status = json.loads(retry["body"]).get("status", retry["body"])
    cell.outcome = (
        f"killed; the sender's retry: {retry['statusCode']} {status}; "
        f"{queued} message{'s' if queued != 1 else ''} queued"
    )
    cell.recovery.append("revoke worker")
    for _ in range(MAX_RECEIVES):
        world.let_backoff_pass()
        if not world.revoke_queue.deliver().received:
            break
    judge(world, cell)
    cell.note({m: p for m, p in removed_problems(world).items() if m in (merchant, "queue")})
    conclude(cell)


CALLBACK_KILLS = {
    "kill_after_state_consumed": "killed; merchant started again: 200 page, installed",
    "kill_after_budget": "killed; merchant started again: 200 page, installed",
    "kill_after_exchange": "killed; merchant started again: 200 page, installed",
    "kill_after_data_key": "killed; merchant started again: 200 page, installed",
    "kill_after_event": "killed; merchant started again: 200 page, installed",
}


@cells("callback", CALLBACK_KILLS)
def test_callback_killed(world: World, cell: Cell, fault: str, expected: str) -> None:
    world.merchants = world.merchants[:1]  # one browser, one install: one merchant per cell
    merchant = world.merchants[0]
    start = invoke("OAuthBrowserFunction", load_event("install.json"))
    state = parse_qs(urlsplit(start["headers"]["Location"]).query)["state"][0]
    nonce = start["cookies"][0].split(";")[0].split("=", 1)[1]
    code = world.sandbox.issue_code(merchant, REDIRECT)
    event = load_event("callback-success.json", code=code, state=state, nonce=nonce)
    with ExitStack() as stack:
        if fault == "kill_after_exchange":

            def die() -> None:
                raise Killed

            stack.enter_context(after_ultracart(world, "exchange_code", die))
        else:
            stack.enter_context(killed_at(*CALLBACK_KILL_POINTS[fault]))
        with pytest.raises(Killed):
            call_handler("OAuthBrowserFunction", event)
    response = install(world, merchant)  # the merchant saw an error page and starts again
    installed = world.get(merchant) is not None
    cell.outcome = f"killed; merchant started again: {response['statusCode']} page, " + (
        "installed" if installed else "nothing stored"
    )
    cell.recovery.append("merchant started again")
    judge(world, cell)
    cell.note(active_problems(world))
    conclude(cell)


# -- holds, recovery records by generation, compensating revokes ------------------------------------

HOLD_DESCRIPTIONS = {
    "hold_recovery_message": "worker A rotates, then its token write, recovery record and lease release "
    "are throttled (the tokens leave as a recovery message); after A's horizon worker B's refresh is "
    f"refused and B holds the lease; the recovery message is delivered {MAX_RECEIVES} times during the hold",
    "hold_uninstall": "as hold_recovery_message, and an acknowledged uninstall is delivered "
    f"{MAX_RECEIVES} times during the hold",
    "two_generations_recovery": "a generation-1 refresh is in flight when the merchant reinstalls and its "
    "revoke fails (a generation-1 record stays); the generation-2 refresh's token write is throttled",
    "kill_after_install_write": "a reinstall's callback is killed right after the install write "
    "(before the replaced grant is queued for revocation)",
    "budget_error_in_compensating_revoke": "a refresh in flight when the merchant reinstalls; the budget "
    "table throttles the revoke of the rotated generation-1 tokens",
}
DESCRIPTIONS.update(HOLD_DESCRIPTIONS)


def kept_generations(world: World, merchant: str) -> list[int]:
    """The generations of the recovery records on the item, read raw (whatever the layout)."""
    item = (
        faults.own_client("dynamodb")
        .get_item(
            TableName=world.res.table_name,
            Key={"pk": {"S": f"MERCHANT#{merchant}"}, "sk": {"S": "INSTALLATION"}},
            ConsistentRead=True,
        )
        .get("Item", {})
    )
    return sorted(
        int(value["M"]["generation"]["N"])
        for name, value in item.items()
        if name.startswith("recovery") and "M" in value
    )


def orphan_problems(world: World) -> dict[str, str]:
    """A grant UltraCart still honours that the installation does not hold: nobody can use or
    revoke it (judged by the sandbox's live grants)."""
    problems: dict[str, str] = {}
    for merchant in world.merchants:
        stored = world.tokens(merchant)
        held = stored.refresh_token if stored is not None else None
        others = [t for t in world.sandbox.live_grants(merchant).refresh_tokens if t != held]
        if others:
            problems[merchant] = f"{len(others)} grant(s) live at UltraCart that nobody holds"
    return problems


def strand_rotation(world: World, merchant: str) -> Delivery:
    """Worker A refreshes; once UltraCart answered, every installation write fails (token write,
    recovery record, lease release): the rotated tokens leave in a recovery message, A's lease stays."""
    answered: list[bool] = []
    writes = faults.throttle(
        "dynamodb",
        "UpdateItem",
        match=lambda p: bool(answered) and faults.item_key(p).startswith("MERCHANT#"),
    )
    world.refresh_queue.send({"merchant_id": merchant})
    with after_ultracart(world, "refresh", lambda: answered.append(True)), faults.aws_faults(writes):
        delivery = world.refresh_queue.deliver()
    assert answered and delivery.raised is None, delivery
    inst = world.get(merchant)
    assert inst is not None and inst.lease_owner is not None and world.refresh_queue.pending() == 1
    return delivery


def refresh_as_worker(world: World, merchant: str) -> str:
    try:
        with acting_as("RefreshWorkerFunction"):
            return refresh_due(world.live, merchant, deadline=a_deadline(world.live))
    except Exception as exc:
        return type(exc).__name__


def hold_after_dead_holder(world: World) -> str:
    """A's lease expires; B refreshes with the old token (refused) and holds the lease."""
    merchant = world.merchants[0]
    strand_rotation(world, merchant)
    world.let_backoff_pass()
    held = refresh_as_worker(world, merchant)
    inst = world.get(merchant)
    assert inst is not None and (inst.lease_owner or "").startswith("hold:"), (held, inst)
    return held


def deliver_during_hold(queue: Queue) -> int:
    """Deliver what is visible up to the queue's maxReceiveCount, the clock standing still (the
    hold lasts minutes: every receive of a failing message falls inside it)."""
    for _ in range(MAX_RECEIVES + 1):
        if not queue.deliver().received:
            break
    return queue.dead()


@cells(
    "refresh",
    {"hold_recovery_message": "B holds; recovery message adopted through the hold, 0 dead-lettered; active"},
)
def test_hold_meets_recovery_message(world: World, cell: Cell, fault: str, expected: str) -> None:
    world.merchants = world.merchants[:1]
    seed(world, expires_in=60)
    merchant = world.merchants[0]
    held = hold_after_dead_holder(world)
    dead = deliver_during_hold(world.refresh_queue)
    world.let_backoff_pass()  # the hold ends; B's deferred request comes back
    refresh_as_worker(world, merchant)
    inst = world.get(merchant)
    status = inst.status if inst is not None else "lost"
    adopted = dead == 0 and status == ACTIVE
    cell.outcome = (
        f"B {'holds' if held == 'GrantUnsettledError' else held}; recovery message "
        f"{'adopted through the hold' if adopted else 'not adopted'}, {dead} dead-lettered; {status}"
    )
    judge(world, cell)  # before anything redrives the DLQ: what a merchant would live
    cell.recovery.append("hold ended")
    recover_refresh(world, cell)
    cell.note(orphan_problems(world))
    conclude(cell)


@cells(
    "revoke",
    {
        "hold_uninstall": "B holds; uninstall delivered through the hold, 0 dead-lettered; "
        "uninstalled, revoke confirmed, no grant live"
    },
)
def test_hold_meets_uninstall(world: World, cell: Cell, fault: str, expected: str) -> None:
    world.merchants = world.merchants[:1]
    seed(world, expires_in=60)
    merchant = world.merchants[0]
    held = hold_after_dead_holder(world)
    world.revoke_queue.send(uninstall_message(merchant))
    dead = deliver_during_hold(world.revoke_queue)
    # The dead holder's recovery message arrives after the uninstall: its grant must be revoked.
    deliver_during_hold(world.refresh_queue)
    cell.outcome = (
        f"B {'holds' if held == 'GrantUnsettledError' else held}; uninstall "
        f"{'dead-lettered' if dead else 'delivered through the hold'}, {dead} dead-lettered; "
        + end_state(world, merchant)
    )
    judge(world, cell)
    cell.recovery.append("hold ended")
    for _ in range(MAX_RECEIVES):
        world.let_backoff_pass()
        if not (world.revoke_queue.deliver().received or world.refresh_queue.deliver().received):
            break
    judge(world, cell)
    cell.note(removed_problems(world))
    if world.refresh_queue.dead():
        cell.note({"queue": "recovery message dead-lettered"})
    conclude(cell)


def reinstall_nested(world: World, merchant: str) -> int:
    """The merchant installs again from inside another invocation (its browser, meanwhile)."""
    start = call_handler("OAuthBrowserFunction", load_event("install.json"))
    state = parse_qs(urlsplit(start["headers"]["Location"]).query)["state"][0]
    nonce = start["cookies"][0].split(";")[0].split("=", 1)[1]
    code = world.sandbox.issue_code(merchant, REDIRECT)
    event = load_event("callback-success.json", code=code, state=state, nonce=nonce)
    return int(follow_to_installed(call_handler("OAuthBrowserFunction", event))["statusCode"])


@contextmanager
def before_token_write(action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` (once) just before the package's next token write: UltraCart has answered,
    its line is given back, the write is yet to come."""
    once = Once(action)

    def hook(params: Any, **_: Any) -> None:
        if faults.is_token_write(params):
            once()

    client = uc_aws.client("dynamodb")
    client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", hook)
    try:
        yield
    finally:
        client.meta.events.unregister("before-parameter-build.dynamodb.UpdateItem", hook)


def recover_generations(world: World, cell: Cell) -> None:
    """Faults gone: the replaced grants' revokes are delivered, an hour passes (the planner and
    the workers run), then the sandbox's live grants judge."""
    world.sandbox.clear_faults()
    for _ in range(MAX_RECEIVES):
        world.let_backoff_pass()
        if not world.revoke_queue.deliver().received:
            break
    cell.recovery.append("revokes delivered")
    world.advance(LATER)
    run_planner(world)
    drain_refreshes(world)
    cell.recovery.append("an hour later: planner and workers ran")
    judge(world, cell)
    cell.note(orphan_problems(world))
    cell.note(active_problems(world))


@cells(
    "refresh",
    {
        "two_generations_recovery": "generation-1 refresh: lost_race; generation 2: "
        "kept_for_recovery; records kept for generations [1, 2]"
    },
)
def test_two_generations_recovery(world: World, cell: Cell, fault: str, expected: str) -> None:
    world.merchants = world.merchants[:1]
    seed(world, expires_in=60)
    merchant = world.merchants[0]
    world.sandbox.add_fault("revoke", times=-1, status=500)  # every revoke fails until recovery
    reinstalled: list[int] = []
    with before_token_write(lambda: reinstalled.append(reinstall_nested(world, merchant))):
        first = refresh_as_worker(world, merchant)
    assert reinstalled == [200], reinstalled
    world.advance(3600)  # generation 2 falls due
    with faults.aws_faults(faults.ddb_throttling("UpdateItem", match=faults.is_token_write)):
        second = refresh_as_worker(world, merchant)
    cell.outcome = (
        f"generation-1 refresh: {first}; generation 2: {second}; "
        f"records kept for generations {kept_generations(world, merchant)}"
    )
    recover_generations(world, cell)
    conclude(cell)


@cells(
    "callback",
    {
        "kill_after_install_write": "killed; generation 2 stored, the replaced "
        "generation-1 grant kept on the item"
    },
)
def test_reinstall_killed_after_the_install_write(
    world: World, cell: Cell, fault: str, expected: str
) -> None:
    world.merchants = world.merchants[:1]
    seed(world, expires_in=3600)
    merchant = world.merchants[0]
    written: list[bool] = []

    def mark(params: Any, **_: Any) -> None:
        written.append(faults.is_token_write(params))

    def die(parsed: Any, **_: Any) -> None:
        if written and written[-1] and "Error" not in parsed:  # the write was applied
            raise Killed

    client = uc_aws.client("dynamodb")
    client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", mark)
    client.meta.events.register("after-call.dynamodb.UpdateItem", die)
    try:
        with pytest.raises(Killed):
            reinstall_nested(world, merchant)
    finally:
        client.meta.events.unregister("before-parameter-build.dynamodb.UpdateItem", mark)
        client.meta.events.unregister("after-call.dynamodb.UpdateItem", die)
    inst = world.get(merchant)
    kept = 1 in kept_generations(world, merchant)
    cell.outcome = f"killed; generation {inst.generation if inst else 0} stored, the replaced " + (
        "generation-1 grant kept on the item" if kept else "generation-1 grant kept nowhere"
    )
    recover_generations(world, cell)
    conclude(cell)


@cells(
    "refresh",
    {
        "budget_error_in_compensating_revoke": "lost_race; the rotated generation-1 "
        "tokens kept for generation 1"
    },
)
def test_budget_error_in_a_compensating_revoke(world: World, cell: Cell, fault: str, expected: str) -> None:
    world.merchants = world.merchants[:1]
    seed(world, expires_in=60)
    merchant = world.merchants[0]
    budget = faults.throttle(
        "dynamodb", "UpdateItem", match=lambda p: faults.item_key(p).startswith("BUDGET#")
    )

    def reinstall_then_throttle_the_budget() -> None:
        assert reinstall_nested(world, merchant) == 200
        budget.install()

    try:
        with before_token_write(reinstall_then_throttle_the_budget):
            first = refresh_as_worker(world, merchant)
    finally:
        budget.remove()
    kept = kept_generations(world, merchant)
    cell.outcome = f"{first}; the rotated generation-1 tokens " + (
        "kept for generation 1" if 1 in kept else "kept nowhere"
    )
    recover_generations(world, cell)
    conclude(cell)
