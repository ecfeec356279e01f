"""``make bench``: run every benchmark, print one summary table, write docs/BENCHMARKS.md.

Order matters on a small machine: the cold starts run alone (they are timed against each
other), the planner's 100,000-item load runs next to the call counts and memory runs (which
are not timed), and the pacing run goes last, alone, with whatever time is left: a short
unpaced burst first measures what the harness can do on this machine, R is set well inside it,
and the number of due installations is sized to the time left.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

from bench import pacing
from bench.common import ROOT, child_env, progress, use_project_paths


class _QuietStderr(io.TextIOBase):
    """stderr without the sandbox's "Request timed out" lines (idle keep-alive connections)."""

    def __init__(self, target: TextIO) -> None:
        self._target = target

    def write(self, text: str) -> int:
        if "Request timed out" not in text:
            self._target.write(text)
        return len(text)

    def flush(self) -> None:
        self._target.flush()


IMPORT_RUNS = 3


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=11, help="cold-start rounds (median of these; >= 11)")
    parser.add_argument("--pacing-count", type=int, default=2000, help="due installations for the pacing run")
    parser.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help="R, UltraCart's rate and the pace, per second: the most the pacing run uses (it takes "
        f"{pacing.CAPACITY_SHARE * 100:.0f}%% of the harness's measured capacity when that is lower)",
    )
    parser.add_argument("--latency-ms", type=int, default=20, help="the sandbox's latency per call")
    parser.add_argument(
        "--budget",
        type=float,
        default=285.0,
        help="seconds the whole run aims at (a pacing run of the minimum size may go past it)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement as JSON")
    return parser.parse_args(argv)


def _max_receive_count(template: dict[str, Any]) -> int | None:
    policy = template["Resources"]["RefreshQueue"]["Properties"].get("RedrivePolicy", {})
    value = policy.get("maxReceiveCount")
    return int(value) if value is not None else None


def _shared_session() -> bool | None:
    """Whether ucoauth.adapters.aws builds its clients from one boto3 session (same loader) or not."""
    import ucoauth
    from ucoauth.adapters import aws

    try:
        ucoauth.reset()
        first, second = aws.client("dynamodb"), aws.client("kms")
        return bool(getattr(first, "_loader", None) is getattr(second, "_loader", object()))
    finally:
        ucoauth.reset()


def main(argv: list[str]) -> int:
    started = time.monotonic()
    args = _arguments(argv)
    use_project_paths()
    from bench import memory

    launcher = memory.Launcher()  # first, while this process is still small (see bench.launcher)
    table_out = sys.stdout
    # The handlers log to stdout (Powertools); the one table goes to the real stdout at the end.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    sys.stderr = _QuietStderr(sys.stderr)
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    from bench import calls, cold, instructions, machine, report
    from bench.common import live_stack, set_process_aws_env
    from bench.planner import PlannerResult

    described = machine.describe()
    progress(f"cold start: {len(cold.candidates())} candidates x {args.rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as scratch:
        cold_results = cold.measure(args.rounds, Path(scratch))
    functions = [r for r in cold_results if r.candidate.kind == "function"]
    slowest = max(functions, key=lambda r: float(r.as_json()["ready_median"]))
    import_extra = cold.import_difference(slowest.candidate.child)
    import_rows = cold.import_table(runs=IMPORT_RUNS)

    progress("planner: 100,000 installations in mock_aws (in the background)")
    planner_process = subprocess.Popen(
        [sys.executable, "-m", "bench.planner"],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    set_process_aws_env()
    shared = _shared_session()
    with live_stack() as live:
        progress("calls per operation")
        call_rows = calls.measure(live)
        progress("memory: one request per function, fresh processes")
        memory_results = memory.measure(live, launcher)
        planner_out, planner_err = planner_process.communicate(timeout=300)
        if planner_process.returncode != 0:
            raise RuntimeError(f"the planner benchmark failed:\n{planner_err[-2000:]}")
        planner_data = json.loads(planner_out.strip().splitlines()[-1])
        names = {f.name for f in dataclasses.fields(PlannerResult)}
        planner_result = PlannerResult(**{k: v for k, v in planner_data.items() if k in names})
        # Calibrated once the planner's load is done, so it has the machine the pacing run has.
        calibration = pacing.calibrate(live, configured_rate=args.rate, latency_ms=args.latency_ms)
        rate = calibration.rate
        left = args.budget - (time.monotonic() - started)
        count = pacing.affordable_count(
            args.pacing_count, rate, left - 10, seed_seconds_each=calibration.seed_seconds_each
        )
        note = f"{count:,} due installations were seeded"
        if count < args.pacing_count:
            each_ms = calibration.seed_seconds_each * 1000
            note += (
                f" (fewer than the {args.pacing_count:,} asked for: {left:.0f} s of the "
                f"{args.budget:.0f} s budget were left, and seeding plus a paced run take "
                f"~{each_ms:.0f} ms (seeding, as measured in the calibration) + 1/R each)"
            )
        note += "."
        prepared = pacing.prepare(live, count=count, rate=rate, latency_ms=args.latency_ms)
        left = args.budget - (time.monotonic() - started)
        # A run of the minimum size gets the time it needs (its pacing plus half again and the
        # planner's start), even past the bench's budget: cutting it short would measure nothing.
        pacing_result = pacing.run(live, prepared, time_budget=max(left - 15, 1.5 * count / rate + 30))
        receive_count = _max_receive_count(dict(live.resources.template))
    launcher.close()

    # Last and outside the budget: callgrind needs a few minutes, and its counts do not depend on
    # what else runs (both cores at once).
    instructions_note = ""
    counts: dict[str, int] | None = None
    if instructions.available():
        progress("cold start: instructions per candidate (callgrind)")
        counts = instructions.measure(instructions.wanted())
    else:
        instructions_note = "valgrind is not installed (Debian: apt-get install valgrind)"

    results = report.Results(
        machine=described,
        rounds=args.rounds,
        cold=cold_results,
        import_function=slowest.candidate.label,
        import_extra=import_extra,
        shared_session=shared,
        layer_compiles=cold.layer_build_compiles_bytecode(),
        calls=call_rows,
        planner=planner_result,
        pacing=pacing_result,
        pacing_note=note,
        calibration=calibration,
        max_receive_count=receive_count,
        memory=memory_results,
        imports=import_rows,
        import_runs=IMPORT_RUNS,
        instructions=counts,
        instructions_note=instructions_note,
    )
    results.elapsed_seconds = time.monotonic() - started
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report.markdown(results))
    if args.json is not None:
        args.json.write_text(json.dumps(report.raw(results), indent=2, default=str))
    print(report.text_table(results), file=table_out, flush=True)
    progress(f"wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
