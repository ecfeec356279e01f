"""Load the template's handlers and the shared ``events/`` corpus the way Lambda would."""

from __future__ import annotations

import importlib.util
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"

FUNCTION_DIRS = {
    "OAuthBrowserFunction": "oauth_browser",
    "TokenApiFunction": "token_api",
    "UninstallWebhookFunction": "uninstall_webhook",
    "RefreshPlannerFunction": "refresh_planner",
    "RefreshWorkerFunction": "refresh_worker",
    "RevokeWorkerFunction": "revoke_worker",
}
_loaded: dict[str, ModuleType] = {}


def load_event(name: str, **replace: str) -> dict[str, Any]:
    """An event from ``events/``, with ``REPLACE_WITH_<KEY>`` placeholders filled in."""
    text = (EVENTS / name).read_text()
    for key, value in replace.items():
        text = text.replace(f"REPLACE_WITH_{key.upper()}", value)
    event: dict[str, Any] = json.loads(text)
    return event


def handler_module(logical_id: str) -> ModuleType:
    """Import ``functions/<dir>/app.py`` once, under a unique module name."""
    if logical_id not in _loaded:
        path = ROOT / "functions" / FUNCTION_DIRS[logical_id] / "app.py"
        spec = importlib.util.spec_from_file_location(f"fn_{FUNCTION_DIRS[logical_id]}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[logical_id] = module
    return _loaded[logical_id]


@dataclass
class FakeContext:
    """Enough of ``LambdaContext`` for Powertools and our handlers."""

    function_name: str = "local"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:local"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 10_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def invoke(logical_id: str, event: dict[str, Any]) -> Any:
    """Run one handler with a fresh context, as Lambda would."""
    return handler_module(logical_id).handler(event, FakeContext(function_name=logical_id))
