"""Run one refresh of a merchant in a fresh process at a given moment (race and crash tests).

Usage: python -m tests.support.refresh_process MERCHANT START_AT [MODE]

The environment carries the functions' settings. MODE is ``normal`` or a crash point: the
process kills itself with ``os._exit(9)`` (no cleanup, no ``finally``, like a Lambda that ran
out of memory or time) at one step between taking the merchant's lease and releasing it:

- ``die_after_lease``: the lease was taken, nothing else happened;
- ``die_after_ultracart``: UltraCart answered the refresh, nothing is encrypted or stored;
- ``die_before_write``: the new tokens are encrypted, the write is about to start;
- ``die_after_write``: the new tokens are stored (the write released the lease).

Only this process's view of the package is patched; the code under test is unchanged.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

CRASH_MODES = ("die_after_lease", "die_after_ultracart", "die_before_write", "die_after_write")


def _exit_after(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        function(*args, **kwargs)
        os._exit(9)

    return wrapper


def _exit_instead(*_: Any, **__: Any) -> Any:
    os._exit(9)


def install_crash(mode: str) -> None:
    """Patch this process's package so it dies at ``mode``'s step."""
    from ucoauth.adapters import ultracart
    from ucoauth.adapters.installations import store as store_module

    installations = store_module.InstallationStore
    if mode == "die_after_lease":
        installations.lease = _exit_after(installations.lease)  # type: ignore[method-assign]
    elif mode == "die_after_ultracart":
        client = ultracart.UltraCartClient
        client.refresh = _exit_after(client.refresh)  # type: ignore[method-assign]
    elif mode == "die_before_write":
        installations.write_refreshed_tokens = _exit_instead  # type: ignore[method-assign]
    elif mode == "die_after_write":
        installations.write_refreshed_tokens = _exit_after(  # type: ignore[method-assign]
            installations.write_refreshed_tokens
        )
    elif mode != "normal":
        raise SystemExit(f"unknown mode {mode!r}; use normal or one of {', '.join(CRASH_MODES)}")


def main() -> None:
    merchant_id, start_at = sys.argv[1], float(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "normal"
    from tests.support.deadlines import a_deadline
    from ucoauth.adapters.services import get_services
    from ucoauth.usecases.refresh import refresh_due

    services = get_services()
    services.installations.get(merchant_id)  # warm the clients so every process starts together
    install_crash(mode)
    time.sleep(max(0.0, start_at - time.time()))
    result: str
    try:
        result = refresh_due(services, merchant_id, deadline=a_deadline(services))
    except Exception as exc:
        result = f"error:{type(exc).__name__}"
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    main()
