"""Peak RSS of one function handling one request: ``python -m bench.memory_child LOGICAL_ID EVENT``.

A fresh process loads the handler the way Lambda does and handles the event (a JSON file)
against moto's server and the sandbox named in its environment, then prints
``{"maxrss_kb": ..., "outcome": ...}`` (``ru_maxrss`` is in kilobytes on Linux).
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any


def main(logical_id: str, event_path: Path) -> None:
    from tests.support.lambdas import invoke

    event = json.loads(event_path.read_text())
    if logical_id == "baseline":
        import boto3

        session = boto3.session.Session()
        session.client("dynamodb")
        session.client("kms")
        outcome: Any = "clients built"
    else:
        result = invoke(logical_id, event)
        outcome = result.get("statusCode", result) if isinstance(result, dict) else result
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The kernel's own peak of this process's memory since exec, as a cross-check.
    hwm_kb = 0
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm_kb = int(line.split()[1])
    sys.stderr.write(json.dumps({"maxrss_kb": maxrss_kb, "hwm_kb": hwm_kb, "outcome": str(outcome)}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
