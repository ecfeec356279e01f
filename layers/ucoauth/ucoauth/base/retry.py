"""Retrying a write that must not be lost (tokens UltraCart already issued), within the deadline."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.base.errors import KeyUnavailableError
from ucoauth.base.timing import AWS_CALL_MAX

if TYPE_CHECKING:
    from ucoauth.adapters.services import Services
    from ucoauth.base.timing import Deadline

# Attempts per write, on top of botocore's own: past these the caller's fallback takes over.
WRITE_ATTEMPTS = 5


def is_transient_aws_error(exc: BaseException) -> bool:
    """Throttling, 5xx and transport errors: worth another attempt."""
    if isinstance(exc, BotoCoreError):
        return True
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or "Throttl" in code or code == "ProvisionedThroughputExceededException"
    return False


def retry_within[T](services: Services, deadline: Deadline, write: Callable[[], T], *, keep_back: float) -> T:
    """Call ``write`` until it succeeds, with full-jitter backoff, at most ``WRITE_ATTEMPTS`` times
    and while the deadline leaves one more attempt plus ``keep_back`` seconds (for what the
    caller must still do if it fails: keep the tokens for recovery).

    Used only after UltraCart answered: a failed write then loses tokens nobody can get back
    (a rotated refresh token, a spent code), so it is worth every second the invocation has.
    Non-transient errors raise at once.
    """
    delay = 0.1
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return write()
        except (ClientError, BotoCoreError, KeyUnavailableError) as exc:
            transient = isinstance(exc, KeyUnavailableError) or is_transient_aws_error(exc)
            if (
                not transient
                or attempt == WRITE_ATTEMPTS
                or not deadline.allows(keep_back + 2 * AWS_CALL_MAX)
            ):
                raise
            services.sleep(services.rng.uniform(0, delay))
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")  # pragma: no cover
