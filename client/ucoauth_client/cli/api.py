"""The admin API as the command line reaches it: where it is, how to sign for it, its answers.

The API is found from ``--url``, from ``--stack NAME`` (the stack's ``AdminApiUrl`` output), or,
with neither, from the running local stack's ``.devstack/state.json`` (``make dev``), which is
signed for with the local stack's fake credentials. Stack outputs, the region, credentials and
signing are the ones ``TokenClient`` uses (``ucoauth_client.aws``).
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from ucoauth_client.aws import checked_url, exchange, session_credentials, sign, signing_region, stack_outputs
from ucoauth_client.errors import TokenClientError

if TYPE_CHECKING:
    import botocore.session
    from botocore.credentials import Credentials

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATE_ENV = "DEVSTACK_STATE"
LOCAL_CREDENTIALS = ("testing", "testing")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TIMEOUT = 35.0  # the admin function's own Timeout is 29 s


class CliError(Exception):
    """A failure the user sees as one line; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Endpoint:
    """Where the admin API is, and how to sign for it."""

    base_url: str  # ends with /admin
    region: str
    # Whose credentials sign: None for a stack on this machine (its fake credentials).
    session: botocore.session.Session | None


# -- finding the API -----------------------------------------------------------------------------


def _find_state_file() -> Path | None:
    override = os.environ.get(STATE_ENV)
    if override:
        return Path(override)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder / ".devstack" / "state.json"
        if candidate.is_file():
            return candidate
    return None


def _local_endpoint() -> Endpoint:
    path = _find_state_file()
    if path is None or not path.is_file():
        raise CliError(
            "no API given and no local stack found: pass --stack NAME or --url URL, or start `make dev`",
            EXIT_USAGE,
        )
    state = json.loads(path.read_text(encoding="utf-8"))
    pid = state.get("pid")
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise CliError(f"the local stack that wrote {path} is not running: start `make dev`") from None
        except PermissionError:
            pass
    base = checked_url(state["gateway_url"])
    # The local stack says which region its gateway checks signatures for.
    return Endpoint(f"{base}/admin", state.get("region", "us-east-1"), None)


def _admin_url(api_url: str) -> str:
    base = checked_url(api_url)
    return base if base.endswith("/admin") else f"{base}/admin"


def _stack_endpoint(stack: str, region: str | None) -> Endpoint:
    import botocore.session

    session = botocore.session.get_session()
    outputs = stack_outputs(session, stack, region)
    url = outputs.get("AdminApiUrl") or outputs.get("ApiUrl")
    if not url:
        raise CliError(f"the stack {stack} has no AdminApiUrl output (deploy this version first)")
    admin = _admin_url(url)
    return Endpoint(admin, signing_region(admin, session, region), session)


def _url_endpoint(url: str, region: str | None) -> Endpoint:
    import botocore.session

    try:
        admin = _admin_url(url)
    except TokenClientError:
        raise CliError(f"--url must be an http(s) URL, not {url!r}", EXIT_USAGE) from None
    session = botocore.session.get_session()
    signer = None if urlsplit(admin).hostname in LOCAL_HOSTS else session
    return Endpoint(admin, signing_region(admin, session, region), signer)


def find_endpoint(stack: str | None, url: str | None, region: str | None) -> Endpoint:
    """``--url``, ``--stack`` or the local stack, in that order."""
    if url:
        return _url_endpoint(url, region)
    if stack:
        return _stack_endpoint(stack, region)
    return _local_endpoint()


# -- the signed client ---------------------------------------------------------------------------


class AdminClient:
    """Signs each request with SigV4 (service ``execute-api``) and returns (status, JSON body)."""

    def __init__(self, endpoint: Endpoint, opener: urllib.request.OpenerDirector | None = None) -> None:
        self.endpoint = endpoint
        self._opener = opener or urllib.request.build_opener()

    def _credentials(self) -> Credentials:
        if self.endpoint.session is None:
            from botocore.credentials import Credentials

            return Credentials(*LOCAL_CREDENTIALS)
        # Per request: refreshable credentials (SSO, a role) stay valid through a long `watch`.
        return session_credentials(self.endpoint.session)

    def call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        *,
        body: bytes = b"",
        api_root: bool = False,
    ) -> tuple[int, Any, Message]:
        """``path`` under the admin API, or with ``api_root`` under the API itself (``/device/...``)."""
        base = self.endpoint.base_url.removesuffix("/admin") if api_root else self.endpoint.base_url
        url = base + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        signed = sign(self._credentials(), self.endpoint.region, method, url, headers, body)
        try:
            answer = exchange(self._opener, method, url, signed, body=body, timeout=TIMEOUT)
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(f"cannot reach {self.endpoint.base_url}: {type(exc).__name__}") from None
        decoded: Any
        try:
            decoded = json.loads(answer.body)
        except ValueError:
            decoded = {"error": f"http_{answer.status}"}
        return answer.status, decoded, answer.headers

    def ok(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        *,
        body: bytes = b"",
        api_root: bool = False,
    ) -> Any:
        """The body of a 2xx answer; anything else raises CliError (400 is a usage error)."""
        status, answer, headers = self.call(method, path, query, body=body, api_root=api_root)
        if 200 <= status < 300:
            return answer
        error = answer.get("error") or answer.get("message") if isinstance(answer, dict) else None
        detail = f"{status} {error or 'error'}"
        retry_after = headers.get("Retry-After")
        if retry_after is not None:
            detail += f" (retry after {retry_after} s)"
        raise CliError(detail, EXIT_USAGE if status == 400 else EXIT_FAILED)
