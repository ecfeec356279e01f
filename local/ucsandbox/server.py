"""The HTTP face of the sandbox: UltraCart's OAuth endpoints under /rest/v2, one ordinary REST
endpoint that takes a bearer token (the order list, as the official SDK's ``OrderApi.get_orders``
calls it), and the /__sandbox/ controls."""

from __future__ import annotations

import hmac
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ucsandbox import control_routes
from ucsandbox.faults import Fault
from ucsandbox.models import (
    API_VERSION,
    API_VERSION_HEADER,
    BASE_PATH,
    CONTROL_PATH,
    DEVICE_GRANT_TYPE,
    EndpointName,
    Settings,
)
from ucsandbox.pages import consent_page, device_done_page, device_page, error_page
from ucsandbox.replies import (
    NO_STORE,
    Reply,
    fault_status_reply,
    html_reply,
    json_reply,
    malformed_reply,
    oauth_error_reply,
    redirect_reply,
    uc_error_reply,
    with_query,
)
from ucsandbox.state import AccessGrant, IssuedTokens, OAuthError, SandboxState

logger = logging.getLogger("ucsandbox")

MAX_BODY_BYTES = 1 << 20
FORM = "application/x-www-form-urlencoded"
MERCHANT_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")

ROUTES: dict[str, EndpointName] = {
    f"{BASE_PATH}/oauth/authorize": "authorize",
    f"{BASE_PATH}/oauth/token": "token",
    f"{BASE_PATH}/oauth/revoke": "revoke",
    f"{BASE_PATH}/oauth/me": "me",
    f"{BASE_PATH}/oauth/device/authorize": "device_authorize",
    # The verification page a merchant opens to enter a device's user code (RFC 8628 section 3.3).
    f"{BASE_PATH}/oauth/device": "device",
    f"{BASE_PATH}/order/orders": "orders",
}
DEVICE_PAGE = f"{BASE_PATH}/oauth/device"
METHODS: dict[EndpointName, tuple[str, ...]] = {
    "authorize": ("GET", "POST"),
    "token": ("POST",),
    "revoke": ("POST",),
    "me": ("GET",),
    "device_authorize": ("POST",),
    "device": ("GET", "POST"),
    "orders": ("GET",),
}

# An endpoint's real work: the answer and, when known, the merchant it concerned.
Operation = Callable[[], tuple[Reply, str | None]]


class SandboxHTTPServer(ThreadingHTTPServer):
    """A threading server bound to one `SandboxState`."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        super().__init__(address, SandboxHandler)

    @property
    def root_url(self) -> str:
        host, port = self.server_address[0], self.server_address[1]
        if not isinstance(host, str):
            host = host.decode()
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"


class _Slot:
    """An in-flight slot that is freed once, as soon as the answer is decided."""

    def __init__(self, state: SandboxState, ticket: tuple[str, int] | None) -> None:
        self._state = state
        self._ticket = ticket
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            ticket, self._ticket = self._ticket, None
        if ticket is not None:
            self._state.in_flight.release(ticket)


def _first_values(parsed: dict[str, list[str]]) -> dict[str, str]:
    return {key: values[0] for key, values in parsed.items() if values}


class SandboxHandler(BaseHTTPRequestHandler):
    """One connection; `_handle` routes every request."""

    server: SandboxHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "UltraCartSandbox/1.0"
    # Idle keep-alive connections and stalled uploads must not pin a thread forever.
    timeout = 30

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def version_string(self) -> str:
        return self.server_version

    # BaseHTTPRequestHandler would print the request line, query string (tokens!) included.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return

    def log_message(self, format: str, *args: Any) -> None:
        logger.warning("%s: %s", self.address_string(), format % args)

    # -- routing ---------------------------------------------------------------------------------

    @property
    def state(self) -> SandboxState:
        return self.server.state

    def _handle(self) -> None:
        try:
            self._route()
        except Exception:
            # A sandbox bug must show up as UltraCart's 500, not as a silently dropped connection.
            logger.exception("%s %s failed", self.command, self._path_only())
            self.close_connection = True
            self._send(uc_error_reply(500, "Internal sandbox error"))

    def _route(self) -> None:
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = _first_values(parse_qs(split.query, keep_blank_values=True))
        body = self._read_body()
        if isinstance(body, int):
            self._send(uc_error_reply(body, "Invalid or too large request body"))
            self._log_line(path, body)
            return

        if path == CONTROL_PATH or path.startswith(CONTROL_PATH + "/"):
            reply = control_routes.handle(self.state, self.server.root_url, self.command, path, query, body)
            self._send(reply)
            self._log_line(path, reply.status)
            return

        endpoint = ROUTES.get(path)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        is_form = self.command == "POST" and content_type in ("", FORM)
        form = (
            _first_values(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
            if is_form
            else {}
        )
        record: dict[str, Any] = {
            "time": time.time(),
            "method": self.command,
            "path": path,
            "endpoint": endpoint,
            "query": query,
            "headers": dict(self.headers.items()),
            "form": form,
            "grant_type": form.get("grant_type") if endpoint == "token" else None,
            "merchant_id": None,
        }

        if endpoint is None:
            reply = uc_error_reply(404, f"No such resource: {path}")
            self._answer_recorded(record, reply)
            return
        if self.command not in METHODS[endpoint]:
            allowed = ", ".join(METHODS[endpoint])
            reply = uc_error_reply(405, f"Method {self.command} not allowed", {"Allow": allowed})
            self._answer_recorded(record, reply)
            return
        if endpoint == "authorize":
            self._authorize(record, query if self.command == "GET" else form)
            return
        if endpoint == "device":
            self._device_page(record, query if self.command == "GET" else form)
            return
        self._api(endpoint, record, form, content_type, is_form)

    def _read_body(self) -> bytes | int:
        """The request body, or the status to refuse it with (the connection is then closed)."""
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not declared.isdigit():
            self.close_connection = True
            return 400
        length = int(declared)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return 413
        return self.rfile.read(length) if length > 0 else b""

    # -- UltraCart API calls: token, revoke, me ---------------------------------------------------

    def _api(
        self,
        endpoint: EndpointName,
        record: dict[str, Any],
        form: dict[str, str],
        content_type: str,
        is_form: bool,
    ) -> None:
        state = self.state
        settings = state.settings
        bearer = self._bearer()
        merchant_id = self._merchant_of_request(endpoint, form, bearer)
        record["merchant_id"] = merchant_id
        application = self._application_of_request(form, bearer)

        if self.headers.get(API_VERSION_HEADER) != API_VERSION:
            message = f"Missing or unsupported {API_VERSION_HEADER} header; send {API_VERSION}"
            self._answer_recorded(record, uc_error_reply(400, message))
            return

        key: str | None = None
        if settings.concurrency_scope == "merchant" and merchant_id:
            key = f"merchant:{merchant_id}"
        elif settings.concurrency_scope == "application":
            key = f"application:{application}"
        ticket = state.in_flight.try_acquire(key) if key else None
        if key and ticket is None:
            message = "Too many concurrent requests for this " + (settings.concurrency_scope or "application")
            self._answer_recorded(record, uc_error_reply(429, message))
            return
        slot = _Slot(state, ticket)
        try:
            if settings.rate_per_second is not None and not state.buckets.allow(
                application, settings.rate_per_second
            ):
                self._answer_recorded(record, uc_error_reply(429, "Rate limit exceeded"))
                return
            operation: Operation
            if endpoint == "token":
                operation = partial(self._token, form, content_type, is_form, settings)
            elif endpoint == "revoke":
                operation = partial(self._revoke, form, content_type, is_form)
            elif endpoint == "device_authorize":
                operation = partial(self._device_authorize, form, content_type, is_form)
            elif endpoint == "orders":
                operation = partial(self._orders, bearer, record["query"])
            else:
                operation = partial(self._me, bearer)
            # The entry is logged only once the slot is held: a test that sees it can rely on a
            # concurrent call being rejected.
            entry_id = state.log.add(**record, status=None, fault=None)
            state.sleep(settings.latency_ms / 1000)
            self._run(endpoint, record["grant_type"], entry_id, slot, operation)
        finally:
            slot.release()

    def _bearer(self) -> str | None:
        authorization = self.headers.get("Authorization") or ""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return value.strip() or None

    def _application_of_request(self, form: dict[str, str], bearer: str | None) -> str:
        """The client id a call counts for (its concurrency slot and rate): the form's on the OAuth
        endpoints, the one its access token was issued to on the others."""
        if form.get("client_id"):
            return form["client_id"]
        grant = self.state.tokens.access_grant(bearer) if bearer else None
        return grant.client_id if grant is not None else self.state.client_id

    def _merchant_of_request(self, endpoint: str, form: dict[str, str], bearer: str | None) -> str | None:
        tokens = self.state.tokens
        if endpoint == "token":
            if form.get("grant_type") == "authorization_code":
                return tokens.merchant_of(code=form.get("code", ""))
            if form.get("grant_type") == DEVICE_GRANT_TYPE:
                return tokens.merchant_of_device(form.get("device_code", ""))
            return tokens.merchant_of(token=form.get("refresh_token", ""))
        if endpoint == "revoke":
            return tokens.merchant_of(token=form.get("token", ""))
        if endpoint == "device_authorize":
            return None
        return tokens.merchant_of(token=bearer) if bearer else None

    def _check_client(self, form: dict[str, str], content_type: str, is_form: bool) -> str:
        if not is_form:
            raise OAuthError("invalid_request", f"Content-Type must be {FORM}, not {content_type or 'none'}.")
        if self.state.settings.refuse_client:
            raise OAuthError("invalid_client", "Client authentication failed.", 401)
        client_id = form.get("client_id", "")
        if not client_id:
            raise OAuthError("invalid_request", "client_id is required.")
        if client_id != self.state.client_id:
            raise OAuthError("invalid_client", "Unknown client_id.", 401)
        secret = self.state.client_secret
        # Without a configured secret a sent one is ignored, as UltraCart's public clients send none.
        if secret is not None and not hmac.compare_digest(
            form.get("client_secret", "").encode(), secret.encode()
        ):
            raise OAuthError("invalid_client", "Client authentication failed.", 401)
        return client_id

    def _token(
        self, form: dict[str, str], content_type: str, is_form: bool, settings: Settings
    ) -> tuple[Reply, str | None]:
        try:
            client_id = self._check_client(form, content_type, is_form)
            grant_type = form.get("grant_type", "")
            lifetime = settings.token_lifetime()
            if grant_type == "authorization_code":
                code, redirect_uri = form.get("code", ""), form.get("redirect_uri", "")
                if not code or not redirect_uri:
                    raise OAuthError("invalid_request", "code and redirect_uri are required.")
                issued = self.state.tokens.exchange_code(
                    client_id, code, redirect_uri, settings.scope, lifetime
                )
            elif grant_type == "refresh_token":
                refresh_token = form.get("refresh_token", "")
                if not refresh_token:
                    raise OAuthError("invalid_request", "refresh_token is required.")
                issued = self.state.tokens.refresh(client_id, refresh_token, settings.rotate, lifetime)
            elif grant_type == DEVICE_GRANT_TYPE:
                device_code = form.get("device_code", "")
                if not device_code:
                    raise OAuthError("invalid_request", "device_code is required.")
                issued = self.state.tokens.poll_device(client_id, device_code, lifetime)
            elif not grant_type:
                raise OAuthError("invalid_request", "grant_type is required.")
            else:
                raise OAuthError("unsupported_grant_type", f"Unsupported grant_type: {grant_type}.")
        except OAuthError as exc:
            return oauth_error_reply(exc.status, exc.error, exc.description), None
        return json_reply(200, self._token_payload(issued, settings), NO_STORE), issued.merchant_id

    @staticmethod
    def _token_payload(issued: IssuedTokens, settings: Settings) -> dict[str, Any]:
        payload: dict[str, Any] = {"access_token": issued.access_token}
        if issued.refresh_token is not None:
            payload["refresh_token"] = issued.refresh_token
        if settings.expires_in is not None:
            payload["expires_in"] = settings.expires_in
        payload["token_type"] = "bearer"
        payload["scope"] = issued.scope
        if settings.include_merchant_id:
            payload["merchant_id"] = issued.merchant_id
        return payload

    def _device_authorize(
        self, form: dict[str, str], content_type: str, is_form: bool
    ) -> tuple[Reply, str | None]:
        """``POST /oauth/device/authorize`` (form ``client_id``, ``scope``, both required as in the SDK)."""
        try:
            client_id = self._check_client(form, content_type, is_form)
            scope = form.get("scope", "").strip()
            if not scope:
                raise OAuthError("invalid_request", "scope is required.")
        except OAuthError as exc:
            return oauth_error_reply(exc.status, exc.error, exc.description), None
        started = self.state.start_device(client_id, scope)
        page = self.server.root_url + DEVICE_PAGE
        payload = {
            "device_code": started.device_code,
            "user_code": started.user_code,
            "verification_uri": page,
            "verification_uri_complete": with_query(page, {"user_code": started.user_code}),
            "expires_in": started.expires_in,
            "interval": started.interval,
        }
        return json_reply(200, payload, NO_STORE), None

    def _revoke(self, form: dict[str, str], content_type: str, is_form: bool) -> tuple[Reply, str | None]:
        try:
            client_id = self._check_client(form, content_type, is_form)
            token = form.get("token", "")
            if not token:
                raise OAuthError("invalid_request", "token is required.")
        except OAuthError as exc:
            return oauth_error_reply(exc.status, exc.error, exc.description), None
        merchant_id = self.state.tokens.merchant_of(token=token)
        if self.state.tokens.revoke(client_id, token):
            return json_reply(200, {"successful": True, "message": "Token revoked"}), merchant_id
        return json_reply(200, {"successful": False, "message": "Invalid token"}), merchant_id

    def _authenticated(self, bearer: str | None) -> AccessGrant | Reply:
        """The live grant of the bearer token, or UltraCart's 401 for a missing, unknown, expired
        or revoked one."""
        if bearer is None:
            return uc_error_reply(401, "Missing bearer access token", {"WWW-Authenticate": "Bearer"})
        grant = self.state.tokens.access_grant(bearer)
        if grant is None:
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            return uc_error_reply(401, "Invalid, expired or revoked access token", challenge)
        return grant

    def _orders(self, bearer: str | None, query: dict[str, str]) -> tuple[Reply, str | None]:
        """``GET /order/orders``: one order of the token's merchant, in ``OrdersResponse``'s shape."""
        grant = self._authenticated(bearer)
        if isinstance(grant, Reply):
            return grant, None
        limit = query.get("_limit", "100")
        offset = query.get("_offset", "0")
        if not (limit.isdigit() and offset.isdigit()):
            return uc_error_reply(400, "_limit and _offset must be non-negative integers"), grant.merchant_id
        orders = [{"order_id": f"{grant.merchant_id}-0001", "merchant_id": grant.merchant_id}]
        shown = orders[int(offset) : int(offset) + int(limit)]
        payload = {
            "orders": shown,
            "metadata": {
                "result_set": {
                    "count": len(shown),
                    "limit": int(limit),
                    "more": False,
                    "offset": int(offset),
                    "total_records": len(orders),
                }
            },
            "success": True,
        }
        return json_reply(200, payload), grant.merchant_id

    def _me(self, bearer: str | None) -> tuple[Reply, str | None]:
        grant = self._authenticated(bearer)
        if isinstance(grant, Reply):
            return grant, None
        payload = {
            "merchant_id": grant.merchant_id,
            "merchant_name": self.state.merchant_name(grant.merchant_id),
            "application_name": self.state.application_name,
            "client_id": grant.client_id,
            "scopes": grant.scope.split(),
        }
        return json_reply(200, payload), grant.merchant_id

    # -- the authorize page -----------------------------------------------------------------------

    def _authorize(self, record: dict[str, Any], params: dict[str, str]) -> None:
        if self.command == "POST" and params.get("decision") == "approve":
            record["merchant_id"] = params.get("merchant_id", "").strip() or None
        entry_id = self.state.log.add(**record, status=None, fault=None)
        slot = _Slot(self.state, None)
        self._run("authorize", None, entry_id, slot, partial(self._authorize_reply, params))

    def _authorize_problem(self, params: dict[str, str]) -> str | None:
        client_id = params.get("client_id", "")
        if not client_id:
            return "The request has no client_id."
        if client_id != self.state.client_id:
            return "Unknown application: no application is registered with this client_id."
        redirect = urlsplit(params.get("redirect_uri", ""))
        if redirect.scheme not in ("http", "https") or not redirect.netloc:
            return "The redirect_uri is missing or is not an absolute http(s) URL."
        if params.get("response_type") != "code":
            return "Unsupported response_type: only 'code' is supported."
        return None

    def _authorize_reply(self, params: dict[str, str]) -> tuple[Reply, str | None]:
        problem = self._authorize_problem(params)
        if problem is not None:
            return html_reply(400, error_page("Invalid authorization request", problem)), None
        redirect_uri, state = params["redirect_uri"], params.get("state", "")
        back = {"state": state} if state else {}
        page_args: dict[str, Any] = {
            "action": f"{BASE_PATH}/oauth/authorize",
            "application_name": self.state.application_name,
            "client_id": params["client_id"],
            "redirect_uri": redirect_uri,
            "state": state,
            "scopes": self.state.settings.scope.split(),
        }
        if self.command == "GET":
            return html_reply(200, consent_page(**page_args)), None

        decision = params.get("decision")
        if decision == "deny":
            error = {
                "error": "access_denied",
                "error_description": "The merchant denied the authorization request.",
            }
            return redirect_reply(with_query(redirect_uri, {**error, **back})), None
        if decision != "approve":
            return html_reply(
                400, error_page("Invalid authorization request", "Choose Approve or Deny.")
            ), None
        merchant_id = params.get("merchant_id", "").strip()
        if not MERCHANT_ID.fullmatch(merchant_id):
            notice = "Enter a merchant ID: 1 to 32 letters, digits, '-' or '_'."
            return html_reply(400, consent_page(**page_args, merchant_id=merchant_id, notice=notice)), None
        code = self.state.issue_code(merchant_id, redirect_uri)
        return redirect_reply(with_query(redirect_uri, {"code": code, **back})), merchant_id

    # -- the device verification page -------------------------------------------------------------

    def _device_page(self, record: dict[str, Any], params: dict[str, str]) -> None:
        if self.command == "POST" and params.get("decision") == "approve":
            record["merchant_id"] = params.get("merchant_id", "").strip() or None
        entry_id = self.state.log.add(**record, status=None, fault=None)
        slot = _Slot(self.state, None)
        self._run("device", None, entry_id, slot, partial(self._device_reply, params))

    def _device_reply(self, params: dict[str, str]) -> tuple[Reply, str | None]:
        user_code = params.get("user_code", "").strip()
        merchant_id = params.get("merchant_id", "").strip()
        page_args: dict[str, Any] = {
            "action": DEVICE_PAGE,
            "application_name": self.state.application_name,
            "user_code": user_code,
        }
        if self.command == "GET":
            return html_reply(200, device_page(**page_args)), None
        decision = params.get("decision")
        if decision not in ("approve", "deny"):
            return html_reply(400, device_page(**page_args, notice="Choose Approve or Deny.")), None
        if not self.state.tokens.device_pending(user_code):
            notice = "This code is unknown, expired or already used. Check the code on the device."
            return html_reply(400, device_page(**page_args, notice=notice)), None
        if decision == "deny":
            self.state.device(user_code, "deny")
            return html_reply(200, device_done_page(approved=False)), None
        if not MERCHANT_ID.fullmatch(merchant_id):
            notice = "Enter a merchant ID: 1 to 32 letters, digits, '-' or '_'."
            return html_reply(400, device_page(**page_args, merchant_id=merchant_id, notice=notice)), None
        self.state.device(user_code, "approve", merchant_id=merchant_id)
        return html_reply(200, device_done_page(approved=True)), merchant_id

    # -- running an operation under the injected faults -------------------------------------------

    def _run(
        self, endpoint: EndpointName, grant_type: str | None, entry_id: int, slot: _Slot, operation: Operation
    ) -> None:
        state = self.state
        fault = state.faults.take(endpoint, grant_type)
        if fault is not None:
            state.log.update(entry_id, fault=fault.describe())
            state.sleep(fault.latency_ms / 1000)
            if fault.replaces_answer and not fault.after_success:
                self._answer_fault(endpoint, fault, entry_id, slot, None)
                return
        reply, merchant_id = operation()
        if merchant_id is not None:
            state.log.update(entry_id, merchant_id=merchant_id)
        if fault is not None and fault.after_success:
            # UltraCart did the work (tokens rotated, revoked, ...) but the client never learns it.
            self._answer_fault(endpoint, fault, entry_id, slot, reply)
            return
        self._finish(entry_id, slot, reply)

    def _answer_fault(
        self, endpoint: EndpointName, fault: Fault, entry_id: int, slot: _Slot, real: Reply | None
    ) -> None:
        if fault.reset:
            slot.release()
            self._log_line(self._path_only(), None, fault.describe())
            self._reset_connection()
            return
        if fault.timeout is not None:
            # Hold the call (and its in-flight slot, as UltraCart would still be busy), then hang up.
            self.state.sleep(fault.timeout)
            slot.release()
            self._log_line(self._path_only(), None, fault.describe())
            self.close_connection = True
            return
        if fault.malformed is not None:
            self._finish(entry_id, slot, malformed_reply(fault.malformed, endpoint, real), fault.describe())
            return
        status = fault.answer_status
        assert status is not None  # every other shape of fault was handled above
        self._finish(entry_id, slot, fault_status_reply(fault, status), fault.describe())

    def _finish(self, entry_id: int, slot: _Slot, reply: Reply, fault_label: str | None = None) -> None:
        # Log and free the slot before the bytes leave: a client that has its answer may
        # immediately call again and must neither miss the log entry nor meet a spurious 429.
        self.state.log.update(entry_id, status=reply.status)
        slot.release()
        self._send(reply)
        self._log_line(self._path_only(), reply.status, fault_label)

    def _answer_recorded(self, record: dict[str, Any], reply: Reply) -> None:
        self.state.log.add(**record, status=reply.status, fault=None)
        self._send(reply)
        self._log_line(record["path"], reply.status)

    # -- the wire --------------------------------------------------------------------------------

    def _path_only(self) -> str:
        return urlsplit(self.path).path

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its read timeout fired); nothing left to tell it.
            self.close_connection = True

    def _reset_connection(self) -> None:
        """Close the socket with a TCP RST, without any answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    def _log_line(self, path: str, status: int | None, fault: str | None = None) -> None:
        # Method, path and status only: query strings and bodies carry codes and tokens.
        suffix = f" fault={fault}" if fault else ""
        logger.info("%s %s %s%s", self.command, path, status if status is not None else "-", suffix)
