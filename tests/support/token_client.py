"""The consumer client (``client/``, ``ucoauth_client``) against the local stack: a client signed
with the local credentials, an opener that counts what the client sends, the sandbox's refreshes,
and a fresh virtual environment with the client installed by pip."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import urllib.request
import urllib.response
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore.session

from devstack.invoke import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY
from devstack.resources import DEFAULT_REGION
from devstack.stack import LocalStack
from ucoauth_client import TokenClient

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "client"


class CountingOpener(urllib.request.OpenerDirector):
    """urllib's default opener that records the path and query of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self._inner = urllib.request.build_opener()
        self._lock = threading.Lock()
        self.sent: list[str] = []

    def open(self, fullurl: Any, data: Any = None, timeout: Any = None) -> Any:
        url = fullurl.full_url if isinstance(fullurl, urllib.request.Request) else str(fullurl)
        parts = urlsplit(url)
        with self._lock:
            self.sent.append(f"{parts.path}?{parts.query}" if parts.query else parts.path)
        return self._inner.open(fullurl, data, timeout)


def local_session(stack: LocalStack | None = None) -> botocore.session.Session:
    """A botocore session with the local fake credentials (the gateway checks SigV4 with them), or
    with ``stack`` its harness's, which the local AWS's IAM knows as well (CloudFormation lookups)."""
    session = botocore.session.get_session()
    if stack is not None and stack.identities is not None:
        harness = stack.identities.harness
        session.set_credentials(harness.access_key, harness.secret_key)
    else:
        session.set_credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY)
    session.set_config_variable("region", DEFAULT_REGION)
    return session


def token_client(stack: LocalStack, **options: Any) -> tuple[TokenClient, CountingOpener]:
    """A client of the stack's gateway, and the opener that counts its requests."""
    opener = CountingOpener()
    client = TokenClient(
        url=stack.gateway_url, session=local_session(), region=DEFAULT_REGION, opener=opener, **options
    )
    return client, opener


def shorten_stored_expiry(stack: LocalStack, merchant_id: str, seconds_left: int) -> None:
    """Time passes for the stack's record: the stored access token now expires in ``seconds_left``
    (UltraCart's own token is untouched)."""
    import time

    stack.client("dynamodb").update_item(
        TableName=stack.resources.table_name,
        Key={"pk": {"S": f"MERCHANT#{merchant_id}"}, "sk": {"S": "INSTALLATION"}},
        UpdateExpression="SET access_expires_at = :e",
        ExpressionAttributeValues={":e": {"N": str(int(time.time()) + seconds_left)}},
    )


def refreshes(stack: LocalStack, merchant_id: str) -> int:
    """Refresh-token grants the sandbox (UltraCart) received for ``merchant_id``."""
    assert stack.sandbox is not None
    return sum(
        1
        for entry in stack.sandbox.requests("token")
        if entry.grant_type == "refresh_token" and entry.merchant_id == merchant_id
    )


def orders_calls(stack: LocalStack, merchant_id: str | None = None) -> list[int | None]:
    """The statuses the sandbox answered to ``GET /order/orders`` (for one merchant's tokens)."""
    assert stack.sandbox is not None
    return [
        entry.status
        for entry in stack.sandbox.requests("orders")
        if merchant_id is None or entry.merchant_id in (merchant_id, None)
    ]


def venv_with_client(where: Path) -> Path:
    """A new virtual environment (this interpreter's version) with the client installed by pip
    from a wheel of ``client/`` (built here, offline: the build backend comes from the dev
    environment). The new environment sees the dev environment's packages only after its own
    (a ``.pth`` line): botocore, the one dependency, without the network. Returns its python."""
    wheels = where / "wheels"
    # A copy: setuptools writes build/ and *.egg-info/ next to the sources it builds.
    source = where / "client"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build, str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("ultracart_oauth_client-*.whl")
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    dev_site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (Path(site) / "zz_dev_dependencies.pth").write_text(dev_site + "\n")
    return python


class CannedOpener(urllib.request.OpenerDirector):
    """Answers the client's requests from a list of (status, body, headers), recording each URL and
    its headers; no network."""

    def __init__(self, answers: list[tuple[int, dict[str, Any], dict[str, str]]]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list[urllib.request.Request] = []

    def open(self, fullurl: Any, data: Any = None, timeout: Any = None) -> Any:
        import io
        import json
        import urllib.error
        from email.message import Message

        assert isinstance(fullurl, urllib.request.Request) and timeout is not None
        self.requests.append(fullurl)
        status, body, headers = self.answers.pop(0)
        message = Message()
        for name, value in headers.items():
            message[name] = value
        raw = json.dumps(body).encode()
        if status >= 400:
            raise urllib.error.HTTPError(fullurl.full_url, status, "error", message, io.BytesIO(raw))
        return urllib.response.addinfourl(io.BytesIO(raw), message, fullurl.full_url, status)
