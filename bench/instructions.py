"""Instructions per cold start, counted by valgrind's callgrind: the deterministic cold-start ratio.

Wall-clock medians on a small shared machine move by several percent from one run to the next
(other processes, frequency scaling, the page cache), which is as much as the margin the target
leaves. The number of instructions one cold start executes does not: with the same venv,
``PYTHONHASHSEED=0`` and the same environment, two runs agree to a few parts in a million. The
bench judges the target on this ratio and reports the wall-clock medians beside it. It does not
count the kernel's work (``stat`` and ``read`` of each imported file), which the wall clock does:
fewer modules also matter (python -m bench.modules counts them).

``python -m bench.instructions [candidates]`` prints the table alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.cold import FLOOR, TARGET_RATIO, Candidate, candidates, fake_function_env
from bench.common import ROOT, child_env

_COLLECTED = re.compile(r"Collected : (\d+)")


def available() -> bool:
    return shutil.which("valgrind") is not None


def _environment(candidate: Candidate) -> dict[str, str]:
    env = child_env(fake_function_env(candidate.logical_id))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as deployed: the layer's build compiles bytecode
    env["PYTHONHASHSEED"] = "0"  # set iteration order, and so the work, the same on every run
    return env


def count(candidate: Candidate, *, python: str = sys.executable) -> int:
    """Instructions of one cold start of ``candidate`` (after one run that writes the .pyc)."""
    env = _environment(candidate)
    command = [python, "-m", "bench.cold_child", candidate.child]
    subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=True, timeout=120)
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as scratch:
        answer = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={Path(scratch) / 'out'}", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
    found = _COLLECTED.search(answer.stderr)
    if answer.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind of {candidate.key} failed:\n{answer.stderr[-2000:]}")
    return int(found.group(1))


def measure(listed: list[Candidate], *, workers: int = 2) -> dict[str, int]:
    """Instructions per candidate key (the floor's included when listed); runs ``workers`` at once:
    counts do not depend on what else the machine does."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        counted = list(pool.map(count, listed))
    return {candidate.key: instructions for candidate, instructions in zip(listed, counted, strict=True)}


def wanted() -> list[Candidate]:
    """The floor, the peers and every function run (not the no-pyc and diagnostic rows)."""
    return [c for c in candidates() if c.kind in ("floor", "peer", "function")]


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench.common import use_project_paths

    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("candidates", nargs="*", help="candidate keys (default: floor, peers, functions)")
    args = parser.parse_args(argv)
    if not available():
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    use_project_paths()
    listed = wanted()
    if args.candidates:
        listed = [c for c in listed if c.key == FLOOR or c.key in args.candidates]
    counts = measure(listed)
    floor = counts[FLOOR]
    print(f"{'candidate':<26} {'instructions (M)':>17} {'x floor':>8}")
    for candidate in listed:
        print(
            f"{candidate.key:<26} {counts[candidate.key] / 1e6:>17.1f} {counts[candidate.key] / floor:>8.3f}"
        )
    print(f"(callgrind, one run each, PYTHONHASHSEED=0; target <= {TARGET_RATIO}x the floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
