"""Refresh pacing: N due installations refreshed by the real worker at its real concurrency.

The sandbox answers one call at a time for the whole application, as UltraCart documents
(``concurrency_scope="application"``: the stack's default budget scope serialises its calls) and leaks
``rate`` calls per second (429 beyond), each taking ``latency_ms``. The pace is set to the same
rate (``REFRESH_PACE_LIMIT`` = rate per ``REFRESH_PACE_WINDOW_SECONDS`` = 1). The planner queues
every due installation; as many worker processes as the template allows (the smaller of
``ReservedConcurrentExecutions`` and the SQS ``ScalingConfig.MaximumConcurrency``) drain the refresh
queue in moto's server in batches of the template's ``BatchSize``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import scenarios
from bench.common import (
    PYTHONPATH,
    ROOT,
    Live,
    child_env,
    median,
    process_cpu_seconds,
    progress,
    wire_process,
)

if TYPE_CHECKING:
    from ucsandbox.models import ConcurrencyScope

TARGET_FRACTION = 0.9
WORKER = "RefreshWorkerFunction"


@dataclass
class PacingResult:
    requested: int
    seeded: int
    planned: int
    refreshed: int
    rate: float
    latency_ms: int
    concurrency: int
    batch_size: int
    reserved: int
    maximum_concurrency: int | None
    end_to_end_seconds: float
    steady_seconds: float
    too_many_requests: int
    other_failures: int
    dead_lettered: int
    left_in_queue: int
    per_window: list[int]
    planner_interval: float = 300.0
    # What the sandbox answers 429 to when calls overlap ("merchant", "application" or None).
    concurrency_scope: ConcurrencyScope | None = "application"
    cpu: dict[str, float] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    timed_out: bool = False
    seed_seconds: float = 0.0

    @property
    def measured(self) -> bool:
        """False when the bench's own time budget ended the run with work still queued: what the
        run did is no measure of the pacing (neither its rate nor what it left unrefreshed)."""
        return not self.timed_out

    @property
    def deferred(self) -> int:
        """Queued, not refreshed, not dead-lettered, not left: acknowledged without a refresh."""
        return max(0, self.planned - self.refreshed - self.dead_lettered - self.left_in_queue)

    @property
    def sustained_seconds(self) -> float:
        """Time the refreshes took: to the last one when every due installation got refreshed;
        otherwise at least one planner interval, since the rest waits for the planner's next run."""
        if self.refreshed >= self.seeded:
            return self.end_to_end_seconds
        return max(self.end_to_end_seconds, self.planner_interval)

    @property
    def throughput(self) -> float:
        """Sustained refreshes per second (see ``sustained_seconds``)."""
        return self.refreshed / self.sustained_seconds if self.sustained_seconds > 0 else 0.0

    @property
    def steady_throughput(self) -> float:
        """Refreshes per second between the first and the last refresh."""
        return (self.refreshed - 1) / self.steady_seconds if self.steady_seconds > 0 else 0.0

    @property
    def fraction(self) -> float:
        return self.throughput / self.rate

    def aws_calls(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for worker in self.workers:
            total.update(worker.get("aws_calls", {}))
        return total

    def worker_total(self, key: str) -> float:
        return float(sum(worker.get(key, 0) for worker in self.workers))

    @property
    def sent_back(self) -> int:
        """Records the pace refused: batch item failures, plus any re-sent as new messages."""
        return int(self.worker_total("failed_records")) + self.aws_calls().get("sqs.SendMessage", 0)

    def as_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "per_window"},
            "throughput": self.throughput,
            "deferred": self.deferred,
            "sustained_seconds": self.sustained_seconds,
            "steady_throughput": self.steady_throughput,
            "fraction": self.fraction,
            "measured": self.measured,
            "window_counts": {
                "windows": len(self.per_window),
                "min": min(self.per_window, default=0),
                "median": median(self.per_window),
                "max": max(self.per_window, default=0),
            },
            "aws_calls": dict(self.aws_calls()),
        }


def worker_concurrency(template: dict[str, Any]) -> tuple[int, int, int | None, int]:
    """(concurrency, ReservedConcurrentExecutions, MaximumConcurrency, BatchSize) from the template."""
    from devstack.resources import sqs_event_sources

    source = sqs_event_sources(template)[WORKER]
    reserved = int(template["Resources"][WORKER]["Properties"].get("ReservedConcurrentExecutions", 1000))
    maximum = source.maximum_concurrency
    concurrency = min(reserved, int(maximum)) if maximum is not None else reserved
    return concurrency, reserved, maximum, source.batch_size


def _seed(services: Any, live: Live, count: int) -> int:
    def one(index: int) -> None:
        scenarios.seed_installation(services, live, f"PACE{index:05d}", expires_in=60)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, range(count)))
    return count


@dataclass
class Prepared:
    """Installations seeded and queued, ready for the workers."""

    count: int
    planned: int
    rate: float
    latency_ms: int
    concurrency: int
    reserved: int
    maximum_concurrency: int | None
    batch_size: int
    env: dict[str, str]
    seed_seconds: float
    plan_seconds: float
    planner_interval: float
    concurrency_scope: ConcurrencyScope | None = "application"


def prepare(
    live: Live,
    *,
    count: int,
    rate: float,
    latency_ms: int,
    unlimited_sandbox: bool = False,
    concurrency_scope: ConcurrencyScope | None = "application",
    overrides: dict[str, str] | None = None,
) -> Prepared:
    """Fresh stack, sandbox limits set, ``count`` due installations seeded, the planner run once.

    ``unlimited_sandbox``: the sandbox leaks no rate (429 never), for the calibration burst.
    ``concurrency_scope``: what the sandbox refuses overlapping calls for (``"merchant"``,
    ``"application"`` or None). ``overrides``: more of the worker's variables."""
    from tests.support.lambdas import invoke

    live.reset()
    live.sandbox.configure(
        concurrency_scope=concurrency_scope,
        rate_per_second=None if unlimited_sandbox else rate,
        latency_ms=latency_ms,
    )
    concurrency, reserved, maximum, batch_size = worker_concurrency(dict(live.resources.template))
    pace = {"REFRESH_PACE_LIMIT": str(int(rate)), "REFRESH_PACE_WINDOW_SECONDS": "1"}
    env = live.function_env(WORKER, **pace, **(overrides or {}))
    services = wire_process(env)
    progress(f"pacing: seeding {count:,} due installations")
    clock = time.perf_counter()
    _seed(services, live, count)
    seed_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    planned = int(invoke("RefreshPlannerFunction", scenarios.schedule_event())["planned"])
    plan_seconds = time.perf_counter() - clock
    progress(
        f"pacing: seeded in {seed_seconds:.0f} s; the planner queued {planned:,} in {plan_seconds:.1f} s"
    )
    interval = _planner_interval(live)
    return Prepared(
        count=count,
        planned=planned,
        rate=rate,
        latency_ms=latency_ms,
        concurrency=concurrency,
        reserved=reserved,
        maximum_concurrency=maximum,
        batch_size=batch_size,
        env=env,
        seed_seconds=seed_seconds,
        plan_seconds=plan_seconds,
        planner_interval=interval,
        concurrency_scope=concurrency_scope,
    )


def _planner_interval(live: Live) -> float:
    """Seconds between planner runs: the template's schedule (``RefreshScheduleRate``)."""
    from devstack.resources import schedules

    parameters = {k: v for k, v in live.resources.parameters.items() if k != "Stage"}
    for schedule in schedules(dict(live.resources.template), parameters=parameters):
        if schedule.logical_id == "RefreshPlannerFunction" and schedule.rate_seconds:
            return float(schedule.rate_seconds)
    return 300.0


def run(
    live: Live, prepared: Prepared, *, time_budget: float, profile_dir: Path | None = None
) -> PacingResult:
    """Start the workers, run the planner on the template's schedule (as EventBridge Scheduler
    would), and wait until everything due was queued and the refresh queue is empty (or the
    budget is spent). One planner run queues at most what the pace allows until the next run,
    so a run with more due than that needs the planner's later runs, as in production."""
    from tests.support.lambdas import invoke

    live.sandbox.clear_requests()
    queue_url = live.resources.refresh_queue_url
    concurrency, planned = prepared.concurrency, prepared.planned
    progress(f"pacing: {concurrency} worker(s), batches of {prepared.batch_size}, pace {prepared.rate:g}/s")

    with tempfile.TemporaryDirectory(prefix="bench-pacing-") as scratch:
        work = Path(scratch)
        (work / "resources.pickle").write_bytes(pickle.dumps(live.resources))
        config = {
            "pythonpath": PYTHONPATH,
            "resources": str(work / "resources.pickle"),
            "stop_file": str(work / "stop"),
            "queue_logical_id": "RefreshQueue",
            "profile_dir": str(profile_dir) if profile_dir else "",
        }
        (work / "config.json").write_text(json.dumps(config))
        moto_cpu, own_cpu = process_cpu_seconds(live.moto_pid), process_cpu_seconds(os.getpid())
        started = time.time()
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.pacing_worker", str(work / "config.json"), str(index)],
                cwd=ROOT,
                env=child_env(prepared.env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for index in range(concurrency)
        ]
        deadline = time.monotonic() + time_budget
        timed_out, last_report = False, time.monotonic()
        next_plan = time.monotonic() + prepared.planner_interval
        while True:
            time.sleep(0.5)
            if time.monotonic() >= next_plan:
                planned += int(invoke("RefreshPlannerFunction", scenarios.schedule_event())["planned"])
                next_plan += prepared.planner_interval
            # Done when everything due was queued and the queue holds nothing, visible, in flight
            # or delayed: every message was handled and deleted, or moved to the dead-letter queue
            # after maxReceiveCount receives.
            if planned >= prepared.count and _depth(live, queue_url) == 0:
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            if any(worker.poll() is not None for worker in workers):
                break
            if time.monotonic() - last_report > 20:
                refreshed = sum(1 for r in live.sandbox.requests("token") if r.status == 200)
                progress(f"pacing: {refreshed:,}/{planned:,} refreshed")
                last_report = time.monotonic()
        (work / "stop").touch()
        cpu = {
            "wall": time.time() - started,
            "moto": process_cpu_seconds(live.moto_pid) - moto_cpu,
            "sandbox_and_harness": process_cpu_seconds(os.getpid()) - own_cpu,
        }
        errors = []
        for worker in workers:
            try:
                _, stderr = worker.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                _, stderr = worker.communicate()
            if worker.returncode != 0:
                errors.append(stderr[-2000:])
        if errors:
            raise RuntimeError("a pacing worker failed:\n" + "\n".join(errors))
        stats = [json.loads((work / f"stats-{i}.json").read_text()) for i in range(concurrency)]
        cpu["workers"] = sum(float(worker["cpu_seconds"]) for worker in stats)

    dead_lettered = _depth(live, live.resources.refresh_dlq_url)
    left = _depth(live, queue_url)
    log = live.sandbox.requests("token")
    ok_times = sorted(r.time for r in log if r.status == 200)
    too_many = sum(1 for r in log if r.status == 429)
    other = sum(1 for r in log if r.status not in (200, 429))
    per_window: list[int] = []
    if ok_times:
        first = math.floor(ok_times[0])
        buckets = Counter(math.floor(t) - first for t in ok_times)
        per_window = [buckets.get(i, 0) for i in range(max(buckets) + 1)]
    return PacingResult(
        requested=prepared.count,
        seeded=prepared.count,
        planned=planned,
        refreshed=len(ok_times),
        rate=prepared.rate,
        latency_ms=prepared.latency_ms,
        concurrency=concurrency,
        batch_size=prepared.batch_size,
        reserved=prepared.reserved,
        maximum_concurrency=prepared.maximum_concurrency,
        end_to_end_seconds=(ok_times[-1] - started) if ok_times else 0.0,
        steady_seconds=(ok_times[-1] - ok_times[0]) if len(ok_times) > 1 else 0.0,
        too_many_requests=too_many,
        other_failures=other,
        dead_lettered=dead_lettered,
        left_in_queue=left,
        per_window=per_window,
        planner_interval=prepared.planner_interval,
        cpu=cpu,
        workers=stats,
        timed_out=timed_out,
        seed_seconds=prepared.seed_seconds,
        concurrency_scope=prepared.concurrency_scope,
    )


def _depth(live: Live, queue_url: str) -> int:
    """Messages in a queue: visible, in flight or delayed."""
    import boto3

    sqs = boto3.client("sqs", region_name=live.resources.region, endpoint_url=live.endpoint_url)
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


# Seeding one installation costs ~17-24 ms here (two moto calls, next to the planner's load);
# a paced run takes N / rate. The calibration burst measures it on the machine at hand.
SEED_SECONDS_EACH = 0.024
# The pace R is set to this share of the harness's measured unpaced capacity: the workers, moto
# and the sandbox share the machine's cores, so a pace at their limit measures the machine,
# not the pacing. 65% leaves room for the pace's own refusals and re-queues.
CAPACITY_SHARE = 0.65
# Installations refreshed unpaced to measure that capacity (a few seconds of work).
BURST_COUNT = 100
# A pace no harness reaches: the burst is limited by the machine only.
UNPACED_RATE = 1000.0


# The shortest paced run worth judging: the planner's first run and the last message's delivery
# are a few seconds whatever N is, which a run of a few seconds would count against the pace.
MIN_RUN_SECONDS = 60.0


def minimum_count(requested: int, rate: float) -> int:
    """The fewest due installations (in hundreds) that keep a run at ``rate`` busy for
    ``MIN_RUN_SECONDS`` (at most ``requested``)."""
    return min(requested, max(100, math.ceil(rate * MIN_RUN_SECONDS / 100) * 100))


def affordable_count(
    requested: int, rate: float, seconds_left: float, *, seed_seconds_each: float = SEED_SECONDS_EACH
) -> int:
    """The largest N (at most ``requested``, in hundreds) whose seeding and paced run fit
    ``seconds_left``; never fewer than :func:`minimum_count` (a shorter run would measure its own
    start and end, not the pace: the bench then runs over its budget rather than judge that)."""
    per_item = seed_seconds_each + 1.1 / rate
    fits = int(max(0.0, seconds_left - 15) / per_item)
    return max(minimum_count(requested, rate), min(requested, fits // 100 * 100))


def choose_rate(configured: float, capacity: float) -> tuple[float, str]:
    """R for the pacing run: ``CAPACITY_SHARE`` of the measured unpaced capacity (whole calls per
    second, at least 1), never above the configured rate; and why, in words."""
    share = max(1.0, float(math.floor(capacity * CAPACITY_SHARE)))
    if share >= configured:
        return configured, (
            f"the configured R = {configured:g}/s, which is at most {CAPACITY_SHARE:.0%} of the "
            f"measured capacity ({capacity:.1f}/s)"
        )
    return share, (
        f"{CAPACITY_SHARE:.0%} of the measured capacity ({capacity:.1f}/s), below the configured "
        f"R = {configured:g}/s: a pace at the harness's own limit would measure the machine, not "
        "the pacing"
    )


@dataclass
class Calibration:
    """The harness's unpaced capacity on this machine, and the R chosen from it."""

    burst: int
    refreshed: int
    capacity: float  # refreshes per second, first to last, unpaced
    seed_seconds_each: float
    configured_rate: float
    rate: float
    reason: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def calibrate(
    live: Live, *, configured_rate: float, latency_ms: int, burst: int = BURST_COUNT
) -> Calibration:
    """Refresh ``burst`` due installations with no pace and no sandbox limit: the harness's capacity."""
    progress(f"pacing: calibrating, {burst} refreshes unpaced")
    prepared = prepare(live, count=burst, rate=UNPACED_RATE, latency_ms=latency_ms, unlimited_sandbox=True)
    result = run(live, prepared, time_budget=60.0)
    capacity = result.steady_throughput
    rate, reason = choose_rate(configured_rate, capacity)
    progress(f"pacing: capacity {capacity:.1f}/s unpaced; R = {rate:g}/s")
    return Calibration(
        burst=burst,
        refreshed=result.refreshed,
        capacity=capacity,
        seed_seconds_each=prepared.seed_seconds / max(1, burst),
        configured_rate=configured_rate,
        rate=rate,
        reason=reason,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.pacing``: one paced run alone (no calibration, no other benchmark), its
    result as JSON on stdout. ``make bench`` runs the same code after a calibration."""
    import argparse

    from bench.common import live_stack

    parser = argparse.ArgumentParser(prog="python -m bench.pacing", description=main.__doc__)
    parser.add_argument("--count", type=int, default=300, help="due installations")
    parser.add_argument("--rate", type=float, default=10.0, help="R: the pace and the sandbox's rate, /s")
    parser.add_argument("--latency-ms", type=int, default=20, help="the sandbox's latency per call")
    parser.add_argument(
        "--sandbox-concurrency",
        choices=("merchant", "application", "none"),
        default="application",
        help="what the sandbox answers 429 to when calls overlap (default: as UltraCart documents)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker variable, e.g. ULTRACART_BUDGET_SCOPE=merchant (repeatable)",
    )
    parser.add_argument("--time-budget", type=float, default=120.0, help="seconds the paced run may take")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    scope: ConcurrencyScope | None = None if args.sandbox_concurrency == "none" else args.sandbox_concurrency
    out = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the handlers log to stdout; the JSON goes to `out`
    try:
        with live_stack() as live:
            prepared = prepare(
                live,
                count=args.count,
                rate=args.rate,
                latency_ms=args.latency_ms,
                concurrency_scope=scope,
                overrides=overrides,
            )
            result = run(live, prepared, time_budget=args.time_budget)
    finally:
        sys.stdout.close()
        sys.stdout = out
    summary = {
        "sandbox_concurrency": args.sandbox_concurrency,
        "overrides": overrides,
        "due": result.seeded,
        "planned": result.planned,
        "refreshed": result.refreshed,
        "too_many_requests": result.too_many_requests,
        "other_failures": result.other_failures,
        "dead_lettered": result.dead_lettered,
        "left_in_queue": result.left_in_queue,
        "sustained_per_second": round(result.throughput, 2),
        "fraction_of_r": round(result.fraction, 2),
        "timed_out": result.timed_out,
        "aws_calls": dict(result.aws_calls()),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
