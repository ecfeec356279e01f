"""docs/CAPACITY.md: the section on the readings of UltraCart's limits (the capacity each scope
allows, computed from measured refresh rates: the generator's arithmetic), and the capacity by
usage pattern (the simulation's counts, asserted here; its times only in the bench)."""

from __future__ import annotations

import pytest

from bench.capacity import (
    DEFAULT_DAILY,
    MAX_OVER_MINIMUM,
    PATTERNS,
    TARGETS,
    Run,
    pattern_rows,
    readings_section,
    simulate,
    template_pace,
)
from bench.common import fake_aws_credentials

# The rates docs/CAPACITY.md measured: 383 refreshes for 12 merchants in a day (1-hour tokens),
# 31 for 12 in two days (24-hour tokens).
RATES = {
    3600: Run(lifetime=3600, merchants=12, days=1.0, daily_limit=9000, refreshes=383),
    86_400: Run(lifetime=86_400, merchants=12, days=2.0, daily_limit=9000, refreshes=31),
}


def test_each_reading_states_the_merchants_its_scope_allows() -> None:
    text = readings_section(RATES, (10, 60))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| per ")}
    # Per application: 8,100 background calls a day over 31.92 and 1.29 refreshes per merchant.
    assert "| 253 | 6,270 |" in rows["per application"]
    # Per merchant's authorization: the pace (10 a minute = 14,400 a day) is what binds.
    assert "| 451 (the pace) | 11,148 (the pace) |" in rows["per merchant's authorization"]
    assert "`application`" in rows["per egress IP"]
    for scope in ("`application`", "`merchant`", "`both`"):
        assert scope in text
    assert "If the guess is wrong" in text and "429" in text


def test_the_pace_is_the_templates_default() -> None:
    assert template_pace() == (10, 60)


# -- refresh by demand: the simulation's counts (deterministic: the package's clock, seeded jitter) --


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto in-process, as the bench runs it: no endpoint, fake credentials."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name, value in fake_aws_credentials().items():
        monkeypatch.setenv(name, value)


def _pattern(name: str, lifetime: int, merchants: int, days: float) -> Run:
    period, _ = PATTERNS[name]
    return simulate(lifetime, merchants, days, daily=DEFAULT_DAILY, hourly=900, period=period)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "lifetime", "merchants", "days"),
    [
        ("every 5 minutes", 3600, 1, 0.5),
        ("hourly", 3600, 2, 1.0),
        ("once a day", 3600, 2, 4.0),
        ("once a week", 3600, 2, 21.0),
        ("never", 3600, 2, 58.0),
        ("hourly", 86_400, 1, 4.0),
        ("once a day", 86_400, 2, 4.0),
    ],
)
def test_each_usage_pattern_costs_at_most_a_tenth_over_the_fewest_refreshes(
    aws_env: None, name: str, lifetime: int, merchants: int, days: float
) -> None:
    run = _pattern(name, lifetime, merchants, days)
    ((_, _, rate, minimum, capacity_, waited),) = pattern_rows({(name, lifetime): run})
    # (A kept-alive grant's refresh may come up to one planner run after its 29 days.)
    assert 0.99 * minimum <= rate <= MAX_OVER_MINIMUM * minimum, (rate, minimum)
    assert run.unavailable == 0
    if run.period is not None and run.period <= lifetime:
        # Read at least once a lifetime: refreshed ahead, no read waits.
        assert run.reads > 0 and run.waited == 0 and waited == 0.0
    elif run.period is not None:
        # Read less often: each read refreshes inline, the fewest refreshes that serve it.
        assert run.waited == run.reads > 0 and waited == 1.0
    target = TARGETS.get((name, lifetime))
    if target is not None:
        assert capacity_ >= target


def test_the_read_latency_table_gives_p50_and_p99_of_each_kind_of_read() -> None:
    from bench.capacity import reads_section
    from bench.reads import _latency

    # 98 reads of 10 ms and two slow ones: the median is the common read, the 99th the slow tail.
    measured = _latency("waited on an inline refresh", [0.010] * 98 + [0.300, 0.500])
    assert (measured.reads, measured.p50_ms) == (100, 10.0)
    assert 300.0 <= measured.p99_ms <= 500.0
    lines = reads_section([measured])
    assert f"| waited on an inline refresh | 100 | 10.0 ms | {measured.p99_ms:.1f} ms |" in lines
