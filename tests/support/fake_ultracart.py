"""An in-memory UltraCart for unit tests (no network). Integration tests use the real sandbox."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ucoauth.adapters.ultracart import DeviceAuthorization, MerchantInfo, RevokeResponse, TokenResponse
from ucoauth.base.errors import PermanentUltraCartError, TransientUltraCartError


@dataclass
class FakeUltraCart:
    """Issues tokens like UltraCart: rotating refresh tokens by default, errors on demand."""

    rotate: bool = True
    expires_in: int | None = 3600
    include_merchant_id: bool = True
    calls: list[str] = field(default_factory=list)
    fail_next: list[Exception] = field(default_factory=list)
    codes: dict[str, str] = field(default_factory=dict)
    live_refresh: dict[str, str] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    access_owner: dict[str, str] = field(default_factory=dict)
    # Run once, after UltraCart has processed a refresh and before its answer reaches the caller
    # (a slow network, a paused process): what others do in that window.
    during_refresh: Callable[[], None] | None = None
    # Device authorizations (RFC 8628): device code -> {"state", "merchant_id", "slow_downs", "scope"}.
    devices: dict[str, dict[str, object]] = field(default_factory=dict)
    device_interval: int = 5
    device_expires_in: int = 900
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _token(self, kind: str) -> str:
        return f"{kind}{next(self._seq):04d}x9Kq2Lm8Pw4Rt6Yu0Io3As5Df7Gh"

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def new_code(self, merchant_id: str) -> str:
        code = self._token("code")
        self.codes[code] = merchant_id
        return code

    def seed(self, merchant_id: str) -> TokenResponse:
        """Tokens for a merchant as if installed (no call recorded)."""
        return self._issue(merchant_id)

    def _issue(self, merchant_id: str, refresh: str | None = None) -> TokenResponse:
        access = self._token("acc")
        self.access_owner[access] = merchant_id
        if refresh is None or self.rotate:
            if refresh is not None:
                self.live_refresh.pop(refresh, None)
            refresh = self._token("ref")
            self.live_refresh[refresh] = merchant_id
        return TokenResponse(
            access_token=access,
            refresh_token=refresh,
            expires_in=self.expires_in,
            token_type="bearer",
            scope="order_read",
            merchant_id=merchant_id if self.include_merchant_id else None,
        )

    # -- the UltraCartClient interface ---------------------------------------------------

    def exchange_code(self, code: str, redirect_uri: str) -> TokenResponse:
        with self._lock:
            self.calls.append("exchange")
            self._maybe_fail()
            merchant_id = self.codes.pop(code, None)
            if merchant_id is None:
                raise PermanentUltraCartError("refused", status=400, error="invalid_grant")
            return self._issue(merchant_id)

    def refresh(self, refresh_token: str) -> TokenResponse:
        with self._lock:
            self.calls.append("refresh")
            self._maybe_fail()
            merchant_id = self.live_refresh.get(refresh_token)
            if merchant_id is None:
                raise PermanentUltraCartError("refused", status=400, error="invalid_grant")
            answer = self._issue(merchant_id, refresh_token)
        hook, self.during_refresh = self.during_refresh, None
        if hook is not None:
            hook()
        return answer

    def live_grants(self, merchant_id: str) -> list[str]:
        """The refresh tokens UltraCart would still accept for a merchant (its live grants)."""
        with self._lock:
            return [token for token, owner in self.live_refresh.items() if owner == merchant_id]

    def revoke(self, token: str) -> RevokeResponse:
        with self._lock:
            self.calls.append("revoke")
            self._maybe_fail()
            known = token in self.live_refresh or (token in self.access_owner and token not in self.revoked)
            self.live_refresh.pop(token, None)
            self.revoked.add(token)
            return RevokeResponse(successful=known, message="revoked" if known else "Invalid token")

    def me(self, access_token: str) -> MerchantInfo:
        with self._lock:
            self.calls.append("me")
            self._maybe_fail()
            if access_token not in self.access_owner:
                raise PermanentUltraCartError("refused", status=401)
            return MerchantInfo(merchant_id=self.access_owner[access_token])

    # -- device authorizations ---------------------------------------------------------

    def device_authorize(self, scope: str) -> DeviceAuthorization:
        with self._lock:
            self.calls.append("device_authorize")
            self._maybe_fail()
            code = self._token("dev")
            user_code = f"WDJB-{next(self._seq) % 10000:04d}"
            self.devices[code] = {"state": "pending", "merchant_id": None, "slow_downs": 0, "scope": scope}
            self.devices[code]["user_code"] = user_code
            return DeviceAuthorization(
                device_code=code,
                user_code=user_code,
                verification_uri="https://uc.example/device",
                verification_uri_complete=f"https://uc.example/device?user_code={user_code}",
                expires_in=self.device_expires_in,
                interval=self.device_interval,
            )

    def decide_device(self, device_code: str, state: str, merchant_id: str | None = None) -> None:
        """``approved`` (for merchant_id), ``denied``, ``expired``; or ``slow_down`` (the next poll)."""
        with self._lock:
            device = self.devices[device_code]
            if state == "slow_down":
                device["slow_downs"] = int(str(device["slow_downs"])) + 1
            else:
                device["state"], device["merchant_id"] = state, merchant_id

    def poll_device(self, device_code: str) -> TokenResponse:
        with self._lock:
            self.calls.append("poll_device")
            self._maybe_fail()
            device = self.devices.get(device_code)
            if device is None or device["state"] == "used":
                raise PermanentUltraCartError("refused", status=400, error="invalid_grant")
            if int(str(device["slow_downs"])) > 0:
                device["slow_downs"] = int(str(device["slow_downs"])) - 1
                raise PermanentUltraCartError("refused", status=400, error="slow_down")
            state = device["state"]
            if state == "pending":
                raise PermanentUltraCartError("refused", status=400, error="authorization_pending")
            if state == "denied":
                raise PermanentUltraCartError("refused", status=400, error="access_denied")
            if state == "expired":
                raise PermanentUltraCartError("refused", status=400, error="expired_token")
            device["state"] = "used"
            return self._issue(str(device["merchant_id"]))


def transient(status: int = 500) -> TransientUltraCartError:
    """A transient failure as the real client raises it."""
    return TransientUltraCartError("answered", status=status)
