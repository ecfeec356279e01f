"""Injected faults: what can go wrong between a client and UltraCart, queued per endpoint."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any, cast

from ucsandbox.models import ENDPOINTS, MALFORMED_KINDS, EndpointName, MalformedKind


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault; it answers instead of the real operation, or after it with `after_success`.

    At most one of `status`, `timeout`, `malformed`, `reset` shapes the answer; `latency_ms`
    delays whatever comes next (alone, the request is then answered normally).
    `times` is how many matching requests it hits (-1: until cleared).
    """

    endpoint: EndpointName
    status: int | None = None
    body: object = None
    uc_rest_error: str | None = None
    latency_ms: int = 0
    timeout: float | None = None
    malformed: MalformedKind | None = None
    reset: bool = False
    after_success: bool = False
    grant_type: str | None = None
    times: int = 1

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
        if self.status is not None and (
            isinstance(self.status, bool) or not isinstance(self.status, int) or not 100 <= self.status <= 599
        ):
            raise ValueError("status must be an HTTP status code")
        if self.malformed is not None and self.malformed not in MALFORMED_KINDS:
            raise ValueError(f"malformed must be one of {', '.join(MALFORMED_KINDS)}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float) or self.timeout < 0
        ):
            raise ValueError("timeout must be a non-negative number of seconds")
        if isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, int) or self.latency_ms < 0:
            raise ValueError("latency_ms must be a non-negative integer")
        if (
            isinstance(self.times, bool)
            or not isinstance(self.times, int)
            or (self.times < 1 and self.times != -1)
        ):
            raise ValueError("times must be a positive integer or -1 (forever)")
        if self.uc_rest_error is not None and not isinstance(self.uc_rest_error, str):
            raise ValueError("uc_rest_error must be a string")
        if self.grant_type is not None and not isinstance(self.grant_type, str):
            raise ValueError("grant_type must be a string")
        shapes = [self.status is not None, self.timeout is not None, self.malformed is not None, self.reset]
        if sum(shapes) > 1:
            raise ValueError("use at most one of status, timeout, malformed, reset per fault")
        if not any(shapes) and not self.after_success and self.latency_ms == 0:
            raise ValueError("a fault needs status, latency_ms, timeout, malformed, reset or after_success")

    @property
    def replaces_answer(self) -> bool:
        """Whether the client gets something other than the real answer."""
        return (
            self.after_success
            or self.status is not None
            or self.timeout is not None
            or self.malformed is not None
            or self.reset
        )

    @property
    def answer_status(self) -> int | None:
        """The status to answer with; `after_success` alone means UltraCart failed with a 500."""
        if self.status is not None:
            return self.status
        if self.after_success and self.timeout is None and self.malformed is None and not self.reset:
            return 500
        return None

    def describe(self) -> str:
        """A short label for the request log and stderr."""
        if self.reset:
            label = "reset"
        elif self.timeout is not None:
            label = "timeout"
        elif self.malformed is not None:
            label = f"malformed:{self.malformed}"
        elif self.answer_status is not None:
            label = f"status:{self.answer_status}"
        else:
            label = "latency"
        return f"{label}+after_success" if self.after_success else label

    def matches(self, endpoint: str, grant_type: str | None) -> bool:
        return self.endpoint == endpoint and (self.grant_type is None or self.grant_type == grant_type)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Fault:
        """Build from the control endpoint's JSON; raises ValueError on unknown keys or bad values."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        if "endpoint" not in data:
            raise ValueError("endpoint is required")
        # Types are checked in __post_init__; the casts only satisfy the constructor's signature.
        return cls(**cast(dict[str, Any], dict(data)))


class FaultQueue:
    """Faults in the order they were added; a request takes the first one that matches it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Each entry is [fault, remaining uses]; -1 never runs out.
        self._entries: list[tuple[Fault, list[int]]] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._entries.append((fault, [fault.times]))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def take(self, endpoint: str, grant_type: str | None) -> Fault | None:
        """Use up one application of the first matching fault, if any."""
        with self._lock:
            for index, (fault, remaining) in enumerate(self._entries):
                if not fault.matches(endpoint, grant_type):
                    continue
                if remaining[0] > 0:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        del self._entries[index]
                return fault
            return None

    def pending(self) -> list[dict[str, Any]]:
        """The queued faults with their remaining uses, for the control endpoint."""
        with self._lock:
            return [{**fault.to_json(), "remaining": remaining[0]} for fault, remaining in self._entries]
