"""Retrying a write that must not be lost (tokens UltraCart already issued), with full jitter."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from ucoauth.services import Services

T = TypeVar("T")
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


def retry_write(services: Services, write: Callable[[], T], *, attempts: int = WRITE_ATTEMPTS) -> T:
    """Call ``write`` until it succeeds, on top of botocore's own retries.

    Used only after UltraCart answered: at that point a failed write loses tokens nobody can
    get back (a rotated refresh token, a consumed code), so it is worth a few more seconds.
    """
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except (ClientError, BotoCoreError) as exc:
            if attempt == attempts or not is_transient_aws_error(exc):
                raise
            services.sleep(services.rng.uniform(0, delay))
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover
