"""Deadlines for calling the package's use cases directly, as a Lambda invocation would."""

from __future__ import annotations

from ucoauth.adapters.services import Services
from ucoauth.base.timing import Deadline


def a_deadline(services: Services, seconds: float = 120.0) -> Deadline:
    """The deadline of an invocation with ``seconds`` left (default: the workers' Timeout)."""
    return Deadline(services.clock() + seconds, lambda: services.clock())
