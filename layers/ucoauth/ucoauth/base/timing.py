"""Time as part of every guarantee: the longest each outside call may take, and deadlines.

A holder of a merchant's lease may write only until its invocation's deadline, and the lease
lasts past that deadline (``LEASE_SKEW``), so nobody takes it while the holder could still
write. Before an UltraCart call, the holder checks that its remaining time covers the call
(connect + read timeout) and the whole write reserve that stores the answer; if not, it does
not call (the request comes back later, in an invocation with time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ucoauth.base.settings import Settings

# Every AWS client (ucoauth.adapters.aws): short timeouts and two attempts. DynamoDB, KMS, SQS and
# EventBridge answer in milliseconds; a call that hangs must not eat the invocation.
AWS_CONNECT_TIMEOUT = 0.5
AWS_READ_TIMEOUT = 1.5
AWS_ATTEMPTS = 2
# The longest one AWS call can take: every attempt times out, plus botocore's backoff (< 1 s).
AWS_CALL_MAX = AWS_ATTEMPTS * (AWS_CONNECT_TIMEOUT + AWS_READ_TIMEOUT) + 1.0
# After UltraCart answered: encrypt, write the installation, and (should that fail) keep a
# recovery record on the item; the last call is the recovery message on the queue.
WRITE_RESERVE = 3 * AWS_CALL_MAX
# Clock skew between hosts, and a request sent just before the deadline landing just after.
LEASE_SKEW = 5.0
# Kept back from Lambda's remaining time to return the answer.
RETURN_MARGIN = 0.5
# The in-process token API's deadline, beyond one short UltraCart call and its write: the item's
# read and the lease before the call (milliseconds each when DynamoDB is well).
IN_PROCESS_LEAD = 1.0


# The shortest read timeout worth an UltraCart call (it usually answers in well under a second).
MIN_READ_TIMEOUT = 2.0
_CALL_SLACK = 1.0


def ultracart_call_max(settings: Settings, read_timeout: float | None = None) -> float:
    """The longest one UltraCart call can take (connect + read timeout, and a second of slack)."""
    read = settings.ultracart_read_timeout if read_timeout is None else read_timeout
    return settings.ultracart_connect_timeout + read + _CALL_SLACK


def call_needs(settings: Settings, calls: int = 1) -> float:
    """Seconds an invocation needs left to make ``calls`` UltraCart calls (with the shortest read
    timeout worth making) and store their answer."""
    shortest = min(MIN_READ_TIMEOUT, settings.ultracart_read_timeout)
    return calls * ultracart_call_max(settings, shortest) + WRITE_RESERVE


def read_timeout_within(settings: Settings, deadline: Deadline) -> float | None:
    """The read timeout for an UltraCart call made now: the configured one, shortened so that the
    call and the write reserve end before ``deadline``; None when even the shortest does not fit
    (then no call starts). A 29 s HTTP function thus still refreshes inline, with a shorter wait."""
    room = deadline.remaining() - WRITE_RESERVE - settings.ultracart_connect_timeout - _CALL_SLACK
    read = min(settings.ultracart_read_timeout, room)
    return read if read >= min(MIN_READ_TIMEOUT, settings.ultracart_read_timeout) else None


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Deadline:
    """The moment (on the services' clock, epoch seconds) after which this invocation may not act."""

    at: float
    clock: Callable[[], float]

    def remaining(self) -> float:
        """Seconds left."""
        return self.at - self.clock()

    def allows(self, seconds: float) -> bool:
        """At least ``seconds`` are left."""
        return self.remaining() >= seconds

    @property
    def lease_until(self) -> int:
        """Where a lease taken by this invocation ends: past the deadline, by the skew."""
        return int(self.at + LEASE_SKEW) + 1

    @classmethod
    def of_context(cls, context: Any, clock: Callable[[], float]) -> Deadline:
        """From a Lambda context's remaining time."""
        remaining_ms = context.get_remaining_time_in_millis()
        return cls(clock() + remaining_ms / 1000 - RETURN_MARGIN, clock)

    @classmethod
    def in_process(cls, settings: Settings, clock: Callable[[], float], context: Any = None) -> Deadline:
        """For the in-process token API (``get_access_token``): one short UltraCart call and the
        write that stores its answer (``IN_PROCESS_LEAD`` more for the reads before the call), and
        never past the caller's own Lambda ``context`` (its remaining time, less the return margin)
        when one is given: a caller with less time left than that gets no UltraCart call at all."""
        bounded = cls(clock() + call_needs(settings) + IN_PROCESS_LEAD, clock)
        if context is None:
            return bounded
        theirs = cls.of_context(context, clock)
        return theirs if theirs.at < bounded.at else bounded
