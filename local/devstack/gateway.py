"""A local HttpApi: HTTP requests to API Gateway payload 2.0 events for the template's handlers.

Routes come from ``template.yaml`` (``http_routes``), matched as HttpApi matches them: the most
specific route wins, and a ``$default`` route takes only what no other route matches (without
one, an unmatched request gets API Gateway's JSON 404). Each request becomes the event API Gateway
would send (``version`` 2.0, ``rawQueryString`` as received, lower-cased headers with repeats
joined by commas, a ``cookies`` list instead of a ``cookie`` header, base64 bodies for binary
content); the handler's answer is written back the way API Gateway writes it (one
``Set-Cookie`` per ``cookies`` entry, base64 bodies decoded). Routes with the ``AWS_IAM``
authorizer need a valid SigV4 signature (service ``execute-api``) made with the local fake
credentials, as API Gateway checks one against IAM.

One log line per request: method, path (never the query string: it carries OAuth codes and
states), status and duration.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from devstack.resources import DEFAULT_REGION, Route

log = logging.getLogger("devstack.gateway")

SERVICE = "execute-api"
API_ID = "local"
STAGE = "$default"
MAX_BODY_BYTES = 10 * 1024 * 1024  # HttpApi's payload limit
MAX_CLOCK_SKEW_SECONDS = 15 * 60  # SigV4: a signature is valid 15 minutes either side
IAM_USER_ID = "AIDALOCALDEVSTACK0000"

# Invokes one function (by logical id) with an event; raises what the handler raises.
Invoke = Callable[[str, dict[str, Any]], Any]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TEXT_TYPES = re.compile(
    r"^(text/[^;]*|application/([a-z0-9.+-]*\+)?(json|xml)|application/x-www-form-urlencoded"
    r"|application/(javascript|ecmascript|graphql|x-ndjson|yaml|x-yaml))$"
)
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
# Set by the gateway itself, never copied from a handler's answer.
_HOP_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "date", "server"})


# --------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _CompiledRoute:
    route: Route
    pattern: re.Pattern[str]
    route_key: str
    specificity: tuple[int, int, int]


DEFAULT_ROUTE = "$default"


def _compile(route: Route) -> _CompiledRoute:
    if route.path == DEFAULT_ROUTE:
        # HttpApi's catch-all: any method and path no other route matches; its routeKey is "$default".
        return _CompiledRoute(route, re.compile(r"/.*", re.DOTALL), DEFAULT_ROUTE, (1 << 30, 0, 0))
    parts: list[str] = []
    params = greedy = 0
    for segment in route.path.strip("/").split("/"):
        match = re.fullmatch(r"\{([A-Za-z0-9_]+)(\+?)\}", segment)
        if match is None:
            parts.append(re.escape(segment))
        elif match.group(2):
            greedy += 1
            parts.append(f"(?P<{match.group(1)}>.+)")
        else:
            params += 1
            parts.append(f"(?P<{match.group(1)}>[^/]+)")
    pattern = re.compile("/" + "/".join(parts) if parts != [""] else "/")
    # HttpApi picks the most specific route: literal paths before parameters before greedy ones.
    return _CompiledRoute(route, pattern, f"{route.method} {route.path}", (greedy, params, -len(route.path)))


class RouteTable:
    """The template's routes, matched like HttpApi does (most specific first, ``ANY`` last,
    ``$default`` only when nothing else matches)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        compiled = [_compile(r) for r in routes]
        self._routes = sorted(
            (c for c in compiled if c.route.path != DEFAULT_ROUTE), key=lambda r: r.specificity
        )
        self._default = next((c for c in compiled if c.route.path == DEFAULT_ROUTE), None)

    def match(self, method: str, raw_path: str) -> tuple[_CompiledRoute, dict[str, str]] | None:
        """The route for a request and its path parameters (percent-decoded once)."""
        for wanted in (method, "ANY"):
            for compiled in self._routes:
                if compiled.route.method != wanted:
                    continue
                found = compiled.pattern.fullmatch(raw_path)
                if found is not None:
                    return compiled, {k: unquote(v) for k, v in found.groupdict().items()}
        if self._default is not None:
            return self._default, {}
        return None


# --------------------------------------------------------------------------------------
# SigV4 (what API Gateway checks on AWS_IAM routes)
# --------------------------------------------------------------------------------------
class _ExactHeaders(SigV4Auth):
    """SigV4Auth that signs exactly the headers the caller says it signed."""

    def __init__(self, credentials: Credentials, region: str, signed: list[str]) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                headers[name] = value
        return headers


@dataclass(frozen=True)
class Caller:
    """Who signed a request (``requestContext.authorizer.iam``)."""

    access_key: str
    account_id: str


class SigV4Verifier:
    """Recomputes a request's SigV4 signature with botocore and compares it."""

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        region: str = DEFAULT_REGION,
        account_id: str = "123456789012",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = dict(credentials)  # access key id -> secret access key
        self._region = region
        self._account_id = account_id
        self._clock = clock

    def verify(
        self,
        *,
        method: str,
        host: str,
        raw_path: str,
        raw_query: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Caller | None:
        """The caller when the signature is valid for these credentials, region and service."""
        lowered = [(name.lower(), value) for name, value in headers]
        authorization = [value for name, value in lowered if name == "authorization"]
        if len(authorization) != 1:
            return None
        match = _AUTHORIZATION.match(authorization[0].strip())
        if match is None:
            return None
        access_key, _, scope = match.group("credential").partition("/")
        secret = self._credentials.get(access_key)
        if secret is None or scope.count("/") != 3:
            return None
        day, region, service, terminator = scope.split("/")
        if region != self._region or service != SERVICE or terminator != "aws4_request":
            return None
        signed = match.group("signed").split(";")
        if "host" not in signed or signed != sorted(set(signed)):
            return None
        amz_dates = [value.strip() for name, value in lowered if name == "x-amz-date"]
        if len(amz_dates) != 1 or "x-amz-date" not in signed or not _AMZ_DATE.match(amz_dates[0]):
            return None
        amz_date = amz_dates[0]
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return None
        if day != amz_date[:8] or abs(self._clock() - signed_at) > MAX_CLOCK_SKEW_SECONDS:
            return None
        content_sha = [value.strip() for name, value in lowered if name == "x-amz-content-sha256"]
        if content_sha and content_sha[0] not in ("UNSIGNED-PAYLOAD", hashlib.sha256(body).hexdigest()):
            return None

        request_headers = HTTPHeaders()
        for name, value in lowered:
            if name in signed:
                request_headers[name] = value
        if any(name not in request_headers for name in signed):
            return None
        url = f"http://{host}{raw_path}" + (f"?{raw_query}" if raw_query else "")
        request = AWSRequest(method=method, url=url, data=body)
        request.headers = request_headers
        request.context["timestamp"] = amz_date
        signer = _ExactHeaders(Credentials(access_key, secret), region, signed)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, match.group("signature")):
            return None
        return Caller(access_key=access_key, account_id=self._account_id)


# --------------------------------------------------------------------------------------
# Events and responses
# --------------------------------------------------------------------------------------
def _is_text(content_type: str, body: bytes) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    if media and not _TEXT_TYPES.match(media):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _join_repeated(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in pairs:
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


def _request_time(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return f"{moment:%d}/{_MONTHS[moment.month - 1]}/{moment:%Y:%H:%M:%S} +0000"


@dataclass(frozen=True)
class IncomingRequest:
    """An HTTP request as the gateway received it."""

    method: str
    raw_path: str
    raw_query: str
    headers: list[tuple[str, str]]  # in arrival order, names as sent
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        values = [value for key, value in self.headers if key.lower() == wanted]
        return ",".join(values) if values else None


def build_event(
    request: IncomingRequest,
    *,
    route_key: str,
    path_parameters: Mapping[str, str],
    account_id: str,
    caller: Caller | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The HttpApi payload 2.0 event API Gateway would send for this request."""
    now = time.time() if now is None else now
    cookies: list[str] = []
    header_pairs: list[tuple[str, str]] = []
    for name, value in request.headers:
        lowered = name.lower()
        if lowered == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
        else:
            header_pairs.append((lowered, value))
    header_pairs.append(("x-forwarded-for", request.source_ip))
    header_pairs.append(("x-forwarded-proto", "http"))
    headers = _join_repeated(header_pairs)
    host = headers.get("host", "localhost")
    path = unquote(request.raw_path)
    context: dict[str, Any] = {
        "accountId": account_id,
        "apiId": API_ID,
        "domainName": host,
        "domainPrefix": host.split(":", 1)[0].split(".", 1)[0],
        "http": {
            "method": request.method,
            "path": path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": route_key,
        "stage": STAGE,
        "time": _request_time(now),
        "timeEpoch": int(now * 1000),
    }
    if caller is not None:
        context["authorizer"] = {
            "iam": {
                "accessKey": caller.access_key,
                "accountId": caller.account_id,
                "callerId": IAM_USER_ID,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": f"arn:aws:iam::{caller.account_id}:user/devstack",
                "userId": IAM_USER_ID,
            }
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if request.raw_query:
        event["queryStringParameters"] = _join_repeated(parse_qsl(request.raw_query, keep_blank_values=True))
    event["requestContext"] = context
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if request.body:
        if _is_text(headers.get("content-type", ""), request.body):
            event["body"] = request.body.decode("utf-8")
            event["isBase64Encoded"] = False
        else:
            event["body"] = base64.b64encode(request.body).decode("ascii")
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


class InvalidResponseError(ValueError):
    """The handler returned something API Gateway cannot turn into an HTTP response."""


@dataclass(frozen=True)
class OutgoingResponse:
    """What the gateway writes back."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def translate_response(result: Any) -> OutgoingResponse:
    """A payload 2.0 Lambda result as API Gateway turns it into HTTP."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # HttpApi 2.0 infers a 200 JSON answer from anything else the function returns.
        text = result if isinstance(result, str) else json.dumps(result)
        return OutgoingResponse(200, [("Content-Type", "application/json")], text.encode("utf-8"))
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise InvalidResponseError(f"statusCode must be an HTTP status, got {status!r}")
    headers: list[tuple[str, str]] = []
    for name, value in (result.get("headers") or {}).items():
        if isinstance(value, list | dict):
            raise InvalidResponseError(f"header {name} must be a string")
        headers.append((str(name), _header_text(value)))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        if not isinstance(values, list):
            raise InvalidResponseError(f"multiValueHeaders[{name}] must be a list")
        headers.extend((str(name), _header_text(value)) for value in values)
    cookies = result.get("cookies") or []
    if not isinstance(cookies, list) or not all(isinstance(cookie, str) for cookie in cookies):
        raise InvalidResponseError("cookies must be a list of strings")
    headers.extend(("Set-Cookie", cookie) for cookie in cookies)
    body = result.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        raise InvalidResponseError("body must be a string")
    elif result.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidResponseError("isBase64Encoded body is not base64") from None
    else:
        data = body.encode("utf-8")
    return OutgoingResponse(status, headers, data)


def _header_text(value: Any) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if "\r" in text or "\n" in text:
        raise InvalidResponseError("header values must not contain line breaks")
    return text


def _json_response(status: int, message: str) -> OutgoingResponse:
    body = json.dumps({"message": message}).encode()
    return OutgoingResponse(status, [("Content-Type", "application/json")], body)


# --------------------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------------------
class _RequestTooLargeError(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    server: _GatewayServer
    protocol_version = "HTTP/1.1"
    server_version = "devstack-gateway"
    # An idle keep-alive connection or a stalled upload must not hold a thread forever.
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # BaseHTTPRequestHandler logs the request line, query string (codes, states) included.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return

    def log_message(self, format: str, *args: Any) -> None:
        log.warning("unreadable request from %s", self.client_address[0])

    def version_string(self) -> str:
        return self.server_version

    def _serve(self) -> None:
        started = time.monotonic()
        target = self.path
        if not target.startswith("/"):
            parts = urlsplit(target)  # absolute-form request target
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        raw_path, _, raw_query = target.partition("?")
        raw_query = raw_query.split("#", 1)[0]
        try:
            body = self._read_body()
        except _RequestTooLargeError:
            response = _json_response(413, "Request Entity Too Large")
            self.close_connection = True
        except (ValueError, OSError):
            response = _json_response(400, "Bad Request")
            self.close_connection = True
        else:
            request = IncomingRequest(
                method=self.command,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=list(self.headers.items()),
                body=body,
                source_ip=self.client_address[0],
                protocol=self.request_version,
            )
            response = self.server.gateway.respond(request)
        # Logged before the answer leaves: whoever has the answer can already see the line.
        elapsed = (time.monotonic() - started) * 1000
        log.info("%s %s %d %.0fms", self.command, raw_path, response.status, elapsed)
        self._write(response)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        length = int(length_header)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > MAX_BODY_BYTES:
            raise _RequestTooLargeError
        data = self.rfile.read(length)
        if len(data) != length:
            raise ValueError("body shorter than Content-Length")
        return data

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _RequestTooLargeError
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _write(self, response: OutgoingResponse) -> None:
        try:
            self.send_response(response.status)
            names = {name.lower() for name, _ in response.headers}
            for name, value in response.headers:
                if name.lower() not in _HOP_HEADERS:
                    self.send_header(name, value)
            if "apigw-requestid" not in names:
                self.send_header("apigw-requestid", uuid.uuid4().hex[:16])
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], gateway: Gateway) -> None:
        self.gateway = gateway
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """End idle keep-alive connections, so stopping never waits on a browser."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class Gateway:
    """The local HttpApi on ``host:port`` (port 0: any free port)."""

    def __init__(
        self,
        routes: Iterable[Route],
        invoke: Invoke,
        *,
        credentials: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
        account_id: str = "123456789012",
        public_host: str = "localhost",
    ) -> None:
        self._routes = RouteTable(routes)
        self._invoke = invoke
        self._account_id = account_id
        self._verifier = SigV4Verifier(credentials, region=region, account_id=account_id)
        self._public_host = public_host
        self._server = _GatewayServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """What a browser opens: ``http://localhost:PORT`` (a secure context for ``__Host-`` cookies)."""
        return f"http://{self._public_host}:{self.port}"

    def start(self) -> Gateway:
        if self._thread is not None:
            raise RuntimeError("gateway already started")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="devstack-gateway",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._server.shutdown()
            thread.join(timeout=5)
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def respond(self, request: IncomingRequest) -> OutgoingResponse:
        """Route, authorize, invoke and translate one request."""
        found = self._routes.match(request.method, request.raw_path)
        if found is None:
            return _json_response(404, "Not Found")
        compiled, path_parameters = found
        caller: Caller | None = None
        if compiled.route.auth == "AWS_IAM":
            caller = self._verifier.verify(
                method=request.method,
                host=request.header("host") or "",
                raw_path=request.raw_path,
                raw_query=request.raw_query,
                headers=request.headers,
                body=request.body,
            )
            if caller is None:
                return _json_response(403, "Forbidden")
        event = build_event(
            request,
            route_key=compiled.route_key,
            path_parameters=path_parameters,
            account_id=self._account_id,
            caller=caller,
        )
        try:
            result = self._invoke(compiled.route.logical_id, event)
            return translate_response(result)
        except Exception:
            # API Gateway answers a failed invocation with a bare 500; the details go to the log.
            print(
                f"devstack gateway: {compiled.route.logical_id} failed on {compiled.route_key}",
                file=sys.stderr,
            )
            traceback.print_exc(file=sys.stderr)
            return _json_response(500, "Internal Server Error")
