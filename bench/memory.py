"""Peak RSS of each function handling one request, in a fresh process per run (median of 3).

``baseline`` is an interpreter that imports boto3 and builds two clients, for scale.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.common import FUNCTIONS, ROOT, Live, child_env, median, wire_process

LAMBDA_MB = 128
RUNS = 3


@dataclass
class MemoryResult:
    logical_id: str
    rss_mb: list[float] = field(default_factory=list)
    hwm_mb: list[float] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)

    @property
    def median_mb(self) -> float:
        return median(self.rss_mb)

    def as_json(self) -> dict[str, Any]:
        return {
            "logical_id": self.logical_id,
            "median_mb": self.median_mb,
            "runs_mb": self.rss_mb,
            "vmhwm_median_mb": median(self.hwm_mb),
            "outcomes": self.outcomes,
            "share_of_128": self.median_mb / LAMBDA_MB,
        }


class Launcher:
    """The small process that forks the memory children (see ``bench.launcher``)."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.launcher"],
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps({"argv": argv, "env": env, "cwd": str(ROOT)}) + "\n")
        self._process.stdin.flush()
        answer: dict[str, Any] = json.loads(self._process.stdout.readline())
        return answer

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            self._process.wait(timeout=10)


def _run(
    launcher: Launcher, logical_id: str, event: dict[str, Any], env: dict[str, str], scratch: Path
) -> tuple[float, float, str]:
    path = scratch / f"{logical_id}.json"
    path.write_text(json.dumps(event))
    answer = launcher.run([sys.executable, "-m", "bench.memory_child", logical_id, str(path)], child_env(env))
    lines = [line for line in answer["stderr"].splitlines() if line.startswith('{"maxrss_kb"')]
    if answer["returncode"] != 0 or not lines:
        raise RuntimeError(f"memory run of {logical_id} failed:\n{answer['stderr'][-2000:]}")
    found = json.loads(lines[-1])
    return found["maxrss_kb"] / 1024, found["hwm_kb"] / 1024, str(found["outcome"])


def measure(live: Live, launcher: Launcher, runs: int = RUNS) -> list[MemoryResult]:
    results = [MemoryResult("baseline")] + [MemoryResult(logical_id) for logical_id in FUNCTIONS]
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        for run in range(runs):
            live.reset()  # every round starts from the same data
            services = wire_process(live.function_env("RefreshWorkerFunction"))
            for result in results:
                if result.logical_id == "baseline":
                    event: dict[str, Any] = {}
                    env = live.function_env("RefreshWorkerFunction")
                else:
                    event = scenarios.one_request(
                        services, live, result.logical_id, f"{run}{len(result.rss_mb)}"
                    )
                    env = live.function_env(result.logical_id)
                megabytes, hwm, outcome = _run(launcher, result.logical_id, event, env, Path(scratch))
                result.rss_mb.append(megabytes)
                result.hwm_mb.append(hwm)
                result.outcomes.append(outcome)
    return results
