"""Refreshes in separate processes (``tests.support.refresh_process``), for races and crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_processes(
    env: dict[str, str], merchant_id: str, count: int, start_at: float, mode: str = "normal"
) -> list[subprocess.Popen[str]]:
    proc_env = {**env, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("layers/ucoauth", "local", "."))}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.refresh_process", merchant_id, str(start_at), mode],
            cwd=ROOT,
            env=proc_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(count)
    ]


def results_of(processes: list[subprocess.Popen[str]]) -> list[str]:
    out = []
    for process in processes:
        stdout, _ = process.communicate(timeout=60)
        lines = [line for line in stdout.splitlines() if line.startswith('{"result"')]
        out.append(json.loads(lines[-1])["result"] if lines else f"exit:{process.returncode}")
    return out
