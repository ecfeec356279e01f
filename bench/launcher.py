"""A small process that starts the memory children: ``python -m bench.launcher``.

Linux carries a process's peak RSS across fork and exec (``ru_maxrss`` of a child starts at
the size of whatever forked it), so a child of the benchmark, which holds moto's clients and
the sandbox, would report the benchmark's peak instead of its own. This launcher is started
first, while the benchmark is still small, and forks every memory child itself. It reads one
JSON request per line (``argv``, ``env``, ``cwd``) and answers one JSON line with the child's
return code, stdout and stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        answer = subprocess.run(
            request["argv"],
            env=request["env"],
            cwd=request["cwd"],
            capture_output=True,
            text=True,
            check=False,
            timeout=request.get("timeout", 120),
        )
        reply = {"returncode": answer.returncode, "stdout": answer.stdout, "stderr": answer.stderr}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
