"""One Logger and one Metrics for the whole package, with a redacting formatter.

Redaction is the last line of defence: code never logs a token, code, state or secret on
purpose, but an exception text or a careless extra must not leak one either.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

SERVICE = "ultracart-oauth"
NAMESPACE = "UltraCartOAuth"
REDACTED = "[REDACTED]"

# Keys whose values are always secret, whatever they look like.
_SECRET_KEYS = re.compile(
    r"(access_?token|refresh_?token|^token$|^code$|^state$|secret|password|authorization|cookie|signature)",
    re.IGNORECASE,
)
# Anything token-shaped: a long run of base64/base64url/hex characters. Merchant ids, request
# ids split by dashes at most 12 characters and ISO dates do not match.
_TOKEN_SHAPED = re.compile(r"(?<![A-Za-z0-9_+/=-])[A-Za-z0-9_+/-]{24,}={0,2}")
# Query-string style leaks: code=..., state=..., token=...
_QUERY_SECRET = re.compile(r"((?:code|state|token|access_token|refresh_token|client_secret)=)[^&\s\"']+")
_HAS_DIGIT = re.compile(r"[0-9]")
_HAS_LETTER = re.compile(r"[A-Za-z]")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def redact_text(text: str) -> str:
    """Mask token-shaped runs and secret query parameters in free text."""
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)

    def _mask(match: re.Match[str]) -> str:
        value = match.group(0)
        # Identifiers and paths are letters only; tokens mix letters and digits.
        if _UUID.match(value) or not (_HAS_DIGIT.search(value) and _HAS_LETTER.search(value)):
            return value
        return REDACTED

    return _TOKEN_SHAPED.sub(_mask, text)


def redact(value: Any, key: str = "") -> Any:
    """Return a copy of a log payload with secrets masked (by key name and by shape)."""
    if key and _SECRET_KEYS.search(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else (an exception object in a stack trace, say) is serialized as its text.
    return redact_text(str(value))


# Keys Powertools adds itself; their values are ids we want to keep readable.
_TRUSTED_KEYS = frozenset({"function_request_id", "xray_trace_id", "function_arn", "timestamp", "level"})


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter, with every field passed through :func:`redact`."""

    def serialize(self, log: Any) -> str:
        clean = {k: (v if k in _TRUSTED_KEYS else redact(v, k)) for k, v in dict(log).items()}
        return super().serialize(clean)


# Powertools warns on every invocation that records no metric; that is normal here.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

# The template sets POWERTOOLS_SERVICE_NAME to the stack's name, so each stage's metrics carry
# their own service dimension (and only that stage's alarms read them); SERVICE is the fallback
# outside a deployed function.
_service = os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE
logger = Logger(service=_service, logger_formatter=RedactingFormatter())
metrics = Metrics(namespace=NAMESPACE, service=_service)
