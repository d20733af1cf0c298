"""The cost budget: which of the suite's jobs run at a step so that the whole fit stays within a share of its
training time. Pure: times go in as numbers, decisions come out; no Trainer, no clock.

A job is one monitor's regular part (run at its cadence, ``every_n_steps``, and at its early steps) or one of its
expensive parts (a rarer cadence of its own: activation maximisation, deletion/insertion, shift consistency).
:class:`Schedule` decides, at each step, which jobs run:

- step 0 (the fit's first step), the early steps and the final probe run every regular job: they are what the
  verdicts and the step slider need, so a fit too short to pay for them overspends, and says so;
- between them, the regular cadences are stretched together by one power of two (so the monitors keep probing at
  the same steps and share one forward pass): the smallest factor with which what was spent, the final probe (held
  in reserve) and the regular probes still to come fit the budget of the whole fit;
- each expensive part gets, from what the regular probes leave, an equal share and the smallest stretch of its
  cadence that fits it; with nothing left it waits for the final probe, which admits it only where it fits what
  the fit has earned by then (in the monitors' order), and is otherwise reported as not afforded;
- every admission is checked against the budget once more with its own cost, so no plan made on an old estimate
  overspends.

The budget of the fit is ``budget`` times its bare training time: the typical step's time times the fit's steps,
where the trainer knows them, else times the steps trained so far (a fit of unknown length pays as it goes).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DENSE_IMAGES",
    "MAX_STRETCH",
    "WARMUP_STEPS",
    "Decision",
    "Job",
    "Schedule",
    "StepTimes",
    "keeps_images",
    "stretch",
]

MAX_STRETCH = 1024
WARMUP_STEPS = 50
"""Steps whose times are not yet trusted (loader workers, kernel selection): the budget spaces nothing before."""


DENSE_IMAGES = 10
"""Pictures are kept at every probe of a monitor's cadence for its first ``2 * DENSE_IMAGES`` probes, then at every
other probe for the next ``DENSE_IMAGES``, every fourth for the next ``DENSE_IMAGES``, and so on."""


def keeps_images(step: int, every: int | None, first_step: int = 0) -> bool:
    """Whether a probe at ``step`` keeps its pictures on a cadence of ``every`` steps that thins as the run goes on:
    dense early, where the pictures change fastest, then spaced out by powers of two, :data:`DENSE_IMAGES` per
    doubling of the run, so that a run of ``n`` steps keeps about ``10 * log2(n / (10 * every))`` sets of pictures
    (every 100 steps: 20 up to step 2,000, 10 between 2,000 and 4,000, ..., about 120 in 1,000,000 steps)."""
    if every is None:
        return True
    elapsed = step - first_step
    spacing: int = every * 2 ** max(0, math.floor(math.log2(max(1.0, elapsed / (DENSE_IMAGES * every)))))
    return elapsed % spacing == 0


def stretch(cost: float, allowed: float) -> int | None:
    """The smallest power of two ``m`` with ``cost / m <= allowed``; None beyond :data:`MAX_STRETCH` or when
    nothing is allowed."""
    if cost <= 0:
        return 1
    if allowed <= 0:
        return None
    factor = 2 ** max(0, math.ceil(math.log2(cost / allowed) - 1e-9))
    return factor if factor <= MAX_STRETCH else None


@dataclass(frozen=True)
class Job:
    """One schedulable piece of the suite's work.

    Attributes:
        key: unique in the suite: ``"<monitor>"`` for a regular part, ``"<monitor>/<part>"`` for an expensive one.
        every: its cadence in optimizer steps (None: none; an epoch cadence or the final probe only).
        early: the extra steps of a regular part.
        expensive: an expensive part (its own cadence; never at step 0).
    """

    key: str
    every: int | None
    early: frozenset[int] = frozenset()
    expensive: bool = False

    def falls_on(self, step: int, early: bool = True) -> bool:
        """Whether this job's own cadence (and, with ``early``, its early steps) falls on ``step``."""
        return (early and step in self.early) or (self.every is not None and step % self.every == 0)


@dataclass
class Decision:
    """What runs at one step: the jobs admitted, and those whose cadence fell there but the budget skipped."""

    run: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stretch: int | None = 1


class StepTimes:
    """The typical time of a training step without the suite, and the time the suite's work added to later steps.

    Each step's time is fed in (the training thread's time from the batch's start to its end, without the probe
    itself). Steps right after a probe run beside the writer drawing it and after the probe emptied the caches:
    their excess over the typical step is the suite's too, until the writer is idle again.
    """

    def __init__(self, window: int = 64, known_after: int = 5) -> None:
        self.window = window
        self.known_after = known_after  # clean steps before the typical one is trusted
        self._clean: list[float] = []
        self._pending: list[float] = []  # steps after a probe, before the typical step was known
        self.excess = 0.0  # seconds the suite added to steps after its probes

    def add(self, seconds: float, after_probe: bool) -> None:
        """One training step's time; ``after_probe``: the suite's writer or a probe's aftermath touched it."""
        if after_probe:
            self._pending.append(seconds)
        else:
            self._clean.append(seconds)
            del self._clean[: -self.window]
        typical = self.typical()
        if typical is not None and self._pending:
            self.excess += sum(self._pending) - typical * len(self._pending)  # noise of either sign: not clipped
            self._pending = []

    def typical(self) -> float | None:
        """The median of the recent clean steps (None before there are enough to trust)."""
        return statistics.median(self._clean) if len(self._clean) >= self.known_after else None


class Schedule:
    """Decides which jobs run at each step (see the module docstring).

    Args:
        jobs: every job of the suite, regular parts and expensive parts, in the monitors' order.
        budget: the suite's share of the fit's training time (0.05: 5 %); None: every cadence as given.
        first_step: the fit's first step (non-zero when resumed).
        last_step: the step of the final probe where the trainer knows it (None: unknown).
    """

    def __init__(self, jobs: Sequence[Job], budget: float | None, first_step: int = 0,
                 last_step: int | None = None) -> None:  # fmt: skip
        self.jobs = list(jobs)
        self.budget = budget
        self.first_step = first_step
        self.last_step = last_step
        self.skipped: dict[str, int] = {}

    def allowance(self, step: int, step_seconds: float, whole_fit: bool = True) -> float:
        """Seconds the suite may spend: the budget of the fit's training time (``whole_fit``, where its length is
        known) or of the steps trained up to ``step``."""
        assert self.budget is not None
        end = self.last_step if whole_fit and self.last_step is not None else step
        return self.budget * step_seconds * max(1, end - self.first_step)

    def decide(self, step: int, costs: Mapping[str, float | None], spent: float, step_seconds: float | None,
               final: bool = False, done: Iterable[str] = ()) -> Decision:  # fmt: skip
        """The jobs that run at ``step``.

        Args:
            step: the optimizer step.
            costs: each job's expected seconds (None: not measured yet).
            spent: what the suite has spent so far, everything counted.
            step_seconds: the typical training step (None during the warm-up: nothing is spaced yet).
            final: the fit's final probe.
            done: jobs that already ran at this step.
        """
        done = set(done)
        regular = [j for j in self.jobs if not j.expensive and j.key not in done]
        expensive = [j for j in self.jobs if j.expensive and j.key not in done]
        always = final or step == self.first_step
        decision = Decision(run=[j.key for j in regular] if always else [])
        if step == 0:
            return decision  # no expensive part on an untrained network
        if self.budget is None or step_seconds is None:
            decision.run += [j.key for j in regular if not always and j.falls_on(step)]
            decision.run += [j.key for j in expensive if final or j.falls_on(step, early=False)]
            return decision
        reserve = 0.0 if final else sum(costs.get(j.key) or 0.0 for j in regular)  # the final probe's
        fit = self.allowance(step, step_seconds)
        decision.stretch = self._regular_stretch(step, costs, spent, reserve, fit)
        if not always:
            self._space_regular(step, regular, decision)
        else:
            fit = self.allowance(step, step_seconds, whole_fit=False)  # what the fit has earned by its end
        admitted = spent + reserve + sum(costs.get(k) or 0.0 for k in decision.run)
        left = fit - admitted - self._future_regular(step, costs, decision.stretch)  # what the regular probes leave
        for job in expensive:
            if final or job.falls_on(step, early=False):
                cost = costs.get(job.key)
                share = None if final else stretch(_future(step, self.last_step, job.every) * (cost or 0.0),
                                                   left / len(expensive))  # fmt: skip
                on_stretch = final or (share is not None and step % (job.every * share) == 0)  # type: ignore[operator]
                if on_stretch and (cost is None or admitted + cost <= fit):
                    decision.run.append(job.key)
                    admitted += cost or 0.0
                else:
                    decision.skipped.append(job.key)
        for key in decision.skipped:
            self.skipped[key] = self.skipped.get(key, 0) + 1
        return decision

    def affords(self, step: int, cost: float, costs: Mapping[str, float | None], spent: float,
                step_seconds: float | None) -> bool:  # fmt: skip
        """Whether a piece of work off every cadence (an advice check) that costs ``cost`` seconds fits the budget at
        ``step``: with what the regular probes will still spend at their present spacing and the final probe's
        reserve. Never during the warm-up, when no step time is known; always without a budget."""
        if self.budget is None:
            return True
        if step_seconds is None:
            return False
        regular = [j for j in self.jobs if not j.expensive]
        reserve = sum(costs.get(j.key) or 0.0 for j in regular)
        fit = self.allowance(step, step_seconds)
        factor = self._regular_stretch(step, costs, spent + cost, reserve, fit)
        return factor is not None and spent + cost + reserve + self._future_regular(step, costs, factor) <= fit

    @staticmethod
    def _space_regular(step: int, regular: Sequence[Job], decision: Decision) -> None:
        """The regular jobs at ``step``: early steps always (the learning-rate verdict's evidence, like step 0), the
        cadences where the stretch falls."""
        factor = decision.stretch
        for job in regular:
            if step in job.early:
                decision.run.append(job.key)
            elif job.falls_on(step):
                if factor is not None and step % (job.every * factor) == 0:  # type: ignore[operator]
                    decision.run.append(job.key)
                else:
                    decision.skipped.append(job.key)

    def _future_regular(self, step: int, costs: Mapping[str, float | None], factor: int | None) -> float:
        """What the regular cadences at ``factor`` will spend after ``step`` (the final probe not counted)."""
        if factor is None:
            return 0.0
        return sum(
            _future(step, self.last_step, job.every * factor) * (costs.get(job.key) or 0.0)
            for job in self.jobs
            if not job.expensive and job.every is not None
        )

    def _regular_stretch(self, step: int, costs: Mapping[str, float | None], spent: float, reserve: float,
                         fit: float) -> int | None:  # fmt: skip
        """The smallest power of two by which the regular cadences must be stretched to fit ``fit``; None when
        not even the widest spacing does. With the fit's length unknown: the rate of the regular probes against
        the budget's rate."""
        if self.last_step is None:
            assert self.budget is not None
            load = sum(
                (costs.get(j.key) or 0.0) / j.every for j in self.jobs if not j.expensive and j.every is not None
            )
            allowed = fit / max(1, step - self.first_step)  # the budget per step
            factor = stretch(load, allowed)
            return factor if factor is not None and spent + reserve <= fit else None
        factor = 1
        while factor <= MAX_STRETCH:
            if spent + reserve + self._future_regular(step - 1, costs, factor) <= fit:
                return factor
            factor *= 2
        return None


def _future(step: int, last: int | None, every: int | None) -> int:
    """How many multiples of ``every`` lie after ``step`` and before ``last`` (1 where ``last`` is unknown)."""
    if every is None:
        return 0
    if last is None:
        return 1
    return max(0, (last - 1) // every - step // every)
