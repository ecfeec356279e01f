"""The admin API through the local gateway (SigV4; unsigned is 403), and the ``ucoauth`` command
line as a subprocess against a running local stack: list, refresh, uninstall, show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from tests.support.browser_flow import install

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("devstack_local_stack")]
TIMEOUT = 35
CLI_TIMEOUT = 150
SECRET_WORDS = ("access_token", "refresh_token", "ciphertext", "lease_owner", "tokens")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(environ={}) as started:
        yield started


@pytest.fixture
def running(stack: LocalStack) -> Iterator[LocalStack]:
    """The stack as `make dev` runs it: the schedule and the queue drains too."""
    stack.runner.start()
    try:
        yield stack
    finally:
        stack.runner.stop()


def signed(method: str, url: str) -> requests.Response:
    request = AWSRequest(method=method, url=url, data=b"")
    credentials = Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY)
    SigV4Auth(credentials, "execute-api", "us-east-1").add_auth(request)
    return requests.request(method, url, headers=dict(request.headers.items()), data=b"", timeout=TIMEOUT)


ROUTES = [
    ("GET", "/admin/installations"),
    ("GET", "/admin/installations/ADM0"),
    ("POST", "/admin/installations/ADM0/refresh"),
    ("POST", "/admin/installations/ADM0/uninstall"),
    ("POST", "/admin/dead-letters/refresh/redrive"),
    ("GET", "/admin/stats"),
    ("GET", "/admin/anything-else"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_admin_route_refuses_an_unsigned_request(stack: LocalStack, method: str, path: str) -> None:
    response = requests.request(method, stack.gateway_url + path, timeout=TIMEOUT)
    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}


def test_signed_admin_requests_reach_the_admin_function(stack: LocalStack) -> None:
    install(stack, "ADM1")
    listed = signed("GET", f"{stack.gateway_url}/admin/installations?status=active&limit=100")
    assert listed.status_code == 200, listed.text
    assert "ADM1" in [item["merchant_id"] for item in listed.json()["items"]]
    shown = signed("GET", f"{stack.gateway_url}/admin/installations/ADM1")
    assert shown.status_code == 200 and shown.json()["status"] == "active"
    assert signed("GET", f"{stack.gateway_url}/admin/installations?limit=0").json() == {
        "error": "invalid_limit"
    }
    assert signed("GET", f"{stack.gateway_url}/admin/installations?x=1").status_code == 400
    unknown = signed("GET", f"{stack.gateway_url}/admin/anything-else")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "not_found"})
    stats = signed("GET", f"{stack.gateway_url}/admin/stats")
    assert stats.status_code == 200 and stats.json()["installations"]["active"] >= 1
    for response in (listed, shown, stats):
        assert not any(f'"{word}"' in response.text for word in SECRET_WORDS)


def ucoauth(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "ucoauth"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ucoauth_client.cli"]
    return subprocess.run(
        [*command, *args],
        env={**os.environ, "DEVSTACK_STATE": str(state), "AWS_ACCESS_KEY_ID": "", "AWS_PROFILE": ""},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def test_the_command_line_lists_refreshes_uninstalls_and_shows(running: LocalStack, tmp_path: Path) -> None:
    stack = running
    state = tmp_path / "state.json"
    stack.write_state(state)
    install(stack, "CLI1")
    printed: list[str] = []

    def run(*args: str, code: int = 0) -> str:
        done = ucoauth(state, *args)
        printed.extend([done.stdout, done.stderr])
        assert done.returncode == code, (args, done.stdout, done.stderr)
        return done.stdout

    listed = run("installations", "list", "--status", "active")
    assert listed.splitlines()[0].split()[:2] == ["MERCHANT", "STATUS"]
    assert any(line.split()[:2] == ["CLI1", "active"] for line in listed.splitlines())
    as_json = json.loads(run("installations", "list", "--json"))
    assert "CLI1" in [item["merchant_id"] for item in as_json["items"]]

    refreshed = json.loads(run("refresh", "CLI1", "--json"))
    assert refreshed == {"merchant_id": "CLI1", "result": "refreshed"}
    assert stack.sandbox is not None
    assert [r.grant_type for r in stack.sandbox.requests("token") if r.merchant_id == "CLI1"] == [
        "authorization_code",
        "refresh_token",
    ]

    # Without --yes and without a terminal, nothing is uninstalled (usage error).
    run("uninstall", "CLI1", code=2)
    uninstalled = run("uninstall", "CLI1", "--yes", "--wait")
    assert uninstalled.strip() == "CLI1: uninstalled"
    shown: dict[str, Any] = json.loads(run("installations", "show", "CLI1", "--json"))
    assert shown["status"] == "uninstalled" and shown["revoke_confirmed"] is True
    human = run("installations", "show", "CLI1")
    assert any(line.split() == ["revoke_confirmed", "yes"] for line in human.splitlines())

    stats = run("stats")
    assert stats.startswith("installations  active ")
    assert json.loads(run("watch", "--count", "2", "--interval", "0.1", "--json").splitlines()[1])
    redriven = run("dead-letters", "redrive", "revoke").strip()
    assert redriven == "0 dead letter(s) moved back to the revoke queue"
    # Exit codes: unknown merchant 1, bad usage 2.
    run("installations", "show", "NOBODY", code=1)
    run("installations", "show", "bad id<>", code=2)
    run("refresh", code=2)

    # No line the command line printed holds a token UltraCart issued for CLI1.
    issued = {
        value
        for r in stack.sandbox.requests()
        if r.merchant_id == "CLI1"
        for key, value in r.form.items()
        if key in ("token", "refresh_token")
    }
    assert len(issued) >= 3  # the refreshed refresh token, and both revoked tokens
    text = "\n".join(printed)
    assert not [token for token in issued if token in text]
    assert not any(f'"{word}"' in text for word in SECRET_WORDS)
