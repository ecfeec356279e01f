"""A local fake of UltraCart's OAuth endpoints for tests and the local stack (never deployed)."""

from ucsandbox.control import SandboxControl, SandboxControlError
from ucsandbox.faults import Fault
from ucsandbox.models import (
    API_VERSION,
    API_VERSION_HEADER,
    UC_REST_ERROR_HEADER,
    UNSET,
    RecordedRequest,
    SandboxApi,
    Settings,
    TokenPair,
)
from ucsandbox.sandbox import Sandbox

__all__ = [
    "API_VERSION",
    "API_VERSION_HEADER",
    "UC_REST_ERROR_HEADER",
    "UNSET",
    "Fault",
    "RecordedRequest",
    "Sandbox",
    "SandboxApi",
    "SandboxControl",
    "SandboxControlError",
    "Settings",
    "TokenPair",
]
