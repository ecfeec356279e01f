"""The device flow (RFC 8628) end to end over real HTTP: the local stack's gateway (SigV4), its
device queue drained into the worker, the UltraCart sandbox's verification page and controls.

Outcomes are judged by what the caller sees (status, answers), what is stored (the installation,
decryptable, with its due time and event) and what UltraCart saw and still honours (the
sandbox's request log and live grants).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devstack.invoke import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY
from devstack.stack import LocalStack
from tests.support.browser_flow import TIMEOUT, PageForm, install
from tests.support.observer import observed_events
from ucoauth.adapters.crypto import TokenCipher

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("devstack_local_stack")]
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
INTERVAL = 1


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(environ={}) as started:
        yield started


@pytest.fixture
def sandbox(stack: LocalStack) -> Iterator[Any]:
    """The stack's sandbox issuing device authorizations polled every second; defaults again after."""
    assert stack.sandbox is not None
    stack.sandbox.configure(device_interval=INTERVAL, device_expires_in=600)
    stack.sandbox.clear_requests()
    observed_events(stack.resources)  # forget what earlier tests published
    yield stack.sandbox
    stack.sandbox.configure(device_interval=5, device_expires_in=900, expires_in="3600")
    stack.sandbox.clear_faults()


# -- helpers -----------------------------------------------------------------------------------


def signed(method: str, url: str, body: str | None = None) -> requests.Response:
    request = AWSRequest(method=method, url=url, data=body or "")
    SigV4Auth(Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY), "execute-api", "us-east-1").add_auth(
        request
    )
    return requests.request(method, url, data=body, headers=dict(request.headers.items()), timeout=TIMEOUT)


def start(stack: LocalStack, body: str | None = None) -> dict[str, Any]:
    answer = signed("POST", f"{stack.gateway_url}/device/authorizations", body)
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()
    return data


def status(stack: LocalStack, authorization_id: str) -> dict[str, Any]:
    answer = signed("GET", f"{stack.gateway_url}/device/authorizations/{authorization_id}")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def poll_until(
    stack: LocalStack, authorization_id: str, wanted: str, *, seconds: float = 30
) -> dict[str, Any]:
    """Drain the device queue into the worker until the authorization reaches ``wanted``."""
    deadline = time.monotonic() + seconds
    while True:
        stack.runner.drain_once("DeviceQueue", wait_seconds=1)
        answer = status(stack, authorization_id)
        if answer["status"] == wanted:
            return answer
        assert answer["status"] == "pending", answer
        assert time.monotonic() < deadline, f"still {answer} after {seconds} s"


def decide_on_page(started: dict[str, Any], merchant_id: str, decision: str) -> requests.Response:
    """The merchant opens verification_uri_complete and presses Approve or Deny."""
    page = requests.get(started["verification_uri_complete"], timeout=TIMEOUT)
    assert page.status_code == 200
    form = PageForm()
    form.feed(page.text)
    assert form.fields["user_code"] == started["user_code"]
    action = started["verification_uri"].split("/rest/v2")[0] + form.action
    answer = requests.post(
        action, data={**form.fields, "merchant_id": merchant_id, "decision": decision}, timeout=TIMEOUT
    )
    assert answer.status_code == 200, answer.text
    return answer


def polls(sandbox: Any) -> list[Any]:
    return [r for r in sandbox.requests("token") if r.grant_type == DEVICE_GRANT]


def device_items(stack: LocalStack) -> list[dict[str, Any]]:
    items = stack.client("dynamodb").scan(TableName=stack.resources.table_name)["Items"]
    return [i for i in items if i["pk"]["S"].startswith("DEVICE#")]


def installation(stack: LocalStack, merchant_id: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.resources.table_name,
            Key={"pk": {"S": f"MERCHANT#{merchant_id}"}, "sk": {"S": "INSTALLATION"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return item


def stored_tokens(stack: LocalStack, merchant_id: str, item: dict[str, Any]) -> dict[str, str]:
    """The stored tokens, opened as the package opens them (the envelope's wrapped key decrypted
    by KMS with the merchant's context, then AES-GCM), with the harness's KMS client."""
    cipher = TokenCipher(stack.resources.key_id, kms_client=lambda: stack.client("kms"))
    tokens = cipher.decrypt(merchant_id, bytes(item["tokens"]["B"]))
    return {"a": tokens.access_token, "r": tokens.refresh_token or ""}


# -- the flow ----------------------------------------------------------------------------------


def test_an_approved_device_is_installed_like_a_browser_install(
    stack: LocalStack, sandbox: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a device authorization the device shows
    started = start(stack)
    assert set(started) == {
        "authorization_id",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert started["interval"] == INTERVAL and started["expires_in"] == 600
    assert len(started["authorization_id"]) >= 22  # 128 bits or more
    assert status(stack, started["authorization_id"]) == {"status": "pending"}
    # UltraCart was asked as its SDK asks: form client_id and scope (the DeviceScope default)
    (asked,) = sandbox.requests("device_authorize")
    assert asked.form == {"client_id": sandbox.client_id, "scope": "crm"}

    # When the device polls a while, then the merchant approves on UltraCart's page
    stack.runner.drain_once("DeviceQueue", wait_seconds=3)
    assert status(stack, started["authorization_id"]) == {"status": "pending"}
    decide_on_page(started, "DEV1", "approve")
    answer = poll_until(stack, started["authorization_id"], "installed")

    # Then the installation is stored as a browser install stores it
    assert answer == {"status": "installed", "merchant_id": "DEV1"}
    item = installation(stack, "DEV1")
    assert item is not None
    assert item["status"]["S"] == "active" and item["generation"]["N"] == "1"
    assert int(item["due_at"]["N"]) > int(item["installed_at"]["N"])
    tokens = stored_tokens(stack, "DEV1", item)
    grants = sandbox.live_grants("DEV1")
    assert grants.refresh_tokens == [tokens["r"]]
    assert tokens["a"] in grants.access_tokens
    events = [e for e in observed_events(stack.resources) if e["detail"].get("merchant_id") == "DEV1"]
    assert [(e["detail-type"], e["detail"]["generation"]) for e in events] == [("Installation Completed", 1)]
    # Every poll sent the device code and the client id, and none came faster than the interval
    made = polls(sandbox)
    assert len(made) >= 2
    assert all(set(r.form) == {"client_id", "grant_type", "device_code"} for r in made)
    assert all(later.time - earlier.time >= INTERVAL for earlier, later in itertools.pairwise(made))
    assert made[-1].status == 200 and all(r.status == 400 for r in made[:-1])
    # and no more polls once installed
    stack.runner.drain_once("DeviceQueue", wait_seconds=INTERVAL + 1)
    assert len(polls(sandbox)) == len(made)

    # Neither code is in the table or in anything the functions printed
    device_code = made[0].form["device_code"]
    dumped = json.dumps(device_items(stack), default=str) + json.dumps(item, default=str)
    output = "".join(capfd.readouterr())
    for secret in (device_code, started["user_code"], started["user_code"].replace("-", "")):
        assert secret not in dumped
        assert secret not in output


def test_a_denied_device_is_denied_and_nothing_is_installed(stack: LocalStack, sandbox: Any) -> None:
    started = start(stack)
    decide_on_page(started, "DEV2", "deny")
    assert poll_until(stack, started["authorization_id"], "denied") == {"status": "denied"}
    assert installation(stack, "DEV2") is None
    assert sandbox.live_grants("DEV2").any is False
    (item,) = [i for i in device_items(stack) if i["pk"]["S"].endswith(started["authorization_id"])]
    assert "device_code" not in item  # the ciphertext goes with the authorization


def test_an_expired_device_is_expired_and_polled_no_more(stack: LocalStack, sandbox: Any) -> None:
    started = start(stack)
    stack.runner.drain_once("DeviceQueue", wait_seconds=3)
    sandbox.device(started["user_code"], "expire")
    assert poll_until(stack, started["authorization_id"], "expired") == {"status": "expired"}
    made = len(polls(sandbox))
    assert polls(sandbox)[-1].status == 400
    stack.runner.drain_once("DeviceQueue", wait_seconds=INTERVAL + 2)
    assert len(polls(sandbox)) == made


def test_slow_down_delays_the_next_poll_by_five_more_seconds(stack: LocalStack, sandbox: Any) -> None:
    # Given UltraCart will answer the first poll with slow_down
    started = start(stack)
    sandbox.device(started["user_code"], "slow_down")
    # When the device polls twice more, then the merchant approves
    stack.runner.drain_once("DeviceQueue", wait_seconds=3)  # slow_down
    first = polls(sandbox)
    assert [r.status for r in first] == [400]
    stack.runner.drain_once("DeviceQueue", wait_seconds=INTERVAL + 5 + 3)  # pending, 6 s later
    stack.runner.drain_once("DeviceQueue", wait_seconds=INTERVAL + 5 + 3)  # pending, 6 s later
    made = polls(sandbox)
    assert len(made) == 3
    # Then each later poll came at least interval + 5 seconds after the one before (UltraCart
    # would have answered slow_down again otherwise) and the authorization is still pending
    gaps = [later.time - earlier.time for earlier, later in itertools.pairwise(made)]
    assert all(gap >= INTERVAL + 5 for gap in gaps), gaps
    assert all(gap < INTERVAL + 5 + 3 for gap in gaps), gaps
    assert status(stack, started["authorization_id"]) == {"status": "pending"}
    (item,) = [i for i in device_items(stack) if i["pk"]["S"].endswith(started["authorization_id"])]
    assert item["interval"]["N"] == str(INTERVAL + 5)


def test_a_device_approval_racing_a_browser_install_loses_no_grant(stack: LocalStack, sandbox: Any) -> None:
    # Given the merchant approved a device, while it also installs in the browser
    started = start(stack)
    sandbox.device(started["user_code"], "approve", merchant_id="RACE1")
    browser = threading.Thread(target=install, args=(stack, "RACE1"))
    browser.start()
    try:
        answer = poll_until(stack, started["authorization_id"], "installed")
    finally:
        browser.join(timeout=30)
    assert answer == {"status": "installed", "merchant_id": "RACE1"}
    # Then one active installation, holding a grant UltraCart still honours
    item = installation(stack, "RACE1")
    assert item is not None and item["status"]["S"] == "active"
    assert item["generation"]["N"] == "2"
    tokens = stored_tokens(stack, "RACE1", item)
    assert tokens["r"] in sandbox.live_grants("RACE1").refresh_tokens
    events = [e for e in observed_events(stack.resources) if e["detail"].get("merchant_id") == "RACE1"]
    assert sorted(e["detail"]["generation"] for e in events) == [1, 2]
    # And the grant the later install replaced is revoked: UltraCart honours the stored one only
    stack.runner.drain_until_empty(timeout=15)
    assert sandbox.live_grants("RACE1").refresh_tokens == [tokens["r"]]


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["[1]", "not json", '{"scope": "bad scope!"}', '{"scope": 7}', '{"other": "x"}', '{"scope": ""}'],
)
def test_a_bad_body_is_400_and_nothing_is_asked_or_stored(stack: LocalStack, sandbox: Any, body: str) -> None:
    before = len(device_items(stack))
    answer = signed("POST", f"{stack.gateway_url}/device/authorizations", body)
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_request"}
    assert sandbox.requests("device_authorize") == []
    assert len(device_items(stack)) == before


def test_a_scope_in_the_body_is_asked_for(stack: LocalStack, sandbox: Any) -> None:
    start(stack, '{"scope": "ultraship"}')
    (asked,) = sandbox.requests("device_authorize")
    assert asked.form["scope"] == "ultraship"


def test_bad_and_unknown_ids_and_unsigned_requests(stack: LocalStack) -> None:
    base = f"{stack.gateway_url}/device/authorizations"
    assert signed("GET", f"{base}/short").status_code == 400
    assert signed("GET", f"{base}/short").json() == {"error": "invalid_authorization_id"}
    unknown = signed("GET", f"{base}/{'A' * 43}")
    assert unknown.status_code == 404 and unknown.json() == {"error": "not_found"}
    assert requests.post(base, timeout=TIMEOUT).status_code == 403
    assert requests.get(f"{base}/{'A' * 43}", timeout=TIMEOUT).status_code == 403


# -- the command line ----------------------------------------------------------------------------


def test_ucoauth_install_device_shows_the_code_and_waits_for_the_approval(
    stack: LocalStack, sandbox: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    stack.write_state(state)
    script = Path(sys.executable).parent / "ucoauth"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ucoauth_client.cli"]
    stack.runner.start()  # the queue drains in the background, as under `make dev`
    try:
        cli = subprocess.Popen(
            [*command, "install", "--device", "--json", "--timeout", "60"],
            env={**os.environ, "DEVSTACK_STATE": str(state), "AWS_ACCESS_KEY_ID": "", "AWS_PROFILE": ""},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert cli.stdout is not None
        started = json.loads(cli.stdout.readline())
        assert started["verification_uri_complete"].endswith(f"?user_code={started['user_code']}")
        decide_on_page(started, "CLIDEV", "approve")
        out, err = cli.communicate(timeout=60)
    finally:
        stack.runner.stop()
    assert cli.returncode == 0, err
    assert json.loads(out) == {
        "authorization_id": started["authorization_id"],
        "status": "installed",
        "merchant_id": "CLIDEV",
    }
    assert installation(stack, "CLIDEV") is not None
    # A browser install is not the command line's to start: a usage error
    browserless = subprocess.run(
        [*command, "install"],
        env={**os.environ, "DEVSTACK_STATE": str(state), "AWS_ACCESS_KEY_ID": "", "AWS_PROFILE": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert browserless.returncode == 2 and "--device" in browserless.stderr
