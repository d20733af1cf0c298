"""The budget's schedule, without a Trainer: which jobs run at which step, given their costs and the step time."""

from __future__ import annotations

import pytest

from lightning_viz.probing.schedule import MAX_STRETCH, Job, Schedule, StepTimes, stretch

STEP = 0.1  # seconds a training step takes


def _schedule(budget: float | None, last: int | None = 1000) -> Schedule:
    jobs = [Job("A", 100, frozenset({5, 10})), Job("B", 100), Job("A/heavy", 500, expensive=True)]
    return Schedule(jobs, budget, first_step=0, last_step=last)


def test_stretch() -> None:
    assert stretch(1.0, 1.0) == 1 and stretch(1.01, 1.0) == 2 and stretch(10.0, 3.0) == 4
    assert stretch(0.0, 0.0) == 1 and stretch(1.0, 0.0) is None and stretch(1e9, 1.0) is None
    assert stretch(MAX_STRETCH, 1.0) == MAX_STRETCH


def test_without_a_budget_every_cadence_runs() -> None:
    schedule = _schedule(None)
    assert schedule.decide(0, {}, 0.0, STEP).run == ["A", "B"]  # no expensive part at step 0
    assert schedule.decide(5, {}, 0.0, STEP).run == ["A"]
    assert schedule.decide(500, {}, 0.0, STEP).run == ["A", "B", "A/heavy"]
    assert schedule.decide(1000, {}, 0.0, STEP, final=True).run == ["A", "B", "A/heavy"]


def test_step_zero_the_early_steps_and_the_final_probe_always_run() -> None:
    schedule = _schedule(1e-6)
    costs = {"A": 1.0, "B": 1.0, "A/heavy": 1.0}
    assert schedule.decide(0, costs, 0.0, STEP).run == ["A", "B"]
    assert schedule.decide(10, costs, 2.0, STEP).run == ["A"]
    decision = schedule.decide(100, costs, 3.0, STEP)
    assert decision.run == [] and decision.skipped == ["A", "B"]
    final = schedule.decide(1000, costs, 3.0, STEP, final=True)
    assert final.run == ["A", "B"] and final.skipped == ["A/heavy"]
    assert schedule.skipped == {"A": 1, "B": 1, "A/heavy": 1}


def test_the_regular_cadences_stretch_together_so_that_the_whole_fit_keeps_the_budget() -> None:
    """5 % of 1,000 steps of 0.1 s: 5 s. Step 0 spent 1 s; the final probe (0.5 s) is held back; each probe step of A
    and B costs 0.5 s: the 3.5 s between leave room for 7 of the 9 probe steps at the cadence."""
    schedule = _schedule(0.05)
    costs = {"A": 0.25, "B": 0.25, "A/heavy": 10.0}
    spent, runs = 1.0, []
    for step in range(100, 1000, 100):
        decision = schedule.decide(step, costs, spent, STEP)
        if decision.run:
            assert decision.run == ["A", "B"]  # together, on one forward pass
            runs.append(step)
            spent += 0.5
    assert runs[0] == 200 and len(runs) == 7
    assert spent + 0.5 <= 5.0  # with the final probe: within the budget
    # nothing is left for the heavy part (10 s a run) at its cadence or at the end
    assert "A/heavy" in schedule.decide(500, costs, spent, STEP).skipped
    assert schedule.decide(1000, costs, spent, STEP, final=True).skipped == ["A/heavy"]


def test_an_expensive_part_runs_where_the_regular_probes_leave_room() -> None:
    schedule = _schedule(0.2)  # 20 s in all
    costs = {"A": 0.25, "B": 0.25, "A/heavy": 2.0}
    assert schedule.decide(500, costs, 1.0, STEP).run == ["A", "B", "A/heavy"]
    assert schedule.decide(1000, costs, 8.0, STEP, final=True).run == ["A", "B", "A/heavy"]


def test_the_final_probe_admits_expensive_parts_only_while_together_they_fit() -> None:
    """At the end, each part is checked against what was spent, the final regular parts and the parts admitted
    before it, against what the fit has earned: 10 s of 100 s here."""
    jobs = [Job("A", 100), Job("A/one", 500, expensive=True), Job("B", 100), Job("B/two", 500, expensive=True)]
    costs = {"A": 1.0, "B": 1.0, "A/one": 3.0, "B/two": 3.0}
    schedule = Schedule(jobs, 0.1, first_step=0, last_step=1000)
    final = schedule.decide(1000, costs, 4.0, STEP, final=True)  # 4 + 2 + 3 = 9 s: one part fits, not two
    assert final.run == ["A", "B", "A/one"] and final.skipped == ["B/two"]
    again = Schedule(jobs, 0.1, first_step=0, last_step=1000).decide(1000, costs, 1.0, STEP, final=True)
    assert again.run == ["A", "B", "A/one", "B/two"]


def test_a_fit_of_unknown_length_pays_as_it_goes() -> None:
    schedule = _schedule(0.05, last=None)
    costs = {"A": 0.25, "B": 0.25, "A/heavy": 10.0}
    # at step 100, 10 s of training earned 0.5 s: spent 1 s already, nothing runs; by step 800, 4 s earned
    assert schedule.decide(100, costs, 1.0, STEP).run == []
    assert schedule.decide(800, costs, 1.0, STEP).run == ["A", "B"]


def test_nothing_is_spaced_before_the_step_time_is_known() -> None:
    schedule = _schedule(1e-6)
    assert schedule.decide(100, {"A": 1.0, "B": 1.0}, 5.0, None).run == ["A", "B"]


def test_a_resumed_fit_counts_from_its_first_step() -> None:
    schedule = Schedule([Job("A", 100)], 0.05, first_step=500, last_step=1500)
    assert schedule.decide(500, {"A": 1.0}, 0.0, STEP).run == ["A"]  # the resumed fit's first probe
    assert schedule.allowance(600, STEP) == pytest.approx(0.05 * STEP * 1000)


def test_step_times_charge_the_steps_after_a_probe_beyond_the_typical_one() -> None:
    times = StepTimes(known_after=5)
    times.add(0.20, after_probe=True)  # right after step 0's probe: charged once the typical step is known
    for _ in range(10):
        times.add(0.10, after_probe=False)
    assert times.excess == pytest.approx(0.10)
    times.add(0.15, after_probe=True)
    times.add(0.12, after_probe=True)
    assert times.typical() == pytest.approx(0.10)
    assert times.excess == pytest.approx(0.17)
