"""Cost: a monthly AWS estimate from list prices and the calls per operation the tests count.

``python -m bench.cost`` writes docs/COST.md. Nothing here is measured at run time: the calls per
operation are the ones tests/integration/test_call_counts.py asserts (and ``make bench`` lists in
docs/BENCHMARKS.md), the refreshes per merchant-day come from docs/CAPACITY.md's simulation, the
prices are AWS's published list prices (below, with the region and the date they were taken).
Change a constant, run it again.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT

REGION = "us-east-1"
PRICES_AS_OF = "2026-12-07 (AWS's published list prices as known on that date; check the pricing pages)"
DAYS = 30

# -- list prices, us-east-1, USD (arm64 Lambda, on-demand DynamoDB, standard SQS) ----------------
LAMBDA_PER_MILLION_REQUESTS = 0.20
LAMBDA_ARM_PER_GB_SECOND = 0.0000133334
DYNAMODB_PER_MILLION_WRITE_UNITS = 0.625
DYNAMODB_PER_MILLION_READ_UNITS = 0.125
KMS_PER_10K_REQUESTS = 0.03
KMS_PER_KEY_MONTH = 1.00
KMS_KEYS = 2  # the token key and the device-code key
SQS_PER_MILLION_REQUESTS = 0.40
SCHEDULER_PER_MILLION_INVOCATIONS = 1.00
EVENTS_PER_MILLION_PUBLISHED = 1.00
HTTP_API_PER_MILLION_REQUESTS = 1.00
MEMORY_GB = 0.25  # the template's MemorySize: 256

# -- calls per operation (tests/integration/test_call_counts.py, the default budget scope) -------


@dataclass(frozen=True)
class Operation:
    name: str
    reads: int  # DynamoDB read units (GetItem, Query: items under 4 KB, one unit each)
    writes: int  # DynamoDB write units (UpdateItem, PutItem: items under 1 KB, one unit each)
    kms: float
    sqs: int
    seconds: float  # Lambda duration assumed (warm), for the GB-seconds line


# A warm read finds its data key in the container's cache: one GetItem. A read whose key is not
# cached adds one KMS Decrypt (KEY_OPEN): how many there are is key_opens_per_day below.
TOKEN_READ = Operation("GET /tokens, warm", reads=1, writes=0, kms=0, sqs=0, seconds=0.03)
KEY_OPEN = Operation("data key opened (cache missed)", reads=0, writes=0, kms=1, sqs=0, seconds=0.01)
FIRST_READ = Operation("first read of a lifetime (extra)", reads=0, writes=1, kms=0, sqs=0, seconds=0.01)
# Lease, pace, budget unit and line given back, token write; decrypt and a new data key (the
# writer does not cache the key it generates; the worker's decrypt rarely finds its key); the planner's
# batched send (1/10), the worker's receive and delete. Lambda waits for UltraCart: 0.5 s assumed.
REFRESH = Operation("refresh (worker)", reads=0, writes=4, kms=2, sqs=3, seconds=0.5)
INLINE = Operation("refresh inline (token API)", reads=1, writes=3, kms=2, sqs=0, seconds=0.5)
PLANNER_RUN = Operation("planner run (8 shards, every minute)", reads=10, writes=0, kms=0, sqs=0, seconds=0.1)
PLANNER_RUNS_PER_MONTH = DAYS * 24 * 60
# Lambda's event source mappings poll each SQS queue continuously (long polls, a few pollers):
# about 650,000 receives a month per queue whatever the traffic (refresh, revoke, device).
SQS_POLLING_PER_MONTH = 3 * 650_000


@dataclass(frozen=True)
class Scenario:
    merchants: int
    reads_per_day: float  # token reads per merchant per day
    refreshes_per_day: float  # per merchant, docs/CAPACITY.md
    inline_share: float  # of the refreshes, those a read waited on


def lines_for(s: Scenario) -> dict[str, float]:
    """USD a month, by service."""
    n, month = s.merchants, DAYS
    reads = n * s.reads_per_day * month
    refreshes = n * s.refreshes_per_day * month
    inline, ahead = refreshes * s.inline_share, refreshes * (1 - s.inline_share)
    first_reads = refreshes  # one use recorded per lifetime (at most)
    opens = n * key_opens_per_day(s) * month
    ops = [(TOKEN_READ, reads), (KEY_OPEN, opens), (FIRST_READ, first_reads)]
    ops += [(REFRESH, ahead), (INLINE, inline)]
    ops.append((PLANNER_RUN, PLANNER_RUNS_PER_MONTH))
    invocations = reads + ahead + PLANNER_RUNS_PER_MONTH
    gb_seconds = sum(op.seconds * count for op, count in ops) * MEMORY_GB
    return {
        "API Gateway HTTP API": reads / 1e6 * HTTP_API_PER_MILLION_REQUESTS,
        "Lambda": invocations / 1e6 * LAMBDA_PER_MILLION_REQUESTS + gb_seconds * LAMBDA_ARM_PER_GB_SECOND,
        "DynamoDB": sum(op.reads * c for op, c in ops) / 1e6 * DYNAMODB_PER_MILLION_READ_UNITS
        + sum(op.writes * c for op, c in ops) / 1e6 * DYNAMODB_PER_MILLION_WRITE_UNITS,
        "KMS": sum(op.kms * c for op, c in ops) / 1e4 * KMS_PER_10K_REQUESTS + KMS_KEYS * KMS_PER_KEY_MONTH,
        "SQS": (sum(op.sqs * c for op, c in ops) + SQS_POLLING_PER_MONTH) / 1e6 * SQS_PER_MILLION_REQUESTS,
        "EventBridge (Scheduler, events)": PLANNER_RUNS_PER_MONTH / 1e6 * SCHEDULER_PER_MILLION_INVOCATIONS
        + n * 0.1 / 1e6 * EVENTS_PER_MILLION_PUBLISHED,
    }


# The data-key cache (parameter DataKeyCacheSeconds): its default age, and how many warm token-API
# containers each merchant's reads are spread over (an assumption: Lambda keeps one or two warm at
# these rates, ~1 and ~12 reads a second, and replaces them every few hours).
CACHE_AGE = 3600
CONTAINERS = 2


def key_opens_per_day(s: Scenario) -> float:
    """KMS Decrypts a merchant's reads make a day: each container opens each data key once per
    cache age while the key lasts (a new one comes with every refresh), never more than reads."""
    if CACHE_AGE <= 0:
        return s.reads_per_day
    key_life = 86_400 / s.refreshes_per_day
    per_container = s.refreshes_per_day * math.ceil(key_life / CACHE_AGE)
    return min(s.reads_per_day, CONTAINERS * per_container)


def kms_for_reads(s: Scenario, *, cached: bool = True) -> float:
    """USD a month of the KMS Decrypts the token reads make (with the cache, or one per read)."""
    per_day = key_opens_per_day(s) if cached else s.reads_per_day
    return s.merchants * per_day * DAYS / 1e4 * KMS_PER_10K_REQUESTS


def _kms_row(label: str, refreshes: float) -> str:
    one, ten = Scenario(1000, 100, refreshes, 0.0), Scenario(10_000, 100, refreshes, 0.0)
    return (
        f"| {label} | {key_opens_per_day(one):.1f} | ${kms_for_reads(one):,.2f} | ${kms_for_reads(ten):,.2f} "
        f"| ${kms_for_reads(one, cached=False):,.2f} and ${kms_for_reads(ten, cached=False):,.2f} |"
    )


SCENARIOS = {
    "1-hour tokens, read every ~15 minutes (100 a day)": 25.8,
    "24-hour tokens, read every ~15 minutes (100 a day)": 1.06,
}


def render() -> str:
    out = [
        "# Cost",
        "",
        "Generated by `python -m bench.cost` from the constants at its top; do not edit by hand.",
        "",
        f"- Region {REGION}; prices as of {PRICES_AS_OF}; free tiers left out.",
        "- Lambda arm64 at 256 MB: $0.20 per million requests, $0.0000133334 per GB-second.",
        "  DynamoDB on-demand: $0.625 per million write units, $0.125 per million read units (items",
        "  under 1 KB written, 4 KB read). KMS: $0.03 per 10,000 requests, $1 per key a month (two",
        "  keys). SQS standard: $0.40 per million requests. EventBridge Scheduler: $1 per million",
        "  invocations; custom events $1 per million. API Gateway HTTP API: $1 per million requests.",
        "- Calls per operation as the tests count them (tests/integration/test_call_counts.py,",
        "  docs/BENCHMARKS.md), in the default budget scope: a warm `GET /tokens` is 1 `GetItem` (its",
        "  data key is in the container's memory); a read whose key is not adds 1 KMS `Decrypt`; the",
        "  first read of each token lifetime adds one conditional `UpdateItem`; a refresh is 4",
        "  `UpdateItem`, 1 `Decrypt`, 1 `GenerateDataKey` and about 3 SQS requests; a planner",
        "  run is 2 `GetItem` and one `Query` per DueIndex shard (8), every minute.",
        "- Lambda durations are assumed, not measured: 30 ms for a warm token read, 0.5 s for a refresh",
        "  (most of it waiting for UltraCart), 0.1 s for a planner run. CloudWatch (logs, metrics,",
        "  alarms: about $0.10 an alarm a month) is not included.",
        "",
    ]
    for title, refreshes in SCENARIOS.items():
        out += [f"## {title}", "", "| service | 1,000 merchants | 10,000 merchants |", "|---|---|---|"]
        rows = {n: lines_for(Scenario(n, 100, refreshes, 0.0)) for n in (1000, 10_000)}
        for service in rows[1000]:
            out.append(f"| {service} | ${rows[1000][service]:,.2f} | ${rows[10_000][service]:,.2f} |")
        totals = {n: sum(rows[n].values()) for n in rows}
        out += [f"| **total** | **${totals[1000]:,.2f}** | **${totals[10_000]:,.2f}** |", ""]
    out += [
        "With 1-hour tokens, merchants read every 15 minutes are refreshed about 25.8 times a day:",
        "UltraCart's budget (8,100 background calls a day by default) keeps about 314 of them",
        "(docs/CAPACITY.md); 1,000 or 10,000 need the `merchant` budget scope (if UltraCart counts",
        "per merchant) or longer-lived tokens. The AWS side is priced here whatever UltraCart allows.",
        "",
        "## The KMS line and the data-key cache",
        "",
        "Every function that opens tokens keeps the data keys KMS opened in memory for",
        f"`DataKeyCacheSeconds` ({CACHE_AGE // 60} minutes by default), one per merchant. A read then",
        "needs KMS only when its container has not opened that merchant's current data key within",
        "the age: a new key comes with every refresh, and each warm container opens it once. Assumed",
        f"here: {CONTAINERS} warm token-API containers share each merchant's reads. Token reads' KMS",
        "a month (100 reads a merchant a day):",
        "",
        "| tokens | Decrypts a merchant a day | 1,000 merchants | 10,000 merchants "
        "| one Decrypt per read (no cache) |",
        "|---|---|---|---|---|",
        *(_kms_row(label, r) for label, r in (("1-hour", 25.8), ("24-hour", 1.06))),
        "",
        "More containers (bursts, higher rates) open each key more often, up to one Decrypt a read;",
        "a longer age saves more with long-lived tokens and delays how soon disabling the key stops",
        "warm reads; `DataKeyCacheSeconds` 0 is the last column.",
        "",
        "## What each parameter changes",
        "",
        "- **Token reads per merchant** (your services): API Gateway, Lambda and one `GetItem` each,",
        "  plus a KMS `Decrypt` when the data key is not cached; `get_access_token`'s in-memory cache",
        "  (60 s) cuts reads from your own functions.",
        "- **`DataKeyCacheSeconds`** (3,600): the table above; 0 makes every read a `Decrypt`.",
        "- **Token lifetime** (UltraCart) and **usage pattern**: refreshes per merchant-day",
        "  (docs/CAPACITY.md), each 4 writes, 2 KMS calls, 3 SQS requests and a Lambda invocation;",
        "  plus one write per lifetime that is read.",
        "- **`RefreshScheduleRate`** (`rate(1 minute)`): 43,200 planner runs a month, each 10 read",
        "  units and one Lambda invocation, about $0.15 a month whatever the merchants. `rate(5 minutes)`",
        "  divides it by five but needs `RefreshMinWindowSeconds` of at least 11 minutes (18% of a",
        "  1-hour lifetime: 22% more refreshes, fewer merchants within UltraCart's budget).",
        "- **`DueShards`** (8): each planner run queries every shard; 8 more shards add 8 read units a",
        "  run (about $0.04 a month).",
        "- **`UltraCartBudgetScope`**: `merchant` drops the line's write per UltraCart call (one write",
        "  less per refresh); `both` adds one.",
        "- **`TokenApiRateLimit`** and memory: not a cost by themselves; larger memory raises the",
        "  GB-second line in proportion.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "COST.md")
    args = parser.parse_args(argv)
    args.output.write_text(render())
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
