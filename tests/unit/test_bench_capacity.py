"""docs/CAPACITY.md's section on the readings of UltraCart's limits: the capacity each scope allows,
computed from the measured refresh rates the document already has (the generator's arithmetic)."""

from __future__ import annotations

from bench.capacity import Run, readings_section, template_pace

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
