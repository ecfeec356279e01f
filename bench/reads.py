"""Token reads in the local stack: how long ``GET /tokens`` takes (p50, p99) when its data key is
cached, when the container opens it first, and when the read waits on an inline refresh.

The token API's handler runs in this process with its own environment from the template, over
real HTTP to moto's server and the UltraCart sandbox (which answers at once: UltraCart's own
time adds to an inline refresh in production). ``python -m bench.reads`` prints one JSON line;
``python -m bench.capacity`` runs it in a child process and puts the table in docs/CAPACITY.md.
Times are this machine's and vary from run to run; CI asserts only the calls per read
(tests/integration/test_call_counts.py).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bench import scenarios
from bench.common import ROOT, child_env, wire_process

if TYPE_CHECKING:
    from bench.common import Live

READS = 100  # of each kind


@dataclass(frozen=True)
class Latency:
    kind: str
    reads: int
    p50_ms: float
    p99_ms: float


def _latency(kind: str, seconds: list[float]) -> Latency:
    cuts = statistics.quantiles([s * 1000 for s in seconds], n=100, method="inclusive")
    return Latency(kind=kind, reads=len(seconds), p50_ms=round(cuts[49], 1), p99_ms=round(cuts[98], 1))


def measure(live: Live, count: int = READS) -> list[Latency]:
    from devstack.invoke import template_invoker
    from devstack.resources import load_template
    from tests.support.calls import AwsCallCounter

    live.reset()
    env = live.function_env("TokenApiFunction")
    services = wire_process(env)
    invoke = template_invoker(load_template(), environments={"TokenApiFunction": env}).invoke

    def timed_read(merchant_id: str) -> float:
        started = time.perf_counter()
        answer = invoke("TokenApiFunction", scenarios.tokens_event(merchant_id))
        elapsed = time.perf_counter() - started
        if answer["statusCode"] != 200:
            status, body = answer["statusCode"], answer.get("body")
            raise RuntimeError(f"GET /tokens/{merchant_id} answered {status}: {body}")
        return elapsed

    fresh = [f"READ{i}" for i in range(count)]
    due = [f"INLINE{i}" for i in range(count)]
    for merchant_id in fresh:
        scenarios.seed_installation(services, live, merchant_id, expires_in=3600)
    for merchant_id in due:
        scenarios.seed_installation(services, live, merchant_id, expires_in=50)  # inside the margin
    timed_read(fresh[0])  # the process's first request (imports, clients): not a read's cost
    first = [timed_read(m) for m in fresh[1:]]
    counter = AwsCallCounter()
    warm = [timed_read(m) for m in fresh[1:]]
    # What the row says it measures: each warm read one GetItem, its data key from memory.
    if dict(counter.by_operation()) != {"dynamodb.GetItem": len(warm)}:
        raise RuntimeError(f"warm reads were not one GetItem each: {dict(counter.by_operation())}")
    live.sandbox.clear_requests()
    inline = [timed_read(m) for m in due]
    refreshed = [r for r in live.sandbox.requests("token") if r.grant_type == "refresh_token"]
    if len(refreshed) != count:
        raise RuntimeError(f"{count} reads should each have refreshed once, UltraCart saw {len(refreshed)}")
    return [
        _latency("warm: the data key cached (1 GetItem)", warm),
        _latency("first read in this container (GetItem, then KMS Decrypt of the data key)", first),
        _latency("waited on an inline refresh (lease, budget, UltraCart, the token write)", inline),
    ]


def measure_in_child() -> list[Latency]:
    """:func:`measure` in a fresh process (its own moto server and sandbox)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.reads"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.reads failed:\n{done.stderr[-2000:]}")
    rows: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return [Latency(**row) for row in rows]


def main() -> int:
    import os

    from bench.common import live_stack

    out = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the handlers log to stdout
    with live_stack() as live:
        rows = measure(live)
    print(json.dumps([asdict(r) for r in rows]), file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
