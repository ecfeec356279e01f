"""Capacity: how many merchants a token lifetime allows under the UltraCart budget.

``python -m bench.capacity`` (run by ``make bench``) simulates the planner and the refresh worker
over days of the package's clock (moto in-process, a fake UltraCart that issues tokens of a given
lifetime), with the real code: ``ucoauth.usecases.refresh.plan`` every planner interval, then
``refresh_due`` for what it queued, under the real pace and budget. It measures:

1. refreshes per merchant per day for 1-hour and 24-hour tokens (the refresh window and jitter
   decide it), and from that the capacity at the default budget and at UltraCart's own limit;
2. what happens past capacity, on a budget scaled down so a day is quick to simulate: at 90% of
   capacity nothing is left behind; at 130% the backlog grows (the ``RefreshBacklog`` metric the
   capacity alarm watches is above zero run after run) and tokens start to expire unrefreshed;
3. from the refresh rates of 1, what each reading of UltraCart's limits allows (the budget's
   scope, ``UltraCartBudgetScope``): per application, per merchant's authorization, per IP.

Writes docs/CAPACITY.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, progress, set_process_aws_env, use_project_paths

REGION = "us-east-1"
PLANNER_INTERVAL = 300
DEFAULT_DAILY = 9000
ULTRACART_DAILY = 10_000
DEFAULT_RESERVE = 0.1
ULTRACART_HOURLY = 1000


class _FakeUltraCart:
    """Issues a fresh pair on every refresh (strict rotation), tokens of ``lifetime`` seconds."""

    def __init__(self, lifetime: int) -> None:
        self.lifetime = lifetime
        self.refreshes = 0
        self._n = 0

    def _pair(self) -> Any:
        from ucoauth.adapters.ultracart import TokenResponse

        self._n += 1
        return TokenResponse(
            access_token=f"acc{self._n:08d}Xq9",
            refresh_token=f"ref{self._n:08d}Xq9",
            expires_in=self.lifetime,
        )

    def exchange_code(self, code: str, redirect_uri: str) -> Any:
        return self._pair()

    def refresh(self, refresh_token: str) -> Any:
        self.refreshes += 1
        return self._pair()

    def revoke(self, token: str) -> Any:
        from ucoauth.adapters.ultracart import RevokeResponse

        return RevokeResponse(successful=True)

    def me(self, access_token: str) -> Any:
        raise NotImplementedError

    def device_authorize(self, scope: str) -> Any:  # the capacity model has no devices
        raise NotImplementedError

    def poll_device(self, device_code: str) -> Any:
        raise NotImplementedError


@dataclass
class Run:
    lifetime: int
    merchants: int
    days: float
    daily_limit: int
    refreshes: int = 0
    backlog_runs: int = 0
    first_backlog_hour: float | None = None
    expired_peak: int = 0  # most merchants holding an expired token at one hourly check


def simulate(
    lifetime: int, merchants: int, days: float, *, daily: int, hourly: int, watch_expiry: bool = False
) -> Run:
    """Run the planner and the worker over ``days`` of package time."""
    import boto3
    import moto

    from devstack.resources import create_resources
    from ucoauth.adapters import aws as uc_aws
    from ucoauth.adapters.crypto import TokenSet
    from ucoauth.adapters.services import Services
    from ucoauth.base.errors import RetryLaterError
    from ucoauth.base.settings import Settings
    from ucoauth.base.timing import Deadline
    from ucoauth.core.issued import token_fields
    from ucoauth.usecases.refresh import plan, refresh_due

    run = Run(lifetime=lifetime, merchants=merchants, days=days, daily_limit=daily)
    with moto.mock_aws():
        uc_aws.reset_clients()
        resources = create_resources(boto3.Session(region_name=REGION), stage="bench")
        env = resources.function_environment(
            "RefreshWorkerFunction",
            overrides={"ULTRACART_DAILY_LIMIT": str(daily), "ULTRACART_HOURLY_LIMIT": str(hourly)},
        )
        env.pop("AWS_ENDPOINT_URL", None)
        settings = Settings.from_env(env)
        services = Services.from_settings(settings)
        fake = _FakeUltraCart(lifetime)
        services.ultracart_factory = lambda: fake
        now = [float(int(time.time()) // 86_400 * 86_400)]
        services.clock = lambda: now[0]
        services.sleep = lambda seconds: None
        start = now[0]
        # Installs spread evenly over one lifetime: the steady state from the first hour on.
        for index in range(merchants):
            merchant_id = f"C{index:05d}"
            now[0] = start - lifetime + (index + 0.5) * lifetime / merchants
            answer = fake.exchange_code("c", "r")
            fields = token_fields(
                services, merchant_id, TokenSet(answer.access_token, answer.refresh_token), answer
            )
            services.installations.save_installation(merchant_id, fields, now=int(now[0]))
        now[0] = start
        fake.refreshes = 0
        steps = int(days * 86_400 // PLANNER_INTERVAL)
        for step in range(steps):
            now[0] = start + step * PLANNER_INTERVAL
            stats: dict[str, int] = {}
            queued = plan(services, stats=stats)
            if stats.get("backlog", 0):
                run.backlog_runs += 1
                if run.first_backlog_hour is None:
                    run.first_backlog_hour = (now[0] - start) / 3600
            for merchant_id in queued:
                with contextlib.suppress(RetryLaterError):
                    refresh_due(services, merchant_id, deadline=Deadline(now[0] + 120, services.clock))
            if watch_expiry and step % (3600 // PLANNER_INTERVAL) == 0:
                expired = 0
                for index in range(merchants):
                    installation = services.installations.get(f"C{index:05d}")
                    if installation is not None and (installation.access_expires_at or 0) <= now[0]:
                        expired += 1
                run.expired_peak = max(run.expired_peak, expired)
        run.refreshes = fake.refreshes
        uc_aws.reset_clients()
    return run


def per_merchant_day(run: Run) -> float:
    return run.refreshes / run.merchants / run.days


def capacity(rate: float, daily: int, reserve: float) -> int:
    """Merchants the background share of a daily budget keeps refreshed at ``rate`` per day."""
    return int(daily * (1 - reserve) // rate)


def template_pace() -> tuple[int, int]:
    """(RefreshPaceLimit, RefreshPaceWindowSeconds): the template's defaults."""
    from devstack.resources import load_template

    parameters = load_template()["Parameters"]
    limit, window = (
        parameters["RefreshPaceLimit"]["Default"],
        parameters["RefreshPaceWindowSeconds"]["Default"],
    )
    return int(limit), int(window)


def pace_capacity(rate: float, pace_limit: int, pace_window: int) -> int:
    """Merchants the refresh pace alone keeps refreshed at ``rate`` refreshes per day."""
    return int(pace_limit * 86_400 / pace_window // rate)


# Measured with the pacing bench (``python -m bench.pacing``: 300 due, R = 10/s, two workers, the
# sandbox refusing concurrent calls per application): the merchant scope met 132 429s, the
# application scope none.
WRONG_GUESS_429S = 132


def _merchants(reading: str, count: int, per_application: int) -> str:
    if reading.startswith("per merchant"):
        return f"{count:,} (the pace)"
    if reading.startswith("per egress"):
        return f"{per_application:,}, or fewer if the address is shared"
    return f"{count:,}"


def readings_section(rates: dict[int, Run], pace: tuple[int, int]) -> str:
    """What each reading of "per authorized application and per IP" allows, and which scope."""
    hour_rate, day_rate = per_merchant_day(rates[3600]), per_merchant_day(rates[86_400])
    pace_limit, pace_window = pace
    app_hour = capacity(hour_rate, DEFAULT_DAILY, DEFAULT_RESERVE)
    app_day = capacity(day_rate, DEFAULT_DAILY, DEFAULT_RESERVE)
    full_hour = capacity(hour_rate, ULTRACART_DAILY, 0.0)
    full_day = capacity(day_rate, ULTRACART_DAILY, 0.0)
    pace_hour = pace_capacity(hour_rate, pace_limit, pace_window)
    pace_day = pace_capacity(day_rate, pace_limit, pace_window)
    pace_per_day = int(pace_limit * 86_400 / pace_window)
    background = int(DEFAULT_DAILY * (1 - DEFAULT_RESERVE))
    table = [
        (
            "per application",
            "every call for every merchant",
            "`application` (the default)",
            app_hour,
            app_day,
        ),
        ("per merchant's authorization", "one merchant's calls", "`merchant`", pace_hour, pace_day),
        (
            "per egress IP",
            "every call leaving one address, whoever makes it",
            "`application` (its share)",
            0,
            0,
        ),
    ]
    rows = "\n".join(
        f"| {reading} | {together} | {setting} | {_merchants(reading, hour, app_hour)} "
        f"| {_merchants(reading, day, app_day)} |"
        for reading, together, setting, hour, day in table
    )
    return f"""## Which limits UltraCart means

UltraCart documents {ULTRACART_HOURLY:,} requests an hour and {ULTRACART_DAILY:,} a day "per authorized
application and per IP", counted in a leaky bucket, with no `Retry-After`, and a 429 for
concurrent requests for the same application. Whose calls count together is not settled by
those words; the `UltraCartBudgetScope` parameter says which reading the stack plans for.

| reading | what counts together | setting | merchants, 1-hour tokens | merchants, 24-hour tokens |
|---|---|---|---|---|
{rows}

- **Per application** (every merchant together): {background:,} background calls a day at the
  defaults keep {app_hour:,} merchants with 1-hour tokens refreshed ({hour_rate:.2f} refreshes each a
  day) and {app_day:,} with 24-hour tokens ({day_rate:.2f} a day); all of UltraCart's {ULTRACART_DAILY:,}
  with no reserve would keep {full_hour:,} and {full_day:,}. Calls go out one at a time for the
  whole application (the budget's line: one more DynamoDB write per call), so UltraCart never sees
  two at once. Your app's own calls with the merchants' tokens count at UltraCart too, but not in
  this budget: lower `UltraCartHourlyLimit` and `UltraCartDailyLimit` to leave them room.
- **Per merchant's authorization** (what a merchant sees as the "authorized application" in its
  UltraCart account): each merchant has {ULTRACART_HOURLY:,} an hour and {ULTRACART_DAILY:,} a day of its own
  and the stack uses about {hour_rate:.0f} of them a day with 1-hour tokens, so the budget never stops a
  refresh; the global refresh pace does. {pace_limit} per {pace_window} s (the template's default) is
  {pace_per_day:,} refreshes a day: {pace_hour:,} merchants with 1-hour tokens, {pace_day:,} with 24-hour
  tokens; raise `RefreshPaceLimit` for more. Each merchant's windows (`BUDGET#M#<merchant>`) count
  the stack's calls for it; a code exchange (and `/oauth/me` after it) counts in the application's,
  as UltraCart has not said yet whose it is. Calls for different merchants may overlap; one
  merchant's never do (its lease).
- **Per egress IP**: every call leaving one address counts together, whichever application or
  merchant it is for. Behind a NAT gateway (Lambda in a VPC) that is the NAT's Elastic IP: when
  this stack is its only UltraCart caller, per IP is per application (`application`); when other
  stacks or apps call UltraCart through it too, give this one its share by lowering
  `UltraCartHourlyLimit` and `UltraCartDailyLimit`. Outside a VPC, Lambda's calls leave from AWS
  addresses that change and are shared, and nothing here can count them per address;
  `application` at least keeps the whole stack within one address's limits.
- **`both`** (a call needs room in the application's windows and in its merchant's) reads the
  limits as per authorization *and* per IP at once. Both windows use the same limits (one pair of
  parameters), and a merchant's calls are a part of the application's, so `both` refuses exactly
  what `application` refuses, at one more write per call for a known merchant; what it adds is
  each merchant's own counts.

**Which to choose.** `application` until UltraCart says otherwise: it stays within every reading
as long as the stack is its address's only UltraCart caller, and a wrong guess costs capacity
only. `merchant` once UltraCart confirms that the limits count per merchant's authorization and
that no per-IP limit applies to your egress. `both` where you want each merchant's counts kept
under the `application` reading's refusals.

**If the guess is wrong.**

- `application` where UltraCart counts per merchant: nothing fails. The stack stops short of
  what UltraCart would allow: the planner leaves installations behind (`RefreshBacklog` and its
  alarm) from about {app_hour:,} merchants with 1-hour tokens, and calls wait for each other on the
  line.
- `merchant` where UltraCart counts per application (or per IP): nothing in the stack keeps it
  under {ULTRACART_HOURLY:,} an hour once the merchants' refreshes add up to more, and calls for
  different merchants overlap. UltraCart answers 429 to the excess and to the overlaps (the pacing
  bench, `python -m bench.pacing --set ULTRACART_BUDGET_SCOPE=merchant`, with the sandbox refusing
  concurrent calls per application: {WRONG_GUESS_429S} 429s in 300 refreshes at 10/s with two workers;
  none with `application`). A 429 is transient: the stored tokens stay, the message comes back
  with capped exponential backoff and full jitter (30 s doubling up to 15 minutes; UltraCart sends
  no `Retry-After`), and `TokenRefreshFailedAlarm` fires. Refreshes run late; a token that expires
  meanwhile gets 503 with `Retry-After` from the token API, and a merchant whose code exchange
  meets a 429 gets the 502 page that asks to start the installation again in a minute. Switch to
  `application`.
- Per IP with the address shared: every setting overshoots by what the others send, with the
  same 429s; lower the limits to this stack's share.
"""


def render(rates: dict[int, Run], past: list[Run], scaled_daily: int, seconds: float) -> str:
    lines = [
        "# Capacity",
        "",
        "Generated by `make bench` (`python -m bench.capacity`); do not edit by hand.",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {seconds:.0f} s",
        "- The real planner and refresh worker (`ucoauth.usecases.refresh`) over simulated days of the package's",
        "  clock, moto in-process, a fake UltraCart with strict rotation; the planner runs every"
        f" {PLANNER_INTERVAL} s,",
        "  the pace and the budget are the template's defaults unless a row says otherwise.",
        "",
        "## How many merchants a token lifetime allows",
        "",
        "A token is refreshed when it has max(15 minutes, 20% of its lifetime) left, less up to 10% of",
        "that window of jitter. Every UltraCart call the stack makes counts against one budget (1,000",
        "an hour and 10,000 a day per app at UltraCart; 900 and 9,000 by default here, and 10% of both",
        "kept for merchants installing in the browser), so background refreshes may use 8,100 a day.",
        "This is the default reading of UltraCart's limits (per application); see",
        "[Which limits UltraCart means](#which-limits-ultracart-means) for the others.",
        "",
        "| token lifetime | refreshes per merchant per day (measured) | merchants at 8,100/day (defaults) "
        "| merchants at 10,000/day (all of UltraCart's, no reserve) |",
        "|---|---|---|---|",
    ]
    for lifetime, run in sorted(rates.items()):
        rate = per_merchant_day(run)
        lines.append(
            f"| {lifetime // 3600} h | {rate:.2f} ({run.refreshes} for {run.merchants} merchants in "
            f"{run.days:g} days) | {capacity(rate, DEFAULT_DAILY, DEFAULT_RESERVE):,} "
            f"| {capacity(rate, ULTRACART_DAILY, 0.0):,} |"
        )
    lines += [
        "",
        "(At a refresh every 80% of the lifetime the figures would be 30 and 1.25 a day: about 330",
        "merchants with 1-hour tokens and 8,000 with 24-hour tokens at 10,000 calls a day. The window",
        "here refreshes 1-hour tokens a little earlier, at 75% less jitter, which costs a few merchants.)",
        "",
        "Installs, `/oauth/me` and revokes come out of the same budget: every install or uninstall a day",
        "takes one (two for an uninstall) from the same 9,000.",
        "",
        "## Past capacity",
        "",
        f"The same simulation on a budget scaled down to {scaled_daily:,} calls a day (so a day is quick",
        "to simulate; capacity scales with the budget), 1-hour tokens, one simulated day:",
        "",
        "| merchants | share of capacity | refreshes | planner runs that left installations behind "
        "| first one | most merchants holding an expired token (hourly checks) |",
        "|---|---|---|---|---|---|",
    ]
    cap = capacity(per_merchant_day(rates[3600]), scaled_daily, DEFAULT_RESERVE)
    for run in past:
        first = f"{run.first_backlog_hour:.1f} h in" if run.first_backlog_hour is not None else "none"
        lines.append(
            f"| {run.merchants} | {run.merchants / cap:.0%} | {run.refreshes} | {run.backlog_runs} | {first} "
            f"| {run.expired_peak} |"
        )
    lines += [
        "",
        "What happens past capacity: the budget is never exceeded (UltraCart is never asked for more",
        "than its limits), so refreshes wait. The planner queues at most what the budget has left and",
        "counts the rest as `RefreshBacklog`; the `RefreshBacklogAlarm` fires when three runs in a row",
        "(15 minutes) leave installations behind, which happens before their tokens expire (the refresh",
        "window is at least 15 minutes ahead of expiry). Once the daily budget is spent, due tokens",
        "expire and wait for the next UTC day; the token API then answers 503 with `Retry-After` for an",
        "expired token rather than exceeding the budget, and serves a still-valid stored token as usual.",
        "",
        "What to do when the alarm fires: raise `UltraCartHourlyLimit`/`UltraCartDailyLimit` if UltraCart",
        "granted your app more, ask UltraCart for longer-lived tokens (capacity grows with the lifetime),",
        "set `UltraCartBudgetScope` to `merchant` if UltraCart confirms its limits count per merchant's",
        "authorization (below), or split merchants across apps.",
        "",
    ]
    return "\n".join(lines) + "\n" + readings_section(rates, template_pace())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "CAPACITY.md")
    args = parser.parse_args(argv)
    use_project_paths()
    set_process_aws_env()
    os.environ.pop("AWS_ENDPOINT_URL", None)
    import warnings

    warnings.filterwarnings("ignore")
    started = time.monotonic()
    rates: dict[int, Run] = {}
    progress("capacity: refresh rate of 1-hour tokens")
    rates[3600] = simulate(3600, 12, 1.0, daily=DEFAULT_DAILY, hourly=900)
    progress("capacity: refresh rate of 24-hour tokens")
    rates[86_400] = simulate(86_400, 12, 2.0, daily=DEFAULT_DAILY, hourly=900)
    scaled_daily, scaled_hourly = 400, 40
    cap = capacity(per_merchant_day(rates[3600]), scaled_daily, DEFAULT_RESERVE)
    past = []
    for share in (0.9, 1.3):
        count = max(1, round(cap * share))
        progress(f"capacity: {count} merchants on a {scaled_daily}/day budget")
        past.append(simulate(3600, count, 1.0, daily=scaled_daily, hourly=scaled_hourly, watch_expiry=True))
    args.output.write_text(render(rates, past, scaled_daily, time.monotonic() - started))
    progress(f"capacity: wrote {args.output}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
