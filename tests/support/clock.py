"""A controllable clock for unit tests (epoch seconds), injected as ``Services.clock``/``sleep``."""

from __future__ import annotations


class Clock:
    """A controllable clock (epoch seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
