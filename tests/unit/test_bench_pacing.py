"""``make bench`` sizes its pacing run to the machine: R from the harness's measured capacity, the
number of due installations from the time left, and a run its own budget cut off is "not
measured", never a MISS or installations "left unrefreshed"."""

from __future__ import annotations

import dataclasses

import pytest

from bench import report
from bench.cold import Candidate, ColdResult
from bench.memory import MemoryResult
from bench.pacing import (
    CAPACITY_SHARE,
    MIN_RUN_SECONDS,
    Calibration,
    PacingResult,
    affordable_count,
    choose_rate,
    minimum_count,
)
from bench.planner import PlannerResult


def _pacing(**changes: object) -> PacingResult:
    """A run of 2,000 due installations at R = 20/s that refreshed them all in 102 s."""
    result = PacingResult(
        requested=2000,
        seeded=2000,
        planned=2000,
        refreshed=2000,
        rate=20.0,
        latency_ms=20,
        concurrency=2,
        batch_size=5,
        reserved=2,
        maximum_concurrency=2,
        end_to_end_seconds=101.9,
        steady_seconds=101.5,
        too_many_requests=0,
        other_failures=0,
        dead_lettered=0,
        left_in_queue=0,
        per_window=[20] * 100,
        cpu={"wall": 102.0, "moto": 48.0, "workers": 21.0, "sandbox_and_harness": 2.0},
        workers=[{"records": 2800, "handler_seconds": 90.0, "failed_records": 800, "aws_calls": {}}],
    )
    return dataclasses.replace(result, **changes)  # type: ignore[arg-type]


# The slow machine of the issue: the harness refreshed 17.5/s at most while R was 20/s, and the
# bench's budget ran out 40 s into the pacing run with 1,100 seeded and 675 refreshed.
CUT_OFF = _pacing(
    requested=2000,
    seeded=1100,
    planned=1100,
    refreshed=675,
    end_to_end_seconds=40.0,
    steady_seconds=38.5,
    left_in_queue=425,
    timed_out=True,
    cpu={"wall": 40.0},
)
SLOW = Calibration(
    burst=100,
    refreshed=100,
    capacity=17.5,
    seed_seconds_each=0.045,
    configured_rate=20.0,
    rate=11.0,
    reason="65% of the measured capacity (17.5/s)",
)


# -- the arithmetic ----------------------------------------------------------------------------


def test_r_is_a_share_of_the_measured_capacity_when_that_is_below_the_configured_rate() -> None:
    rate, reason = choose_rate(20.0, 17.5)
    assert rate == 11.0  # floor(17.5 x 0.65)
    assert "17.5/s" in reason and f"{CAPACITY_SHARE:.0%}" in reason


def test_r_is_the_configured_rate_on_a_machine_with_room_for_it() -> None:
    rate, reason = choose_rate(20.0, 40.0)
    assert rate == 20.0
    assert "configured" in reason and "40.0/s" in reason


def test_r_never_drops_below_one_call_per_second() -> None:
    assert choose_rate(20.0, 0.0)[0] == 1.0
    assert choose_rate(20.0, 1.2)[0] == 1.0


@pytest.mark.parametrize(
    ("rate", "seconds_left", "seed_each"),
    [(11.0, 150.0, 0.045), (20.0, 240.0, 0.024), (5.0, 100.0, 0.06), (20.0, 1000.0, 0.024)],
)
def test_the_number_of_due_installations_fits_the_time_left(
    rate: float, seconds_left: float, seed_each: float
) -> None:
    count = affordable_count(2000, rate, seconds_left, seed_seconds_each=seed_each)
    assert minimum_count(2000, rate) <= count <= 2000 and count % 100 == 0
    # seeding them plus a paced run of them (with 10% slack per call) fits what is left, minus 15 s,
    # unless that is less than a minute of pacing (too short to judge the pace)
    assert count * (seed_each + 1.1 / rate) <= seconds_left - 15 or count == minimum_count(2000, rate)
    # and one hundred more would not (unless the request itself was the limit)
    assert count == 2000 or (count + 100) * (seed_each + 1.1 / rate) > seconds_left - 15


def test_a_calibrated_rate_sizes_the_slow_machine_run_to_its_budget() -> None:
    # 150 s left on the slow machine: at the chosen R the whole run fits, where the old sizing
    # (R = 20/s and 24 ms seeding) planned 1,100 installations that needed more than the budget.
    count = affordable_count(2000, SLOW.rate, 150.0, seed_seconds_each=SLOW.seed_seconds_each)
    assert count * SLOW.seed_seconds_each + count / SLOW.rate <= 150.0 - 15
    old = affordable_count(2000, 20.0, 150.0)  # the uncalibrated sizing, at the harness's real pace
    assert old * 0.024 + old / SLOW.capacity > 150.0 - 15


# -- the rendering -----------------------------------------------------------------------------


def test_a_run_cut_off_by_the_bench_is_not_measured_not_a_miss() -> None:
    rows = {what: (measured, verdict) for _, what, measured, _, verdict in report.pacing_rows(CUT_OFF, SLOW)}
    sustained = next(value for what, value in rows.items() if what.startswith("sustained"))
    assert sustained[1] == "not measured"
    assert "time budget" in sustained[0] and "675 of 1,100" in sustained[0]
    assert rows["due installations the run left unrefreshed"] == (
        "not measured (0 dead-lettered before the cut-off)",
        "not measured",
    )
    assert rows["429s from the sandbox"] == ("0", "ok")
    assert all(verdict != "MISS" for _, verdict in rows.values())


def test_a_dead_letter_before_the_cut_off_is_still_a_miss() -> None:
    rows = {
        what: verdict
        for _, what, _, _, verdict in report.pacing_rows(
            _pacing(timed_out=True, dead_lettered=3, refreshed=900), None
        )
    }
    assert rows["due installations the run left unrefreshed"] == "MISS"


def test_a_finished_run_is_judged() -> None:
    rows = {what: verdict for _, what, _, _, verdict in report.pacing_rows(_pacing(), None)}
    assert set(rows.values()) == {"ok"}
    short = {
        what: verdict
        for _, what, _, _, verdict in report.pacing_rows(_pacing(refreshed=1500, left_in_queue=0), None)
    }
    assert short["due installations the run left unrefreshed"] == "MISS"


def test_the_report_states_the_capacity_the_chosen_r_and_why() -> None:
    text = report.calibration_section(SLOW)
    assert "17.5/s" in text and "R = 11/s" in text and "65% of the measured capacity" in text
    rows = report.pacing_rows(CUT_OFF, SLOW)
    assert rows[0][2] == "17.5/s: R = 11/s" and rows[0][4] == "info"


def _results(
    pacing: PacingResult, calibration: Calibration | None, instructions: dict[str, int] | None = None
) -> report.Results:
    floor = ColdResult(Candidate("floor", "floor", "floor", "floor"), ready=[0.2], spawn_to_ready=[0.21])
    floor.wall, floor.imports, floor.clients, floor.cpu = [0.22], [0.15], [0.05], [0.2]
    function = ColdResult(Candidate("token_api", "token_api", "TokenApiFunction", "function"), ready=[0.22])
    function.spawn_to_ready, function.wall, function.imports, function.clients = [0.23], [0.24], [0.1], [0.1]
    machine = {
        "date": "2026-11-30",
        "cpu": "test",
        "cores": "2",
        "os": "Linux",
        "python": "3.13",
        "load": "0 / 0 / 0",
        "pkg:boto3": "1",
        "pkg:aws-lambda-powertools": "3",
        "pkg:requests": "2",
    }
    planner = PlannerResult(100_000, 1000, 50, 400, 8, 1.0, 1000, 1000, 8, 20.0)
    memory = [
        MemoryResult("baseline", [66.0], [66.0], ["ok"]),
        MemoryResult("TokenApiFunction", [71.0], [71.0], ["200"]),
    ]
    return report.Results(
        machine=machine,
        rounds=1,
        cold=[floor, function],
        import_function="TokenApiFunction",
        import_extra=[],
        shared_session=True,
        layer_compiles=True,
        calls=[],
        planner=planner,
        pacing=pacing,
        pacing_note="1,100 due installations were seeded.",
        max_receive_count=5,
        memory=memory,
        calibration=calibration,
        instructions=instructions,
        instructions_note="" if instructions else "valgrind is not installed",
    )


def test_the_whole_page_says_not_measured_for_a_cut_off_run() -> None:
    page = report.markdown(_results(CUT_OFF, SLOW))
    assert "**Pacing: not measured**" in page
    assert "cut off by the bench's own time budget" in page
    assert "R was calibrated to this machine" in page
    assert "| pacing | due installations the run left unrefreshed | not measured" in page
    assert "MISS" not in page.split("## 1.")[0].split("| pacing |", 1)[1]
    table = report.text_table(_results(CUT_OFF, SLOW))
    assert "not measured" in table


def test_the_whole_page_judges_a_finished_run() -> None:
    page = report.markdown(_results(_pacing(), None))
    assert "**Pacing: 0.98 R sustained, 0 429s** (meets the target" in page
    assert "**Pacing: not measured**" not in page and "| not measured |" not in page
    assert "cut off by the bench's own time budget" not in page


@pytest.mark.parametrize("rate", [1.0, 8.0, 13.0, 20.0])
def test_a_paced_run_is_never_shorter_than_a_minute_of_pacing(rate: float) -> None:
    # The run that measured 0.75 R: 100 due at R = 8/s is 12.5 s of pacing, in which the planner's
    # first run and the last delivery weigh as much as the pace. Even with no time left, a minute.
    count = affordable_count(2000, rate, 0.0)
    assert count / rate >= MIN_RUN_SECONDS
    assert count == minimum_count(2000, rate) and count - 100 < rate * MIN_RUN_SECONDS


def test_the_cold_start_target_is_judged_on_instructions_when_they_were_counted() -> None:
    # The token API's wall-clock median is 1.10x the floor; its instructions say 1.25x: a miss.
    over = _results(_pacing(), None, {"floor": 1_000_000_000, "token_api": 1_250_000_000})
    row = next(r for r in report.summary_rows(over) if r[0] == "cold start")
    assert row[2].startswith("1.250x floor in instructions; 220 ms = 1.10x floor") and row[4] == "MISS"
    page = report.markdown(over)
    assert "**Cold start: 0 of 1 functions meet <= 1.20x the floor in instructions**" in page
    assert "In wall-clock medians, 1 of 1 do" in page
    assert "| 1250, 1.250 |" in page
    within = _results(_pacing(), None, {"floor": 1_000_000_000, "token_api": 1_200_000_000})
    assert next(r for r in report.summary_rows(within) if r[0] == "cold start")[4] == "ok"


def test_without_valgrind_the_wall_clock_stands_in_and_the_page_says_so() -> None:
    page = report.markdown(_results(_pacing(), None))
    assert "functions meet <= 1.20x the floor in wall-clock medians**" in page
    assert "not counted in this run: valgrind is not installed" in page
    assert "| not counted |" in page
