"""The summary table (stdout) and docs/BENCHMARKS.md, both from one set of results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.calls import CallRow
from bench.cold import FLOOR, TARGET_RATIO, ColdResult, ImportRow
from bench.cold_child import FUNCTION_CLIENTS
from bench.memory import LAMBDA_MB, MemoryResult
from bench.pacing import CAPACITY_SHARE, TARGET_FRACTION, Calibration, PacingResult
from bench.planner import ADMIN_TARGET, PlannerResult
from bench.planner import TARGET as PLANNER_TARGET


@dataclass
class Results:
    machine: dict[str, str]
    rounds: int
    cold: list[ColdResult]
    import_function: str
    import_extra: list[tuple[str, float]]
    shared_session: bool | None
    layer_compiles: bool
    calls: list[CallRow]
    planner: PlannerResult
    pacing: PacingResult
    pacing_note: str
    max_receive_count: int | None
    memory: list[MemoryResult]
    elapsed_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    imports: list[ImportRow] = field(default_factory=list)
    import_runs: int = 0
    calibration: Calibration | None = None
    # Instructions per cold start by candidate key (callgrind); None when valgrind is missing.
    instructions: dict[str, int] | None = None
    instructions_note: str = ""

    # -- derived ---------------------------------------------------------------------------

    def cold_by_key(self) -> dict[str, ColdResult]:
        return {result.candidate.key: result for result in self.cold}

    def floor_ready(self) -> float:
        return float(self.cold_by_key()[FLOOR].as_json()["ready_median"])

    def ratio(self, result: ColdResult, metric: str = "ready_median") -> float:
        floor = float(self.cold_by_key()[FLOOR].as_json()[metric])
        return float(result.as_json()[metric]) / floor

    def instruction_ratio(self, result: ColdResult) -> float | None:
        """Instructions of ``result``'s cold start over the floor's: what the target is judged on."""
        counts = self.instructions or {}
        if result.candidate.key not in counts or FLOOR not in counts:
            return None
        return counts[result.candidate.key] / counts[FLOOR]

    def target_ratio(self, result: ColdResult) -> float:
        """The ratio the target is judged on: instructions when counted, else wall-clock medians."""
        counted = self.instruction_ratio(result)
        return self.ratio(result) if counted is None else counted


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


NOT_MEASURED = "not measured"
CAPACITY_SHARE_TEXT = f"{CAPACITY_SHARE:.0%}"


def _verdict(ok: bool | None) -> str:
    return "info" if ok is None else ("ok" if ok else "MISS")


def _cut_off_text(p: PacingResult) -> str:
    """What a pacing run cut off by the bench's own time budget did (not a measurement)."""
    return (
        f"{NOT_MEASURED}: the bench's time budget ended the run after {p.cpu.get('wall', 0.0):.0f} s "
        f"({p.refreshed:,} of {p.seeded:,} refreshed, {p.steady_throughput:.1f}/s while refreshing)"
    )


def pacing_rows(p: PacingResult, calibration: Calibration | None) -> list[tuple[str, str, str, str, str]]:
    """The summary rows of the pacing run: a run the bench cut off measures neither its rate nor
    what it left unrefreshed, so those rows say "not measured" (neither ok nor MISS)."""
    rows: list[tuple[str, str, str, str, str]] = []
    if calibration is not None:
        rows.append(
            (
                "pacing",
                f"harness capacity, unpaced ({calibration.burst} refreshes): R chosen",
                f"{calibration.capacity:.1f}/s: R = {calibration.rate:g}/s",
                f"R <= {calibration.configured_rate:g}/s",
                "info",
            )
        )
    what = f"sustained throughput / R ({p.seeded:,} due, R = {p.rate:g}/s)"
    if p.measured:
        rows.append(
            (
                "pacing",
                what,
                f"{p.fraction:.2f} ({p.refreshed:,} in {p.sustained_seconds:.0f} s)",
                f">= {TARGET_FRACTION:.2f}",
                _verdict(p.fraction >= TARGET_FRACTION),
            )
        )
    else:
        rows.append(("pacing", what, _cut_off_text(p), f">= {TARGET_FRACTION:.2f}", NOT_MEASURED))
    rows.append(
        (
            "pacing",
            "429s from the sandbox",
            str(p.too_many_requests),
            "0",
            _verdict(p.too_many_requests == 0),
        )
    )
    unrefreshed = p.seeded - p.refreshed
    if p.measured:
        rows.append(
            (
                "pacing",
                "due installations the run left unrefreshed",
                f"{unrefreshed:,} ({p.deferred:,} acknowledged, {p.dead_lettered:,} dead-lettered)",
                "0",
                _verdict(unrefreshed == 0),
            )
        )
    else:
        rows.append(
            (
                "pacing",
                "due installations the run left unrefreshed",
                f"{NOT_MEASURED} ({p.dead_lettered:,} dead-lettered before the cut-off)",
                "0",
                NOT_MEASURED if p.dead_lettered == 0 else "MISS",
            )
        )
    return rows


def _calls_text(row: CallRow) -> str:
    return f"{sum(row.aws.values())} AWS + {len(row.ultracart)} UltraCart"


def summary_rows(results: Results) -> list[tuple[str, str, str, str, str]]:
    """(area, what, measured, target, verdict) for every checked number."""
    rows: list[tuple[str, str, str, str, str]] = []
    for result in results.cold:
        if result.candidate.kind != "function":
            continue
        ratio = results.target_ratio(result)
        counted = results.instruction_ratio(result)
        measured = (
            f"{_ms(result.as_json()['ready_median'])} ms = {results.ratio(result):.2f}x floor "
            f"(best {results.ratio(result, 'ready_min'):.2f}x)"
        )
        if counted is not None:
            measured = f"{counted:.3f}x floor in instructions; {measured}"
        rows.append(
            (
                "cold start",
                result.candidate.label,
                measured,
                f"<= {TARGET_RATIO:.2f}x floor",
                _verdict(ratio <= TARGET_RATIO),
            )
        )
    for row in results.calls:
        if row.ok is None:
            continue
        rows.append(("calls", row.operation, _calls_text(row), row.budget_text, _verdict(row.ok)))
    planner = results.planner
    rows.append(
        (
            "planner",
            f"plan(): items read / due ({planner.installations:,} installations, {planner.due:,} due)",
            f"{planner.ratio:.2f} ({planner.scanned:,} read, {planner.planned:,} queued)",
            f"<= {PLANNER_TARGET:.2f}",
            _verdict(planner.ratio <= PLANNER_TARGET),
        )
    )
    rows.append(
        (
            "planner",
            "due_merchants(): every due one, items read / due",
            f"{planner.all_ratio:.2f} ({planner.all_scanned:,} / {planner.due:,})",
            f"<= {PLANNER_TARGET:.2f}",
            _verdict(planner.all_ratio <= PLANNER_TARGET),
        )
    )
    rows.append(
        (
            "admin",
            f"list 50 of {planner.installations:,} installations (status=active): items read",
            f"{planner.admin_read:,} ({planner.admin_queries} query, {planner.admin_items} listed)",
            f"<= {ADMIN_TARGET}",
            _verdict(0 < planner.admin_read <= ADMIN_TARGET),
        )
    )
    rows.append(
        (
            "admin",
            "list 50, no status (one status after the other): items read",
            f"{planner.admin_all_read:,} ({planner.admin_all_queries} queries)",
            f"<= {ADMIN_TARGET}",
            _verdict(0 < planner.admin_all_read <= ADMIN_TARGET),
        )
    )
    rows += pacing_rows(results.pacing, results.calibration)
    for memory in results.memory:
        if memory.logical_id == "baseline":
            continue
        rows.append(
            (
                "memory",
                memory.logical_id,
                f"{memory.median_mb:.0f} MB ({memory.median_mb / LAMBDA_MB:.0%} of {LAMBDA_MB})",
                f"<= {LAMBDA_MB} MB",
                _verdict(memory.median_mb <= LAMBDA_MB),
            )
        )
    return rows


def text_table(results: Results) -> str:
    """The one table ``make bench`` prints."""
    header = ("area", "what", "measured", "target", "")
    rows = [header, *summary_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    machine = results.machine
    lines.append("")
    lines.append(
        f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}; "
        f"boto3 {machine['pkg:boto3']}, powertools {machine['pkg:aws-lambda-powertools']}, "
        f"requests {machine['pkg:requests']}; "
        f"{results.elapsed_seconds:.0f} s; details in docs/BENCHMARKS.md"
    )
    return "\n".join(lines)


# -- markdown -------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def _machine(results: Results) -> str:
    m = results.machine
    packages = ", ".join(f"{k.removeprefix('pkg:')} {v}" for k, v in m.items() if k.startswith("pkg:"))
    return (
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), {m['os']}, Python {m['python']} "
        f"(the venv's); load average at the start {m['load']} (1/5/15 min: other work on the machine "
        f"makes the cold-start medians noisier, the interleaved ratios less so). Packages: {packages}."
    )


def _cold_section(results: Results) -> str:
    rows = []
    for result in results.cold:
        data = result.as_json()
        rows.append(
            [
                data["label"],
                _ms(data["ready_median"]),
                f"{results.ratio(result):.2f}",
                f"{_ms(data['ready_min'])}, {results.ratio(result, 'ready_min'):.2f}",
                _ms(data["spawn_to_ready_median"]),
                f"{results.ratio(result, 'spawn_to_ready_median'):.2f}",
                _ms(data["wall_median"]),
                _ms(data["import_median"]),
                _ms(data["clients_median"]),
                _instructions_cell(results, result),
            ]
        )
    table = _table(
        [
            "candidate",
            "ready (ms)",
            "x floor",
            "best ready (ms), x floor",
            "spawn to ready (ms)",
            "x floor",
            "process wall (ms)",
            "imports (ms)",
            "clients (ms)",
            "instructions (M), x floor",
        ],
        rows,
    )
    extra = ", ".join(f"{name} {ms:.1f}" for name, ms in results.import_extra[:10])
    clients = "; ".join(f"{directory}: {', '.join(names)}" for directory, names in FUNCTION_CLIENTS.items())
    return f"""## 1. Cold-ready time

A fresh interpreter per run (`python -m bench.cold_child`), with each function's environment
from the template (fake table, key, queues and secret; fake credentials; nothing reaches the
network). A function run imports `functions/<dir>/app.py` the way Lambda does and builds every
client its first, typical request needs: the calls of section 2 (browser: a callback, and
`oauth_browser@install` its other first request, `/install`; token API: a stored token; webhook:
a signed uninstall; planner: a schedule; workers: one record; admin: one installation; device
flow: a start; device worker: a pending poll), that is {clients}.
**ready** is the child's own `perf_counter` from its first line (**best**: the fastest of the
runs, the one least slowed down by the rest of the machine); **spawn to ready** adds the
interpreter's start-up; **process wall** is the whole
subprocess (the child exits with `os._exit` after reporting, since a Lambda environment is
frozen, never finalized). **imports** / **clients** split *ready* (functions import botocore
lazily, so its import falls in their clients phase; they build botocore clients from botocore's own
session, without importing boto3, while the floor imports boto3). Medians of {results.rounds} runs
per candidate, run round-robin (one discarded warm-up round). **instructions** is one more run
of each under valgrind's callgrind (`python -m bench.instructions`, `PYTHONHASHSEED=0`): the
number of instructions from the interpreter's start to ready, which repeats to a few parts in a
million where the wall-clock medians move by several percent from one bench to the next on a
small shared machine. Target: every function <= {TARGET_RATIO:.2f}x the floor, judged on
instructions{_instructions_missing(results)}.

{table}

{_awscrt_note(results)}The *without .pyc* rows run the same code from a copy of the
layer's packages without bytecode (`PYTHONDONTWRITEBYTECODE`): `/opt` is read-only in Lambda, so
a layer shipped without `.pyc` (SAM's python builder does not compile) is compiled at every cold
start. {_bytecode_note(results)} The *diagnostic* rows build the worker's five clients from one
boto3 session and from one session each.

Where {results.import_function}'s imports go beyond the floor's (median self import time, ms,
`-X importtime`): {extra}.

{_import_table(results)}"""


def _instructions_cell(results: Results, result: ColdResult) -> str:
    counts = results.instructions or {}
    ratio = results.instruction_ratio(result)
    if result.candidate.key not in counts or ratio is None:
        return "not counted"
    return f"{counts[result.candidate.key] / 1e6:.0f}, {ratio:.3f}"


def _instructions_missing(results: Results) -> str:
    if results.instructions is not None:
        return ""
    return f" (not counted in this run: {results.instructions_note}; the wall-clock ratios stand in)"


def _import_table(results: Results) -> str:
    if not results.imports:
        return ""
    rows = [
        [row.label, f"{row.app_ms:.0f}", ", ".join(f"{name} {ms:.0f}" for name, ms in row.heaviest)]
        for row in results.imports
    ]
    table = _table(["function", "app.py (ms)", "heaviest imports (cumulative ms)"], rows)
    return f"""What each function imports, by cumulative import time (`-X importtime`, medians of
{results.import_runs} runs; importtime's own bookkeeping inflates every number, so compare them with
each other, not with the table above): `app.py` as a whole, then its heaviest direct imports and
what the clients phase imports (`botocore.session`, `requests`). The first Powertools module
imported carries its root package (`Logger`, `Metrics`, `Tracer`).

{table}
"""


def _bytecode_note(results: Results) -> str:
    if results.layer_compiles:
        return (
            "This template's layer build compiles its bytecode (`layers/ucoauth/Makefile`), so "
            "these rows show what that saves."
        )
    return "This template's layer build ships no bytecode, so these rows are what Lambda runs."


def _awscrt_note(results: Results) -> str:
    version = results.machine.get("pkg:awscrt", "not installed")
    if version == "not installed":
        return ""
    return (
        f"awscrt {version} is installed in this venv (Lambda's runtime has none); botocore imports "
        "it when present, which adds ~20 ms to every candidate, the floor included, so without it "
        "every ratio is a little higher (up to ~0.1 in a separate run with awscrt hidden).\n\n"
    )


def _calls_section(results: Results) -> str:
    rows = []
    for row in results.calls:
        aws = ", ".join(f"{name} x{count}" for name, count in sorted(row.aws.items())) or "none"
        ultracart = ", ".join(row.ultracart) or "none"
        rows.append(
            [
                row.operation,
                f"{sum(row.aws.values())}: {aws}",
                f"{len(row.ultracart)}: {ultracart}",
                row.budget_text,
                _verdict(row.ok),
            ]
        )
    table = _table(["operation", "AWS calls", "UltraCart calls", "budget (AWS + UltraCart)", ""], rows)
    return f"""## 2. Calls per operation

The counting of `tests/integration/test_call_counts.py` (which asserts these budgets in CI):
botocore `before-call` hooks on the package's own clients (`tests.support.calls.AwsCallCounter`)
and the UltraCart sandbox's request log, against moto's server and the sandbox over real HTTP,
each operation through its real handler (`tests.support.lambdas.invoke`).

{table}
"""


def _planner_section(results: Results) -> str:
    p = results.planner
    table = _table(
        ["read", "returned", "items read (sum of ScannedCount)", "queries", "read / due", "time in moto"],
        [
            [
                "`Refresher.plan` (the planner)",
                f"{p.planned:,}",
                f"{p.scanned:,}",
                str(p.queries),
                f"{p.ratio:.2f}",
                f"{p.plan_seconds:.1f} s",
            ],
            [
                "`InstallationReads.due_merchants` (every due one)",
                f"{p.all_due:,}",
                f"{p.all_scanned:,}",
                str(p.all_queries),
                f"{p.all_ratio:.2f}",
                "",
            ],
        ],
    )
    capped = ""
    if p.planned < p.due:
        capped = (
            f"\nThe planner returns {p.planned:,} of the {p.due:,} due: no more than the template's pace "
            "allows before its next run (the rest stays in the index, most overdue first next time). "
            f"Each of the {p.queries} shard queries may read up to that many, since the most overdue can "
            f"be in any shard: {p.scanned / max(1, p.planned):.1f} items read per item queued, bounded by "
            "shards x limit and independent of the number of installations.\n"
        )
    return f"""## 3. Planner read cost

{p.installations:,} active installations in moto's in-process `mock_aws` (written with
BatchWriteItem, 25 at a time, in {p.load_seconds:.0f} s), {p.due:,} of them
({p.due / p.installations:.0%}) due now and the rest later today, read through the sparse,
sharded `DueIndex` with the planner's settings from the template. Target: items read / items
due <= {PLANNER_TARGET}. (Time is moto's: it evaluates a query by looking at every item; DynamoDB reads
only the matching part of each shard.)

{table}
{capped}

The admin API's `GET /admin/installations?status=active&limit=50` over the same table read
{p.admin_read:,} items in {p.admin_queries} query of `StatusIndex` ({p.admin_seconds * 1000:.0f} ms
in moto); without `status` it reads each status in turn, {p.admin_all_read:,} items in
{p.admin_all_queries} queries. A page reads what it returns, never a Scan. `GET /admin/stats`
counts each status with `Select=COUNT` queries, which read the whole status partition of the
index: at {p.installations:,} installations of about 200 bytes each in `StatusIndex` that is
about 20 MB, some 20 one-megabyte pages and about 2,500 read units (eventually consistent)
per call, so it is for an operator's screen (`ucoauth watch` every 5 s costs about 1.8
million read units an hour), not for a tight loop.
"""


def _one_at_a_time(scope: str | None) -> str:
    """Which calls the sandbox refuses to overlap, in words."""
    if scope == "application":
        return 'for the whole application, as UltraCart documents (`concurrency_scope="application"`)'
    if scope == "merchant":
        return 'per merchant (`concurrency_scope="merchant"`)'
    return "or more (`concurrency_scope=None`)"


def _pacing_section(results: Results) -> str:
    p = results.pacing
    handled = sum(int(w.get("records", 0)) for w in p.workers)
    bounced = p.sent_back
    handler_seconds = p.worker_total("handler_seconds")
    calls = p.aws_calls()
    windows = p.per_window[1:-1] if len(p.per_window) > 2 else p.per_window
    full = sum(1 for count in windows if count >= p.rate)
    table = _table(
        [
            "due",
            "queued",
            "refreshed",
            "acknowledged unrefreshed",
            "dead-lettered",
            "last refresh after",
            "sustained",
            "/ R",
            "while refreshing",
            "429s",
            "other errors",
        ],
        [
            [
                f"{p.seeded:,}",
                f"{p.planned:,}",
                f"{p.refreshed:,}",
                f"{p.deferred:,}",
                f"{p.dead_lettered:,}",
                f"{p.end_to_end_seconds:.1f} s",
                f"{p.throughput:.1f}/s" if p.measured else NOT_MEASURED,
                f"{p.fraction:.2f}" if p.measured else NOT_MEASURED,
                f"{p.steady_throughput:.1f}/s",
                str(p.too_many_requests),
                str(p.other_failures),
            ]
        ],
    )
    call_text = ", ".join(f"{name} {count:,}" for name, count in sorted(calls.items()))
    cpu = p.cpu
    wall = cpu.get("wall", 0.0)
    low, high = min(windows, default=0), max(windows, default=0)
    middle = sorted(windows)[len(windows) // 2] if windows else 0
    record_ms = 1000 * handler_seconds / max(1, handled)
    refresh_ms = 1000 * handler_seconds / max(1, p.refreshed)
    capacity = p.concurrency * p.refreshed / max(handler_seconds, 1e-9)
    receive = (
        f"maxReceiveCount {results.max_receive_count}" if results.max_receive_count else "its redrive policy"
    )
    return f"""## 4. Refresh pacing

The sandbox answers one call at a time {_one_at_a_time(p.concurrency_scope)}, leaks
R = {p.rate:g} calls/s (429 beyond) and takes {p.latency_ms} ms per call; the pace is
`REFRESH_PACE_LIMIT` = {p.rate:g} per `REFRESH_PACE_WINDOW_SECONDS` = 1. {results.pacing_note}
The planner handler ran once and queued what it plans into the real refresh queue in moto's
server; then {p.concurrency} worker process(es) (the template's `ReservedConcurrentExecutions`
{p.reserved} and `ScalingConfig.MaximumConcurrency` {p.maximum_concurrency}) each drained it like
Lambda's event source mapping (`devstack.runner.Runner`: batches of `BatchSize` {p.batch_size},
everything but the `batchItemFailures` deleted, failed records back when the visibility the
worker set runs out, {receive} from the template) and invoked the real
`functions/refresh_worker/app.py` handler, until the queue was empty.

**Sustained** throughput is refreshes (answered 200 by the sandbox) per second: over the time to
the last refresh when every due installation was refreshed, else over at least one planner
interval ({p.planner_interval:.0f} s, the template's schedule), because whatever was not refreshed
waits in the index for the planner's next run. **While refreshing** is first to last refresh.
Target: sustained >= {TARGET_FRACTION} R and no 429.

{calibration_section(results.calibration)}{cut_off_note(p)}{table}

- Refreshes per one-second window (first and last windows left out): {full} of {len(windows)}
  windows at R; min {low}, median {middle}, max {high}.
- Records handed to the workers: {handled:,}; sent back to the queue by the pace (batch item
  failures or re-sent): {bounced:,}; acknowledged without a refresh: {p.deferred:,}.
- AWS calls made by the workers: {call_text}.
- Handler time per record: {record_ms:.0f} ms; per refresh: {refresh_ms:.0f} ms, so
  {p.concurrency} workers could do at most ~{capacity:.0f} refreshes/s.
- CPU seconds over the {wall:.0f} s run: moto {cpu.get("moto", 0):.0f}, workers {cpu.get("workers", 0):.0f},
  sandbox + harness {cpu.get("sandbox_and_harness", 0):.0f} (of {2 * wall:.0f} on 2 cores).
- Seeding took {p.seed_seconds:.0f} s (two moto calls per installation).

The bench replaces three clock-per-message scans in moto 5.2.5's SQS with one clock reading per
scan (same answers; `bench.common.patch_moto_sqs_scans`): unpatched, one ReceiveMessage from a
2,000-deep queue took ~600 ms and queueing 1,000 messages 12 s, so moto, not the code, set the
rate (a 2,000-installation run reached 0.45 R that way).
"""


def calibration_section(calibration: Calibration | None) -> str:
    """How R was chosen: the harness's measured unpaced capacity, and the share of it used."""
    if calibration is None:
        return ""
    return (
        f"**R was calibrated to this machine.** Before the pacing run, {calibration.burst} due "
        f"installations were refreshed with no pace and no limit at the sandbox (same workers, "
        f"same moto): {calibration.refreshed} refreshed at {calibration.capacity:.1f}/s, first to "
        f"last refresh; that is the harness's capacity here, shared by the workers, moto and the "
        f"sandbox on this machine's cores. R = {calibration.rate:g}/s: {calibration.reason}. "
        f"Seeding took {calibration.seed_seconds_each * 1000:.0f} ms per installation, which sized "
        "the run below to the time budget.\n\n"
    )


def cut_off_note(p: PacingResult) -> str:
    """Said only when the bench's own time budget ended the pacing run."""
    if p.measured:
        return ""
    return (
        f"**This run was cut off by the bench's own time budget**, after {p.cpu.get('wall', 0.0):.0f} s "
        f"with {p.left_in_queue:,} messages still queued: the throughput and what was left "
        "unrefreshed are **not measured** (the workers were stopped, not the pacing). The rows below "
        "show what the run did until then.\n\n"
    )


def _memory_section(results: Results) -> str:
    rows = []
    for memory in results.memory:
        data = memory.as_json()
        rows.append(
            [
                "baseline: boto3 + DynamoDB and KMS clients"
                if memory.logical_id == "baseline"
                else memory.logical_id,
                f"{memory.median_mb:.1f}",
                f"{data['vmhwm_median_mb']:.1f}",
                f"{memory.median_mb / LAMBDA_MB:.0%}",
                ", ".join(sorted(set(memory.outcomes)))[:60],
            ]
        )
    table = _table(["function", "peak RSS (MB)", "VmHWM (MB)", f"of {LAMBDA_MB} MB", "outcome"], rows)
    return f"""## 5. Memory

Peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) of a fresh process that loads one
handler and handles one typical request against moto's server and the sandbox (browser: a
callback; token API: a token read; webhook: a signed uninstall; planner: 10 due; workers: one
record; admin: one installation), median of {len(results.memory[0].rss_mb)} runs. The children
are forked by a small launcher started first (`bench.launcher`): Linux carries a process's peak
RSS across fork and exec, so a child of the benchmark itself would report the benchmark's size.
VmHWM (the kernel's peak since exec) agrees. The template gives every function 256 MB; the
interpreter's own RSS is what counts against the function's memory in Lambda (the runtime adds a
few MB).

{table}
"""


def _reading(results: Results) -> str:
    bullets: list[str] = []
    by_key = results.cold_by_key()
    functions = [r for r in results.cold if r.candidate.kind == "function"]
    within = [r for r in functions if results.target_ratio(r) <= TARGET_RATIO]
    worst = max(functions, key=results.target_ratio)
    wall_within = [r for r in functions if results.ratio(r) <= TARGET_RATIO]
    wall_worst = max(functions, key=results.ratio)
    one = by_key.get("diag_one_session")
    each = by_key.get("diag_session_each")
    basis = "in instructions" if results.instructions is not None else "in wall-clock medians"
    text = (
        f"**Cold start: {len(within)} of {len(functions)} functions meet <= {TARGET_RATIO:.2f}x the floor "
        f"{basis}** (slowest {worst.candidate.label} at {results.target_ratio(worst):.3f}x)."
    )
    if results.instructions is not None:
        text += (
            f" In wall-clock medians, {len(wall_within)} of {len(functions)} do (floor "
            f"{_ms(results.floor_ready())} ms; slowest {wall_worst.candidate.label} at "
            f"{results.ratio(wall_worst):.2f}x): the wall clock also counts the kernel's work per "
            "imported file and whatever else the machine runs."
        )
    if one is not None and each is not None:
        one_ms, each_ms = float(one.as_json()["clients_median"]), float(each.as_json()["clients_median"])
        text += (
            f" Five clients cost {_ms(one_ms)} ms from one boto3 session and {_ms(each_ms)} ms from a "
            f"session each ({_ms(each_ms - one_ms)} ms more): every new session loads botocore's endpoint, "
            "partition and default-config data again."
        )
    if results.shared_session is False:
        text += (
            " `ucoauth.adapters.aws._make` builds each client from a new `boto3.session.Session()`, so a "
            "function pays that once per client; building them from one process-wide session (under "
            "the existing lock) is the largest cut available."
        )
    elif results.shared_session:
        text += (
            " `ucoauth.adapters.aws` builds its clients from one botocore session, without importing boto3 "
            "(its resource layer and s3transfer, which the floor pays)."
        )
    peer = by_key.get("powertools_peer")
    if peer is not None:
        text += f" The textbook Powertools peer is at {results.ratio(peer):.2f}x"
        sdk = by_key.get("ultracart_sdk_peer")
        if sdk is not None:
            text += f", the official SDK peer at {results.ratio(sdk):.2f}x"
        text += "."
        if results.ratio(peer) > TARGET_RATIO:
            text += (
                " A bare Powertools handler with two clients is already over the target, so functions "
                "built on Powertools' resolver or batch processor that also need `requests` and three "
                "to five clients land near that peer; what is left to cut is in what they import (the "
                "import table below)."
            )
    bullets.append(text)
    shipped = by_key.get("token_api@no_pyc")
    compiled = by_key.get("token_api")
    if shipped is not None and compiled is not None:
        extra = float(shipped.as_json()["ready_median"]) - float(compiled.as_json()["ready_median"])
        if results.layer_compiles:
            bullets.append(
                f"**Bytecode: the layer's build compiles it, which saves {extra * 1000:.0f} ms** per cold "
                f"start of the token API (without .pyc it is at {results.ratio(shipped):.2f}x the floor): "
                "`/opt` is read-only in Lambda, so a layer without `.pyc` is compiled at every cold start."
            )
        else:
            bullets.append(
                f"**Without .pyc the token API needs {extra * 1000:.0f} ms more** "
                f"({results.ratio(shipped):.2f}x the floor), and that is what Lambda runs: `/opt` is "
                "read-only and the layer's build (SAM's python builder) ships no bytecode. Compiling the "
                "layer in its build (`python3.13 -m compileall --invalidation-mode unchecked-hash`) "
                "removes that."
            )
    misses = [row for row in results.calls if row.ok is False]
    bullets.append(
        "**Calls per operation: every budget is met.**"
        if not misses
        else "**Calls per operation: over budget:** "
        + "; ".join(f"{row.operation} ({_calls_text(row)})" for row in misses)
    )
    planner = results.planner
    ok = planner.ratio <= PLANNER_TARGET and planner.all_ratio <= PLANNER_TARGET
    text = (
        f"**Planner: reads follow what is due, not the {planner.installations:,} installations** "
        f"({'within' if ok else 'over'} the {PLANNER_TARGET} target): reading every due one costs "
        f"{planner.all_scanned:,} items for {planner.due:,} due ({planner.all_ratio:.2f})"
    )
    if planner.planned < planner.due:
        text += (
            f"; the planner itself queues {planner.planned:,} (what the pace allows before its next run) "
            f"and reads {planner.scanned:,} for them ({planner.queries} shard queries, each up to the "
            "limit)"
        )
    bullets.append(text + ".")
    p = results.pacing
    bounced = p.sent_back
    met = p.fraction >= TARGET_FRACTION and p.too_many_requests == 0
    calibration = results.calibration
    chosen = (
        f" R = {p.rate:g}/s, {CAPACITY_SHARE_TEXT} of the harness's measured capacity "
        f"({calibration.capacity:.1f}/s)"
        if calibration is not None and calibration.rate < calibration.configured_rate
        else ""
    )
    if not p.measured:
        text = (
            f"**Pacing: not measured** (the bench's time budget ended the run after "
            f"{p.cpu.get('wall', 0.0):.0f} s, {p.refreshed:,} of {p.seeded:,} refreshed, "
            f"{p.steady_throughput:.1f}/s while refreshing; {p.too_many_requests} 429s)."
        )
        if chosen:
            text += f" {chosen.strip()}."
    else:
        text = (
            f"**Pacing: {p.fraction:.2f} R sustained, {p.too_many_requests} 429s** "
            f"({'meets' if met else 'misses'} the target; {p.steady_throughput:.1f}/s while refreshing"
            f"{';' + chosen if chosen else ''})."
        )
    if p.deferred and p.measured:
        text += (
            f" The planner queued {p.planned:,} at once; the workers refreshed R per window and "
            f"acknowledged every record the spent window refused ({p.deferred:,}), so the queue was "
            f"empty after {p.end_to_end_seconds:.0f} s with {p.seeded - p.refreshed:,} due installations "
            f"left for the planner's next run, {p.planner_interval:.0f} s later: {p.refreshed:,} "
            "refreshes per interval. A refused record is best re-queued as a new message delayed to "
            "the next window (`SendMessage` with `DelaySeconds`): a new message starts at receive "
            "count zero, so it is neither dropped until the planner's next run nor counted toward "
            "maxReceiveCount, and the workers keep taking R per window until the plan is done."
        )
    if p.dead_lettered:
        text += (
            f" {p.dead_lettered:,} of {p.planned:,} due installations "
            f"({p.dead_lettered / max(1, p.planned):.0%}) ended in the dead-letter queue without a single "
            "UltraCart call: the workers refused what the window's pace did not allow and sent it back "
            f"({bounced:,} times here), each refusal a receive, and after "
            f"{results.max_receive_count or 'maxReceiveCount'} of them SQS dead-letters the message (and "
            "`RefreshDeadLetterQueueAlarm` fires). Any backlog longer than that many pace windows does "
            "this in production too (10 per 60 s by default: more than ~50 due at once)."
        )
    bullets.append(text)
    biggest = max((m for m in results.memory if m.logical_id != "baseline"), key=lambda m: m.median_mb)
    bullets.append(
        f"**Memory: the largest is {biggest.logical_id} at {biggest.median_mb:.0f} MB** "
        f"({biggest.median_mb / LAMBDA_MB:.0%} of 128 MB); the baseline interpreter with boto3 and two "
        f"clients is {results.memory[0].median_mb:.0f} MB, so most of it is boto3's."
    )
    bullets += results.notes
    return "## Reading\n\n" + "\n".join(f"- {bullet}" for bullet in bullets) + "\n"


def markdown(results: Results) -> str:
    summary = _table(["area", "what", "measured", "target", ""], [list(row) for row in summary_rows(results)])
    return f"""# Benchmarks

Generated by `make bench` (`python -m bench`; {results.elapsed_seconds:.0f} s for this run). Do not edit by
hand: run it again.

{_machine(results)}

## Summary

{summary}

{_reading(results)}
{_cold_section(results)}
{_calls_section(results)}
{_planner_section(results)}
{_pacing_section(results)}
{_memory_section(results)}
## Reproduce

```bash
make bench                                    # everything above, < 5 minutes on 2 cores
.venv/bin/python -m bench --rounds 21         # more cold-start rounds
.venv/bin/python -m bench --pacing-count 500  # a shorter pacing run
.venv/bin/python -m bench.cold --rounds 5     # the cold-start part alone (floor + functions)
```

`--help` lists the other knobs (rate, latency, output path, time budget). The pacing run
first measures the harness's unpaced capacity on this machine and paces at
{CAPACITY_SHARE_TEXT} of it (at most `--rate`), then uses as many due installations as the time
budget allows, up to `--pacing-count` (default 2,000); section 4 says which R and how many it
used. A run the time budget cuts off is reported "not measured".
"""


def raw(results: Results) -> dict[str, Any]:
    """Everything measured, for ``--json``."""
    return {
        "machine": results.machine,
        "cold": [r.as_json() for r in results.cold],
        "import_extra": results.import_extra,
        "instructions": results.instructions,
        "calls": [r.as_json() for r in results.calls],
        "planner": results.planner.as_json(),
        "pacing": results.pacing.as_json(),
        "calibration": results.calibration.as_json() if results.calibration else None,
        "memory": [m.as_json() for m in results.memory],
        "elapsed_seconds": results.elapsed_seconds,
    }
