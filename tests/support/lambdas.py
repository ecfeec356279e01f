"""Invoke the template's handlers the way the local stack does, with the shared ``events/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devstack.invoke import Invoker, template_invoker
from devstack.resources import load_template

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
_invoker: Invoker | None = None


def load_event(name: str, **replace: str) -> dict[str, Any]:
    """An event from ``events/``, with ``REPLACE_WITH_<KEY>`` placeholders filled in."""
    text = (EVENTS / name).read_text()
    for key, value in replace.items():
        text = text.replace(f"REPLACE_WITH_{key.upper()}", value)
    event: dict[str, Any] = json.loads(text)
    return event


def invoke(logical_id: str, event: dict[str, Any]) -> Any:
    """Run one handler (code dir and Handler read from template.yaml) with a fresh context."""
    global _invoker
    if _invoker is None:
        _invoker = template_invoker(load_template())
    return _invoker.invoke(logical_id, event)
