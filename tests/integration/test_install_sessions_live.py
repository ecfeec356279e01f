"""Install sessions over real HTTP: the local stack's gateway (SigV4 on POST /install-sessions,
each handler as its own role), moto's server and the sandbox's consent page; the client's
``create_install_link`` and the command line's ``ucoauth link``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devstack.invoke import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY
from devstack.stack import LocalStack
from tests.support.browser_flow import TIMEOUT, Started, decide
from tests.support.token_client import token_client
from ucoauth_client import InvalidRequest

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("devstack_install_sessions")]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(environ={}) as started:
        yield started


def signed(method: str, url: str) -> requests.Response:
    request = AWSRequest(method=method, url=url, data=b"")
    SigV4Auth(Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY), "execute-api", "us-east-1").add_auth(
        request
    )
    return requests.request(method, url, headers=dict(request.headers.items()), data=b"", timeout=TIMEOUT)


def ucoauth(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``ucoauth`` command line against the stack ``state`` describes (as ``make dev`` writes it)."""
    script = Path(sys.executable).parent / "ucoauth"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ucoauth_client.cli"]
    return subprocess.run(
        [*command, *args],
        env={**os.environ, "DEVSTACK_STATE": str(state), "AWS_ACCESS_KEY_ID": "", "AWS_PROFILE": ""},
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def through_link(stack: LocalStack, install_url: str, merchant_id: str) -> requests.Response:
    """A merchant's browser following an install link: approve, come back; the callback's answer."""
    opened = requests.get(install_url, allow_redirects=False, timeout=TIMEOUT)
    assert opened.status_code == 302, opened.text
    cookie = opened.headers["Set-Cookie"]
    started = Started(opened.headers["Location"], cookie, cookie.split(";", 1)[0])
    callback = decide(stack, started, merchant_id, "approve")
    return requests.get(callback, headers={"Cookie": started.cookie}, allow_redirects=False, timeout=TIMEOUT)


def test_an_unsigned_request_is_refused_by_the_gateway(stack: LocalStack) -> None:
    response = requests.post(
        f"{stack.gateway_url}/install-sessions", json={"app_account_id": "a"}, timeout=TIMEOUT
    )
    assert response.status_code == 403


def test_an_install_through_a_link_is_linked_and_listed(stack: LocalStack) -> None:
    client, _ = token_client(stack)
    link = client.create_install_link("acct-live", metadata={"plan": "pro"})
    assert link.install_url.startswith(f"{stack.gateway_url}/install?session=")
    assert link.session_id.startswith("ses_") and link.session_id not in link.install_url
    assert "install_url" not in repr(link)
    callback = through_link(stack, link.install_url, "LINK1")
    assert callback.status_code == 303, callback.text
    assert client.get("LINK1").app_account_id == "acct-live"
    query = urlencode({"app_account_id": "acct-live"})
    listed = signed("GET", f"{stack.gateway_url}/admin/installations?{query}")
    assert listed.status_code == 200, listed.text
    assert [(i["merchant_id"], i["app_account_id"]) for i in listed.json()["items"]] == [
        ("LINK1", "acct-live")
    ]
    shown = signed("GET", f"{stack.gateway_url}/admin/installations/LINK1").json()
    assert shown["metadata"] == {"plan": "pro"} and shown["install_session_id"] == link.session_id
    # The link served its one installation: opened again, a page and no redirect.
    replay = requests.get(link.install_url, allow_redirects=False, timeout=TIMEOUT)
    assert replay.status_code == 410 and "Location" not in replay.headers
    assert "already used" in replay.text


def test_bad_input_is_an_invalid_request(stack: LocalStack) -> None:
    client, _ = token_client(stack)
    with pytest.raises(InvalidRequest) as refused:
        client.create_install_link("not a valid id")
    assert refused.value.error == "invalid_parameter"
    with pytest.raises(InvalidRequest):
        client.create_install_link("acct", return_url="https://nowhere.example.com/")
    with pytest.raises(InvalidRequest):
        client.create_install_link("acct", metadata={str(i): "v" for i in range(11)})


def test_an_unknown_session_gets_a_page(stack: LocalStack) -> None:
    response = requests.get(
        f"{stack.gateway_url}/install?session={'x' * 43}", allow_redirects=False, timeout=TIMEOUT
    )
    assert response.status_code == 400 and "Location" not in response.headers
    assert "not valid" in response.text


def test_the_command_line_makes_a_link(stack: LocalStack, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    stack.write_state(state)
    done = ucoauth(state, "link", "acct-cli", "--meta", "team=7", "--json")
    assert done.returncode == 0, done.stderr
    link = json.loads(done.stdout)
    assert set(link) == {"session_id", "install_url", "expires_at"}
    assert through_link(stack, link["install_url"], "LINK2").status_code == 303
    listed = ucoauth(state, "installations", "list", "--account", "acct-cli", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [i["merchant_id"] for i in json.loads(listed.stdout)["items"]] == ["LINK2"]
    human = ucoauth(state, "link", "acct-cli")
    assert human.returncode == 0 and human.stdout.startswith(f"{stack.gateway_url}/install?session=")
    assert ucoauth(state, "link", "bad id").returncode == 2
