"""One lock around moto's DynamoDB request handler, in the process that runs moto's server.

moto's threaded server does not apply two writes to one DynamoDB item one at a time: two racing
conditional ``UpdateItem`` calls can both pass their condition, which real DynamoDB never
allows (two lease holders, two UltraCart calls for one merchant). Serializing DynamoDB requests
restores what DynamoDB guarantees, so race tests assert DynamoDB's behaviour, not a weaker one.

It wraps a method of moto's, so it applies only to the moto it was written for (``devstack.pinned``).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from devstack.pinned import require_version

# The moto whose DynamoHandler.call_action (every DynamoDB request of its server) this wraps.
WRITTEN_FOR_MOTO = "5.2.5"
_lock = threading.Lock()
_MARK = "_ucoauth_serialized"


def serialize_dynamodb() -> None:
    """Make moto's DynamoDB handler take one request at a time (idempotent); on another moto than
    the one it was written for it raises ``devstack.pinned.UnpinnedInternalsError``."""
    require_version("moto", WRITTEN_FOR_MOTO, "devstack.motolock")
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _lock:
            return original(self)

    setattr(call_action, _MARK, True)
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
