"""`SandboxControl`: the `Sandbox` control API for a sandbox running in another process."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from requests import RequestException, Response, Session

from ucsandbox.models import (
    BASE_PATH,
    CONTROL_PATH,
    UNSET,
    ConcurrencyScope,
    DeviceAction,
    EndpointName,
    MalformedKind,
    RecordedRequest,
    Rotate,
    Settings,
    TokenPair,
    Unset,
    settings_changes,
)
from ucsandbox.state import LiveGrants

TIMEOUT = (3.05, 10.0)


class SandboxControlError(Exception):
    """The sandbox refused a control request (bad arguments) or could not be reached."""


class SandboxControl:
    """Drive a sandbox started with `python -m ucsandbox`; `url` is its root or its /rest/v2 base URL."""

    def __init__(self, url: str, *, session: Session | None = None) -> None:
        root = url.rstrip("/")
        if root.endswith(BASE_PATH):
            root = root[: -len(BASE_PATH)]
        self.url = root
        self._session = session or Session()
        self._client_id: str | None = None

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _call(
        self, method: str, route: str, *, json: object = None, params: dict[str, str] | None = None
    ) -> Any:
        try:
            response: Response = self._session.request(
                method, f"{self.url}{CONTROL_PATH}/{route}", json=json, params=params, timeout=TIMEOUT
            )
        except RequestException as exc:
            raise SandboxControlError(f"sandbox at {self.url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise SandboxControlError(f"{method} {CONTROL_PATH}/{route}: {response.status_code} {message}")
        return response.json()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the sandbox answers (it was just started as a process)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "health")
                return
            except SandboxControlError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    # -- the same API as Sandbox -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.url + BASE_PATH

    @property
    def client_id(self) -> str:
        if self._client_id is None:
            self._client_id = str(self._call("GET", "health")["client_id"])
        return self._client_id

    @property
    def settings(self) -> Settings:
        return Settings().updated(self._call("GET", "configure"))

    def configure(
        self,
        *,
        rotate: Rotate | Unset = UNSET,
        expires_in: str | int | Unset | None = UNSET,
        include_merchant_id: bool | Unset = UNSET,
        concurrency_scope: ConcurrencyScope | Unset | None = UNSET,
        rate_per_second: float | Unset | None = UNSET,
        latency_ms: int | Unset = UNSET,
        scope: str | Unset = UNSET,
        device_interval: int | Unset = UNSET,
        device_expires_in: int | Unset = UNSET,
        refuse_client: bool | Unset = UNSET,
    ) -> Settings:
        changes = settings_changes(
            rotate=rotate,
            expires_in=expires_in,
            include_merchant_id=include_merchant_id,
            concurrency_scope=concurrency_scope,
            rate_per_second=rate_per_second,
            latency_ms=latency_ms,
            scope=scope,
            device_interval=device_interval,
            device_expires_in=device_expires_in,
            refuse_client=refuse_client,
        )
        return Settings().updated(self._call("POST", "configure", json=changes))

    def set_client_secret(self, client_secret: str | None) -> None:
        self._call("POST", "client_secret", json={"client_secret": client_secret})

    def add_fault(
        self,
        endpoint: EndpointName,
        *,
        status: int | None = None,
        body: object = None,
        uc_rest_error: str | None = None,
        latency_ms: int = 0,
        timeout: float | None = None,
        malformed: MalformedKind | None = None,
        reset: bool = False,
        after_success: bool = False,
        grant_type: str | None = None,
        times: int = 1,
    ) -> None:
        fault = {
            "endpoint": endpoint,
            "status": status,
            "body": body,
            "uc_rest_error": uc_rest_error,
            "latency_ms": latency_ms,
            "timeout": timeout,
            "malformed": malformed,
            "reset": reset,
            "after_success": after_success,
            "grant_type": grant_type,
            "times": times,
        }
        self._call("POST", "faults", json=fault)

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        params = {"endpoint": endpoint} if endpoint else None
        data = self._call("GET", "requests", params=params)
        return [RecordedRequest.from_json(entry) for entry in data["requests"]]

    def clear_requests(self) -> None:
        self._call("DELETE", "requests")

    def reset(self) -> None:
        self._call("POST", "reset")

    def issue_code(self, merchant_id: str, redirect_uri: str) -> str:
        data = self._call("POST", "codes", json={"merchant_id": merchant_id, "redirect_uri": redirect_uri})
        return str(data["code"])

    def issue_tokens(self, merchant_id: str, expires_in: int | None = None) -> TokenPair:
        data = self._call("POST", "tokens", json={"merchant_id": merchant_id, "expires_in": expires_in})
        return TokenPair(str(data["access_token"]), str(data["refresh_token"]))

    def _validity(self, token: str) -> dict[str, bool]:
        data = self._call("GET", "tokens/valid", params={"token": token})
        return {key: bool(value) for key, value in data.items()}

    def token_is_valid(self, token: str) -> bool:
        return self._validity(token)["access_token_valid"]

    def refresh_token_is_valid(self, token: str) -> bool:
        return self._validity(token)["refresh_token_valid"]

    def expire_access_tokens(self, merchant_id: str) -> int:
        """The merchant's access tokens expire now (its refresh tokens keep working)."""
        data = self._call("POST", "tokens/expire", json={"merchant_id": merchant_id})
        return int(data["expired"])

    def live_grants(self, merchant_id: str) -> LiveGrants:
        """The merchant's grants UltraCart still honours."""
        data = self._call("GET", "grants", params={"merchant_id": merchant_id})
        return LiveGrants(
            refresh_tokens=[str(t) for t in data["refresh_tokens"]],
            access_tokens=[str(t) for t in data["access_tokens"]],
        )

    def advance_time(self, seconds: float) -> None:
        self._call("POST", "clock", json={"advance_seconds": seconds})

    def device(
        self, user_code: str, action: DeviceAction, *, merchant_id: str | None = None, times: int = 1
    ) -> None:
        """Approve (for ``merchant_id``), deny, expire or slow down a device authorization."""
        body = {"user_code": user_code, "action": action, "merchant_id": merchant_id, "times": times}
        self._call("POST", "device", json=body)
