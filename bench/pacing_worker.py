"""One concurrent execution of RefreshWorkerFunction, fed like Lambda's SQS event source mapping.

``python -m bench.pacing_worker CONFIG.json INDEX``: a fresh process (an execution environment)
that drains the real refresh queue in moto's server with ``devstack.runner.Runner`` (batches of
the template's BatchSize; everything but the reported ``batchItemFailures`` is deleted; a
failed record comes back when the visibility timeout the worker set runs out) and hands each
batch to the real handler. It stops when the parent creates the stop file, and writes what it
did to ``stats-INDEX.json``.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any


def main(config_path: Path, index: int) -> None:
    config = json.loads(config_path.read_text())
    for path in reversed(config["pythonpath"]):
        sys.path.insert(0, path)
    from devstack.runner import Runner
    from tests.support.calls import AwsCallCounter
    from tests.support.lambdas import invoke

    with Path(config["resources"]).open("rb") as handle:
        resources = pickle.load(handle)
    counter = AwsCallCounter()
    stats: Counter[str] = Counter()
    handler_seconds = 0.0

    def timed_invoke(logical_id: str, event: dict[str, Any]) -> Any:
        nonlocal handler_seconds
        started = time.perf_counter()
        try:
            result = invoke(logical_id, event)
        finally:
            handler_seconds += time.perf_counter() - started
        stats["invocations"] += 1
        stats["records"] += len(event["Records"])
        if isinstance(result, dict):
            stats["failed_records"] += len(result.get("batchItemFailures") or [])
        return result

    runner = Runner(resources, timed_invoke, wait_seconds=1)
    stop = Path(config["stop_file"])
    profiler = None
    if config.get("profile_dir"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    while not stop.exists():
        stats["receives"] += 1
        if runner.drain_once(config["queue_logical_id"]) == 0:
            stats["empty_receives"] += 1
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(Path(config["profile_dir"]) / f"worker-{index}.prof"))
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        **stats,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "handler_seconds": handler_seconds,
        "alive_seconds": time.perf_counter() - started,
        "aws_calls": dict(counter.by_operation()),
    }
    (config_path.parent / f"stats-{index}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
