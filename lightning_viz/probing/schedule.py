"""The cost budget: how far the probes must be spaced for the suite to stay within a share of training time.

Each monitor has a regular part, run at its cadence (``every_n_steps``), and some have expensive parts with a
rarer cadence of their own (activation maximisation, deletion/insertion). Given the measured cost of each part
and of a training step, :func:`plan` stretches the cadences by powers of two:

1. the regular parts together, by one factor (so the monitors keep probing at the same steps and share the
   forward pass), the smallest that fits the budget less what the early probes cost spread over the run;
2. each expensive part, by the smallest factor that fits its equal share of what the regular parts leave, or
   not at all (None: it runs at the final probe only) when they leave nothing.

The plan depends on the measured costs only through these factors, and a factor changes only when a cost
crosses a power of two, so runs whose costs are alike probe at the same steps: a part runs at step ``s`` when
``s`` is a multiple of ``every * factor``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Part", "plan", "stretch"]

MAX_STRETCH = 1024


def stretch(cost_per_step: float, allowed_per_step: float) -> int | None:
    """The smallest power of two ``m`` with ``cost_per_step / m <= allowed_per_step``; None beyond
    :data:`MAX_STRETCH` or when nothing is allowed."""
    if cost_per_step <= 0:
        return 1
    if allowed_per_step <= 0:
        return None
    factor = 2 ** max(0, math.ceil(math.log2(cost_per_step / allowed_per_step) - 1e-9))
    return factor if factor <= MAX_STRETCH else None


@dataclass(frozen=True)
class Part:
    """One schedulable piece of a monitor's work.

    Attributes:
        key: a name unique in the suite (``"<monitor>"`` for a regular part, ``"<monitor>/<part>"`` otherwise).
        every: its cadence in optimizer steps.
        cost: seconds per run as measured (None until it first ran: it is assumed to fit).
        expensive: whether it has a rarer cadence of its own.
    """

    key: str
    every: int
    cost: float | None
    expensive: bool = False


def plan(
    parts: Sequence[Part], budget: float | None, step_seconds: float | None, early_seconds_per_step: float = 0.0
) -> dict[str, int | None]:
    """The stretch factor of each part (see the module docstring); all 1 without a budget or a step time.

    Args:
        parts: every part of the suite.
        budget: the suite's share of training time (0.05: 5 %), or None for no limit.
        step_seconds: the measured time of a training step without probes.
        early_seconds_per_step: the early probes' cost spread over the run's steps.
    """
    if budget is None or step_seconds is None or step_seconds <= 0:
        return {part.key: 1 for part in parts}
    allowed = budget * step_seconds - early_seconds_per_step
    regular = [p for p in parts if not p.expensive]
    load = sum(p.cost / p.every for p in regular if p.cost is not None)
    factor = stretch(load, allowed)
    if factor is None:  # even the regular probes cannot fit: space them as far as we go
        factor = MAX_STRETCH
    factors: dict[str, int | None] = {p.key: factor for p in regular}
    expensive = [p for p in parts if p.expensive]
    left = allowed - load / factor
    for part in expensive:
        factors[part.key] = 1 if part.cost is None else stretch(part.cost / part.every, left / len(expensive))
    return factors
