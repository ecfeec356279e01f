"""How many modules each function loads on a cold start, beyond botocore's own two clients.

``python -m bench.modules`` prints one row per function. Each function runs in a fresh
interpreter with its environment from the template (fake resources, nothing reachable), imports
its ``app.py`` the way Lambda does and builds the clients its first request needs
(``bench.cold_child``). Counts, not time: the same venv gives the same answer on any machine.
A figure to watch (``python -X importtime`` says where modules come from), not a budget: the
tests hold only what no function may load (tests/unit/test_import_budget.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache

from bench.cold import fake_function_env
from bench.common import FUNCTIONS, ROOT, child_env

_BASELINE = (
    "import json, sys, botocore.session\n"
    "session = botocore.session.get_session()\n"
    "session.create_client('dynamodb'); session.create_client('kms')\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)
_FUNCTION = (
    "import json, sys\n"
    "from bench.cold_child import prepare\n"
    "prepare(sys.argv[1])\n"
    "for name in sys.argv[2:]: __import__(name)\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)


def _modules(code: str, logical_id: str, *args: str) -> frozenset[str]:
    env = child_env(fake_function_env(logical_id))
    answer = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if answer.returncode != 0:
        raise RuntimeError(f"{logical_id}'s cold start failed: {answer.stderr[-2000:]}")
    # The benchmark's own child modules are not the function's.
    return frozenset(n for n in json.loads(answer.stdout.splitlines()[-1]) if n.split(".")[0] != "bench")


@cache
def baseline_modules() -> frozenset[str]:
    """What a process that builds two botocore clients loads (every function needs that much)."""
    return _modules(_BASELINE, "TokenApiFunction")


@cache
def cold_start_modules(logical_id: str, *also: str) -> frozenset[str]:
    """Every module a function's cold start loads (its import and first request's clients), with
    ``also`` imported after it."""
    return _modules(_FUNCTION, logical_id, FUNCTIONS[logical_id], *also)


def main() -> int:
    baseline = baseline_modules()
    print(f"{'function':<28} {'modules':>8} {'beyond botocore':>16}")
    for logical_id in sorted(FUNCTIONS):
        loaded = cold_start_modules(logical_id)
        print(f"{logical_id:<28} {len(loaded):>8} {len(loaded - baseline):>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
