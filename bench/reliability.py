"""``make reliability``: the fault matrix, fuzzing, races and the live suites at bigger sizes.

Runs each suite as a pytest subprocess (``--junitxml`` for the counts), collects the reports the
suites write (``RELIABILITY_REPORT``: the fault matrix's rows; ``FUZZ_REPORT``: inputs per
route; ``RELIABILITY_CALLS``: UltraCart calls per test, recorded by this module loaded as a
pytest plugin), regenerates docs/RELIABILITY.md and exits non-zero if any test failed or any
installation was lost.

    python -m bench.reliability                 # the full sizes (< 10 minutes on 2 cores)
    python -m bench.reliability --quick         # CI sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHONPATH = [str(ROOT / "layers" / "ucoauth"), str(ROOT / "local"), str(ROOT)]
OUTPUT = ROOT / "docs" / "RELIABILITY.md"
COMMAND = "python -m bench.reliability"
OPERATIONS = ("callback", "refresh", "token", "revoke", "webhook", "device")
# Which test of tests/unit/test_fuzz_routes.py fuzzes which route (as it reports them).
FUZZ_TESTS = {
    "GET /install": "test_fuzz_install",
    "GET /install?session=": "test_fuzz_install_session",
    "POST /install-sessions": "test_fuzz_install_sessions",
    "GET /oauth/callback": "test_fuzz_callback",
    "GET /installed": "test_fuzz_installed",
    "$default (any other method and path)": "test_fuzz_default_route",
    "GET /tokens/{merchant_id}": "test_fuzz_token_api",
    "POST /webhooks/uninstall (unsigned)": "test_fuzz_webhook_unsigned",
    "POST /webhooks/uninstall (signed)": "test_fuzz_webhook_signed_payloads",
}


# -- as a pytest plugin (``-p bench.reliability``): UltraCart calls per test ------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any]:
    """After a test that used the UltraCart sandbox, record what the sandbox was asked."""
    result = yield
    path = os.environ.get("RELIABILITY_CALLS")
    sandbox = getattr(item, "funcargs", {}).get("sandbox")
    if not path or sandbox is None:
        return
    requests = sandbox.requests()
    row = {
        "nodeid": item.nodeid,
        "passed": result.excinfo is None,
        "ultracart": dict(Counter(str(r.endpoint) for r in requests)),
        "grants": dict(Counter(str(r.grant_type) for r in requests if r.endpoint == "token")),
        "workers": getattr(getattr(item, "module", None), "WORKERS", None),
    }
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")


# -- running the suites ---------------------------------------------------------------------------


@dataclass
class Suite:
    """One pytest run."""

    key: str
    title: str
    paths: list[str]
    env: dict[str, str]
    workers: int = 2
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    returncode: int = 0
    cases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.failures + self.errors

    @property
    def command(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items() if k.isupper() and "REPORT" not in k)
        cmd = f"pytest -q -n {self.workers} --dist loadgroup {' '.join(self.paths)}"
        return f"{env} {cmd}".strip()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment without AWS settings (the fixtures set fake ones), plus the project's paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHONPATH"))}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "PYTHONPATH": os.pathsep.join(PYTHONPATH),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(extra)
    return env


def run(suite: Suite, workdir: Path, calls: Path, timeout: float) -> None:
    junit = workdir / f"{suite.key}.xml"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bench.reliability"]
    args += ["-n", str(suite.workers), "--dist", "loadgroup", f"--junitxml={junit}", *suite.paths]
    print(f"[reliability] {suite.title}: {suite.command}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            args,
            cwd=ROOT,
            env=child_env({**suite.env, "RELIABILITY_CALLS": str(calls)}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        suite.returncode = done.returncode
        tail = done.stdout.strip().splitlines()[-1:] or ["(no output)"]
    except subprocess.TimeoutExpired:
        suite.returncode = -1
        tail = [f"timed out after {timeout:.0f}s"]
    suite.seconds = time.monotonic() - started
    read_junit(suite, junit)
    (workdir / f"{suite.key}.log").write_text("\n".join(tail))
    print(f"[reliability]   {tail[0]} ({suite.seconds:.0f}s)", flush=True)


def read_junit(suite: Suite, junit: Path) -> None:
    if not junit.exists():
        suite.errors = max(suite.errors, 1)
        return
    root = ET.parse(junit).getroot()
    for testsuite in root.iter("testsuite"):
        suite.tests += int(testsuite.get("tests", 0))
        suite.failures += int(testsuite.get("failures", 0))
        suite.errors += int(testsuite.get("errors", 0))
        suite.skipped += int(testsuite.get("skipped", 0))
    for case in root.iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        suite.cases.append(
            {
                "name": case.get("name", ""),
                "classname": case.get("classname", ""),
                "seconds": float(case.get("time", 0) or 0),
                "outcome": outcome,
            }
        )
    if suite.returncode not in (0, 1) and not suite.failed:
        suite.errors = 1  # pytest itself failed (usage, collection, timeout)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the page -------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{platform.system()} {platform.release()} ({platform.machine()}), {os.cpu_count()} CPUs: "
        f"{cpu}{memory}; Python {platform.python_version()}"
    )


def table(headers: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def render(
    suites: dict[str, Suite],
    matrix: list[dict[str, Any]],
    fuzz: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    sizes: dict[str, int],
    started: datetime,
    seconds: float,
    argv: list[str],
) -> str:
    lost_matrix = sum(int(r["lost"]) for r in matrix)
    failed = sum(s.failed for s in suites.values())
    lines = [
        "# Reliability",
        "",
        "Generated by `make reliability` (`" + " ".join([COMMAND, *argv]) + "`); do not edit by hand.",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}, {seconds / 60:.1f} minutes",
        f"- Machine: {machine()}",
        f"- Sizes: fault matrix {sizes['merchants']} installation(s) per cell, "
        f"fuzzing {sizes['fuzz']} examples per route, races {sizes['races']} workers",
        f"- Result: **{failed} failed test(s), {lost_matrix} installation(s) lost**"
        + (" (must be 0)" if failed or lost_matrix else ""),
        "",
        "Everything runs on 127.0.0.1: moto's server with `template.yaml`'s resources, the local",
        "UltraCart sandbox, the Lambda handlers invoked in-process (and refresh workers as separate",
        "processes where a crash or a race needs one). *Lost* is judged by UltraCart, not by our own",
        "table: a merchant who must reinstall while UltraCart (the sandbox) still holds a live grant",
        "the stack could have kept, an active installation whose stored refresh token is dead while",
        "another is live, or a grant still live after an uninstall. Installations that end in a state",
        "the rules forbid (active but broken now or an hour later, `reauthorization_required` without",
        "its event, an uninstall that kept its ciphertext or left its message behind) count too.",
        "A process killed between UltraCart's answer and its first write (a crash: the deadline rules",
        "keep a timeout out of that window) takes the rotated tokens with it; no design can keep",
        "them, so those cells report it apart (*crash*), not as lost. *Orphaned grants* are grants",
        "UltraCart issued that nobody stored, where no merchant lost anything (a callback killed",
        "after the exchange: the merchant installed again).",
        "",
        "## Summary",
        "",
    ]
    summary_rows = []
    for suite in suites.values():
        lost = lost_matrix if suite.key == "faults" else suite.failed
        summary_rows.append(
            [
                suite.title,
                suite.tests,
                suite.tests - suite.failed - suite.skipped,
                suite.failed,
                lost,
                f"{suite.seconds:.0f}",
                f"`{suite.command}`",
            ]
        )
    lines += table(["suite", "tests", "passed", "failed", "lost", "seconds", "command"], summary_rows)

    # Fuzzing.
    per_route: Counter[str] = Counter()
    for row in fuzz:
        per_route[str(row["route"])] += int(row["inputs"])
    fuzz_suite = suites.get("fuzz")
    fuzz_failed = {c["name"] for c in (fuzz_suite.cases if fuzz_suite else []) if c["outcome"] == "failed"}

    def route_failed(route: str) -> int:
        return int(FUZZ_TESTS.get(route, "") in fuzz_failed)

    lines += [
        "",
        "## Inputs fuzzed per route",
        "",
        "Hypothesis (tests/unit/test_fuzz_routes.py): no 5xx, no unhandled exception, nothing stored",
        "or queued when an input is rejected.",
        "",
    ]
    lines += table(
        ["route", "inputs", "failed"],
        [[route, n, route_failed(route)] for route, n in sorted(per_route.items())]
        + [["**total**", sum(per_route.values()), len(fuzz_failed)]],
    )

    # Fault matrix.
    lines += [
        "",
        "## Faults injected",
        "",
        "tests/integration/test_fault_matrix.py: each operation through its Lambda handler, under each",
        "fault; then the fault is removed and the system recovers the way it would in AWS (the queue",
        "redelivers after the worker's backoff, the DLQ is redriven, the planner runs again, the",
        "merchant starts the install again, or reinstalls when asked to), and every installation",
        "touched is checked: active with tokens UltraCart accepts now and an hour later,",
        "`reauthorization_required` with its event, or uninstalled without ciphertext. The overview",
        "names each cell's end state (before a merchant who was refused reinstalls). The cells below",
        "the first block vary time: a second caller arriving after the old fixed lease would have",
        "ended, an invocation that starts with too little time, slow DynamoDB and KMS, a duplicate",
        "after a dead holder's lease, and a function killed between any two of its calls.",
        "",
    ]
    matrix = sorted(matrix, key=lambda r: (int(r.get("rank", 0)), r["operation"]))
    cells = {(r["operation"], r["fault"]): r for r in matrix}
    faults_seen = list(dict.fromkeys(r["fault"] for r in matrix))
    lines += ["### Overview", ""]
    overview = []
    for fault in faults_seen:
        marks = []
        for operation in OPERATIONS:
            cell = cells.get((operation, fault))
            if cell is None:
                marks.append("n/a")
            elif cell["recovered"] and not cell["lost"]:
                marks.append(short_state(cell))
            else:
                marks.append(f"**LOST {cell['lost']}**" if cell["lost"] else "**FAILED**")
        overview.append([f"`{fault}`", *marks])
    lines += table(["fault", *OPERATIONS], overview)
    for operation in OPERATIONS:
        rows = [r for r in matrix if r["operation"] == operation]
        if not rows:
            continue
        lines += ["", f"### {operation}", ""]
        lines += table(
            [
                "fault",
                "outcome",
                "recovery",
                "end state (judged by UltraCart)",
                "lost",
                "crash",
                "orphaned grants",
            ],
            [
                [
                    f"`{r['fault']}`",
                    r["outcome"] + ("" if r["outcome"] == r["expected"] else f" (expected: {r['expected']})"),
                    r["recovery"],
                    r.get("end_state") or "-",
                    r["lost"] if not r["lost"] else f"**{r['lost']}**",
                    r.get("crash_lost", 0),
                    r.get("orphaned_grants", 0),
                ]
                for r in rows
            ],
        )
    problems = [r for r in matrix if r["problems"]]
    if problems:
        lines += ["", "### Problems found", ""]
        for r in problems:
            for merchant, problem in sorted(r["problems"].items()):
                lines.append(f"- {r['operation']} x `{r['fault']}` ({merchant}): {problem}")
    lines += ["", "### Legend", ""]
    legend = {r["fault"]: r["injected"] for r in matrix}
    lines += table(["fault", "what is injected"], [[f"`{f}`", d] for f, d in legend.items()])

    # Races and the live suites: UltraCart calls per test, as the sandbox counted them.
    by_test = {c["nodeid"].split("::")[-1]: c for c in calls}
    lines += [
        "",
        "## Races run",
        "",
        "tests/integration/test_races.py and the racing tests of test_refresh_live.py and",
        "test_uninstall_live.py: concurrent refreshes (threads and processes), installs and uninstalls",
        "of one merchant. UltraCart calls are what the sandbox received during the test.",
        "",
    ]
    race_rows = []
    for key in ("races", "refresh_live", "uninstall_live"):
        ran = suites.get(key)
        if ran is None:
            continue
        for case in ran.cases:
            if key != "races" and not any(w in case["name"] for w in ("race", "workers", "killed", "racing")):
                continue
            seen = by_test.get(case["name"], {})
            uc = ", ".join(f"{k} {v}" for k, v in sorted(seen.get("ultracart", {}).items())) or "0"
            workers = seen.get("workers") if key == "races" and "many" in case["name"] else None
            race_rows.append(
                [
                    f"`{case['name']}`",
                    workers if workers is not None else race_workers(case["name"]),
                    uc,
                    case["outcome"],
                    0 if case["outcome"] == "passed" else 1,
                ]
            )
    lines += table(["test", "workers", "UltraCart calls", "outcome", "lost"], race_rows)

    lines += ["", "## Live suites", ""]
    live_rows = []
    for key in ("refresh_live", "uninstall_live"):
        ran = suites.get(key)
        if ran is None:
            continue
        for case in sorted(ran.cases, key=lambda c: str(c["name"])):
            seen = by_test.get(case["name"], {})
            uc = ", ".join(f"{k} {v}" for k, v in sorted(seen.get("ultracart", {}).items())) or "0"
            live_rows.append(
                [f"`{case['classname'].rsplit('.', 1)[-1]}::{case['name']}`", uc, case["outcome"]]
            )
    lines += table(["test", "UltraCart calls", "outcome"], live_rows)
    return "\n".join(lines) + "\n"


def short_state(cell: dict[str, Any]) -> str:
    """The overview's word for a cell: the end state, judged by UltraCart, before any reinstall."""
    state = str(cell.get("end_state") or "")
    if cell.get("crash_lost"):
        return "crash: reinstall"
    for word, short in (
        ("uninstalled, revoke confirmed", "uninstalled, revoked"),
        ("uninstalled", "uninstalled"),
        ("reauthorization_required", "reauthorization"),
        ("active, its grant live", "active"),
        ("not installed", "not installed"),
    ):
        if state.startswith(word):
            return short
    return "recovered"


def race_workers(name: str) -> str:
    if "eight" in name:
        return "8 (4 threads, 4 processes)"
    if "two_installs" in name:
        return "2 installs"
    if "late_uninstall" in name:
        return "install + late uninstall"
    if "racing_an_uninstall" in name:
        return "refresh + uninstall"
    if "killed" in name:
        return "1 killed process + 1 retry"
    return "-"


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI sizes (a smoke run)")
    parser.add_argument("--fuzz-examples", type=int, default=None)
    parser.add_argument("--race-workers", type=int, default=None)
    parser.add_argument("--fault-merchants", type=int, default=None)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    sizes = {
        "fuzz": args.fuzz_examples or (60 if args.quick else 1000),
        "races": args.race_workers or (16 if args.quick else 50),
        "merchants": args.fault_merchants or (1 if args.quick else 3),
    }
    started = datetime.now(UTC)
    clock = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        work = Path(tmp)
        matrix_path, fuzz_path, calls_path = work / "faults.jsonl", work / "fuzz.jsonl", work / "calls.jsonl"
        suites = {
            s.key: s
            for s in [
                Suite(
                    "faults",
                    "Fault matrix",
                    ["tests/integration/test_fault_matrix.py"],
                    {"FAULT_MERCHANTS": str(sizes["merchants"]), "RELIABILITY_REPORT": str(matrix_path)},
                ),
                Suite(
                    "fuzz",
                    "Fuzzing",
                    ["tests/unit/test_fuzz_routes.py"],
                    {"FUZZ_EXAMPLES": str(sizes["fuzz"]), "FUZZ_REPORT": str(fuzz_path)},
                ),
                Suite(
                    "races",
                    "Races",
                    ["tests/integration/test_races.py"],
                    {"RACE_WORKERS": str(sizes["races"])},
                ),
                Suite("refresh_live", "Refresh (live)", ["tests/integration/test_refresh_live.py"], {}),
                Suite("uninstall_live", "Uninstall (live)", ["tests/integration/test_uninstall_live.py"], {}),
            ]
        }
        for suite in suites.values():
            run(suite, work, calls_path, timeout=900)
        page = render(
            suites,
            read_jsonl(matrix_path),
            read_jsonl(fuzz_path),
            read_jsonl(calls_path),
            sizes,
            started,
            time.monotonic() - clock,
            given,
        )
        matrix = read_jsonl(matrix_path)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page)
    failed = sum(s.failed for s in suites.values())
    lost = sum(int(r["lost"]) for r in matrix)
    minutes = (time.monotonic() - clock) / 60
    print(f"[reliability] wrote {args.output}: {failed} failed, {lost} lost, {minutes:.1f} min", flush=True)
    if not matrix:
        print("[reliability] the fault matrix reported nothing", flush=True)
        return 1
    return 1 if failed or lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
