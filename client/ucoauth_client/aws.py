"""Reaching a stack's API as AWS does, shared by ``TokenClient`` and the ``ucoauth`` command line.

One implementation of each: the stack's outputs (CloudFormation ``DescribeStacks``), the region a
request is signed for, the caller's credentials, SigV4 signing (service ``execute-api``) and one
exchange over the standard library. Failures to find the stack, a region or credentials raise
:class:`TokenClientError`; a request that gets no answer raises ``OSError`` or
``http.client.HTTPException`` (each caller says what that means to its user).
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ucoauth_client.errors import TokenClientError

if TYPE_CHECKING:
    import botocore.session
    from botocore.credentials import Credentials

# API Gateway's service name in a SigV4 signature.
SERVICE = "execute-api"
# https://{api}.execute-api.{region}.amazonaws.com (.cn in the China regions)
_EXECUTE_API_HOST = re.compile(r"[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?")


@dataclass(frozen=True)
class Answer:
    """What the API answered: any status, the raw body, the headers (looked up case-insensitively)."""

    status: int
    body: bytes
    headers: Message


def checked_url(url: str) -> str:
    """The API's base URL without a trailing slash, http(s) only (urllib would also open file: and
    ftp: addresses), with no query or fragment."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise TokenClientError("the API's URL must be an http(s) base URL")
    return url.rstrip("/")


def stack_outputs(session: botocore.session.Session, stack_name: str, region: str | None) -> dict[str, str]:
    """The stack's outputs by key, read in ``region`` (default: the session's)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client: Any = session.create_client("cloudformation", region_name=region)
        stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    except (BotoCoreError, ClientError) as exc:
        raise TokenClientError(f"cannot read the stack {stack_name}: {exc}") from None
    if not stacks:
        return {}
    return {str(o["OutputKey"]): str(o["OutputValue"]) for o in stacks[0].get("Outputs") or []}


def signing_region(url: str, session: botocore.session.Session, region: str | None = None) -> str:
    """The region to sign a request to ``url`` for: ``region`` when given, else the one an
    ``execute-api`` host name carries, else the session's configured region; never a guess."""
    if region:
        return region
    from botocore.exceptions import BotoCoreError

    found = _EXECUTE_API_HOST.fullmatch(urlsplit(url).hostname or "")
    try:
        resolved = found.group(1) if found else session.get_config_variable("region")
    except BotoCoreError as exc:  # a missing profile, a malformed config file
        raise TokenClientError(f"no AWS region: {exc}") from None
    if not resolved:
        raise TokenClientError("no AWS region: pass one, or configure one (AWS_REGION, aws configure)")
    return str(resolved)


def session_credentials(session: botocore.session.Session) -> Credentials:
    """The session's current credentials, frozen for one signature (refreshable ones stay fresh
    when this is called per request)."""
    from botocore.credentials import Credentials
    from botocore.exceptions import BotoCoreError

    try:
        found = session.get_credentials()
        frozen = found.get_frozen_credentials() if found is not None else None
    except BotoCoreError as exc:  # a missing profile, an expired SSO session
        raise TokenClientError(f"no AWS credentials: {exc}") from None
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        raise TokenClientError("no AWS credentials: configure them (aws configure, AWS_PROFILE, sso login)")
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def sign(
    credentials: Credentials, region: str, method: str, url: str, headers: dict[str, str], body: bytes = b""
) -> dict[str, str]:
    """``headers`` plus the SigV4 ones (service ``execute-api``) for this request."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


def exchange(
    opener: urllib.request.OpenerDirector,
    method: str,
    url: str,
    headers: dict[str, str],
    *,
    body: bytes = b"",
    timeout: float,
) -> Answer:
    """Send one request and read the answer, whatever its status."""
    # Callers pass URLs built on checked_url's http(s) base. An empty body goes as none at all
    # (http.client still sends Content-Length: 0 for a POST).
    request = urllib.request.Request(url, data=body or None, headers=headers, method=method)  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            return Answer(response.status, response.read(), response.headers)
    except urllib.error.HTTPError as exc:
        try:
            return Answer(exc.code, exc.read(), exc.headers)
        finally:
            exc.close()
