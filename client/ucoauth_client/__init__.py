"""Access tokens from an UltraCart OAuth for AWS Lambda stack, for the app's own services.

>>> from ucoauth_client import TokenClient
>>> tokens = TokenClient(stack_name="ultracart-oauth")
>>> token = tokens.get("DEMO1", min_valid_seconds=120)
"""

from __future__ import annotations

from ucoauth_client.client import (
    API_URL_OUTPUT,
    MAX_MIN_VALID_SECONDS,
    AccessToken,
    InstallLink,
    TokenClient,
)
from ucoauth_client.errors import (
    AccessDenied,
    InvalidRequest,
    NotInstalled,
    RateLimited,
    ReauthorizationRequired,
    TokenClientError,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "API_URL_OUTPUT",
    "MAX_MIN_VALID_SECONDS",
    "AccessDenied",
    "AccessToken",
    "InstallLink",
    "InvalidRequest",
    "NotInstalled",
    "RateLimited",
    "ReauthorizationRequired",
    "TokenClient",
    "TokenClientError",
    "Unavailable",
    "__version__",
]
