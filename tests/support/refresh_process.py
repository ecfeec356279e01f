"""Run one refresh of a merchant in a fresh process at a given moment (race and crash tests).

Usage: python -m tests.support.refresh_process MERCHANT START_AT [normal|die_before_write]
The environment carries the functions' settings. ``die_before_write`` kills the process with
``os._exit`` right after UltraCart answered, before the new tokens are stored: a crash.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def main() -> None:
    merchant_id, start_at = sys.argv[1], float(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "normal"
    from ucoauth import store
    from ucoauth.services import get_services
    from ucoauth.tokens import Refresher

    services = get_services()
    services.installations.get(merchant_id)  # warm the clients so every process starts together
    if mode == "die_before_write":

        def die(*_: Any, **__: Any) -> Any:
            os._exit(9)

        store.InstallationStore.write_refreshed_tokens = die  # type: ignore[method-assign]
    time.sleep(max(0.0, start_at - time.time()))
    result: str
    try:
        result = Refresher(services).refresh_due(merchant_id)
    except Exception as exc:
        result = f"error:{type(exc).__name__}"
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    main()
