"""The monitors of one Trainer probe together: one session per trainer runs each probe step for all of them.

At a probe step the session enters the isolation once, builds one :class:`~lightning_viz.probing.ProbeContext`
(one forward pass) per probe batch, lets every monitor that is due read from it, and hands what they log to the
background writer. It also keeps the cost budget (:mod:`lightning_viz.probing.schedule`), writes the
custom-scalars layout once, and gives each monitor tags of its own.
"""

from __future__ import annotations

import re
import statistics
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_viz.callbacks._writer import BackgroundWriter, Written, use_native_crc32c
from lightning_viz.diagnostics import nonfinite_parameters
from lightning_viz.methods import isolated
from lightning_viz.probe import ProbeBatch
from lightning_viz.probing import ProbeContext
from lightning_viz.probing.schedule import Part, plan

if TYPE_CHECKING:
    from lightning_viz.callbacks._base import ProbeMonitor

__all__ = ["ProbeSession", "forget_session", "session_for"]

WARMUP_STEPS = 50

_SESSIONS: weakref.WeakKeyDictionary[Any, ProbeSession] = weakref.WeakKeyDictionary()


def session_for(trainer: Any) -> ProbeSession:
    """The session of ``trainer``'s monitors (created by the first monitor that asks)."""
    session = _SESSIONS.get(trainer)
    if session is None:
        session = _SESSIONS[trainer] = ProbeSession(trainer)
    return session


def forget_session(trainer: Any) -> None:
    """Drop ``trainer``'s session (at teardown: a later fit or validate starts a new one)."""
    _SESSIONS.pop(trainer, None)


@dataclass
class _Due:
    """What one monitor runs at a probe step: its regular part and/or some expensive parts."""

    monitor: ProbeMonitor
    regular: bool
    parts: list[str] = field(default_factory=list)


class ProbeSession:
    """Runs the probe steps of all the lightning_viz monitors attached to one trainer."""

    def __init__(self, trainer: Any) -> None:
        from lightning_viz.callbacks._base import ProbeMonitor

        self.monitors: list[ProbeMonitor] = [c for c in trainer.callbacks if isinstance(c, ProbeMonitor)]
        budgets = [m.budget for m in self.monitors if m.budget is not None]
        self.budget = min(budgets) if len(budgets) == len(self.monitors) and budgets else None
        self.writer: BackgroundWriter | None = None
        self.started = False
        self.layout_written = False
        self.probes: list[ProbeBatch] = []
        self._steps_done: set[tuple[int, int, str]] = set()  # (id(monitor), step, part)
        self.drawn: dict[tuple[int, int], ProbeBatch] = {}  # probes drawn from the loaders, by (size, seed)
        self.checked: set[Any] = set()  # groups whose model output was checked
        self.memo: dict[Any, Any] = {}  # setup-time results several monitors need (default layers)
        self._fit_start: float | None = None
        self._start_step = 0
        self._probe_seconds = 0.0
        self._skipped: dict[str, int] = {}  # probes the budget skipped, by part
        self._skipped_at: set[tuple[str, int]] = set()
        self._last_plan: dict[str, int | None] | None = None
        self._logged_step: int | None = None
        self.final_step: int | None = None  # the step of the final probe, once it is planned
        self._total_steps: float = float("inf")
        self._forward_seconds: list[float] = []  # the shared forward pass's last times (the parts' priors' unit)
        self._name_monitors()

    # -- identity ---------------------------------------------------------------------------------------------------

    def _name_monitors(self) -> None:
        """Tags unique per monitor: the second monitor of a class gets a suffix naming its options that differ."""
        seen: dict[type, list[ProbeMonitor]] = {}
        for monitor in self.monitors:
            others = seen.setdefault(type(monitor), [])
            monitor.tag_suffix = "" if not others else _suffix(monitor, others)
            others.append(monitor)

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def attach_writer(self, summary_writer: Any) -> None:
        if self.writer is None and summary_writer is not None:
            use_native_crc32c()
            self.writer = BackgroundWriter(summary_writer)

    def start(self, trainer: Any, pl_module: nn.Module) -> None:
        """Once per fit, on every rank (so a configuration error stops all ranks alike): probes, layers, layout."""
        if self.started:
            return
        self.started = True
        self._fit_start = time.perf_counter()
        for monitor in self.monitors:
            monitor._prepare(trainer, pl_module, self)
        self._probe_seconds += time.perf_counter() - self._fit_start  # drawing the probe, tracing layers: the suite's
        self._start_step = trainer.global_step
        try:  # validate/test have no train loader to count
            steps = trainer.estimated_stepping_batches if trainer.training or trainer.state.fn == "fit" else None
        except Exception:
            steps = None
        self._total_steps = float(steps) if isinstance(steps, (int, float)) else float("inf")
        if trainer.is_global_zero and self.writer is not None and not self.layout_written:
            layout = {}
            for monitor in self.monitors:
                layout.update(layout_for(monitor.custom_scalars(), monitor.tag_suffix))
            if layout:
                self.writer.writer.add_custom_scalars(layout)
            self.layout_written = True

    def is_last(self, step: int) -> bool:
        """Whether ``step`` is the fit's last optimizer step (as far as the trainer can tell) or its final probe's."""
        return self.final_step == step or step >= self._total_steps

    def shared_probe(self, probe: ProbeBatch) -> ProbeBatch:
        """The session's probe batch equal to ``probe`` (the same object for all monitors that probe the same
        images, so the checkpoint holds one copy and the step one forward pass), or ``probe`` itself."""
        for known in self.probes:
            if known is probe or _same_probe(known, probe):
                return known
        self.probes.append(probe)
        return probe

    def finish(self) -> None:
        """Write out everything queued, and report the writer's failures as failed probes."""
        if self.writer is not None:
            self.writer.drain()
            self._report_writer_errors()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self._report_writer_errors()
            self.writer = None

    def _report_writer_errors(self) -> None:
        assert self.writer is not None
        for error in self.writer.errors():
            self.monitors[0]._failed(error, None, "writing to TensorBoard")

    # -- scheduling -------------------------------------------------------------------------------------------------

    def _spent(self) -> float:
        """The suite's cost so far: the probes' time on the training thread and the writer's CPU time (where training
        keeps every core busy, as on a CPU, the writer's work costs it about that much wall time)."""
        return self._probe_seconds + (self.writer.seconds if self.writer is not None else 0.0)

    def step_seconds(self, step: int) -> float | None:
        """Wall time of a training step without the probes, measured since the fit started; None for the first
        :data:`WARMUP_STEPS` steps, whose times include warm-up (loader workers, kernel selection), so the budget
        spaces nothing before it has a measure it can trust."""
        if self._fit_start is None or step - self._start_step < WARMUP_STEPS:
            return None
        return max(0.0, time.perf_counter() - self._fit_start - self._spent()) / (step - self._start_step)

    def plan(self, step: int) -> dict[str, int | None]:
        parts: list[Part] = []
        early_cost = 0.0
        for monitor in self.monitors:
            if monitor.every_n_steps is not None:
                parts.append(Part(monitor.label, monitor.every_n_steps, monitor.cost("regular")))
            for name, every in monitor.expensive_parts().items():
                parts.append(Part(f"{monitor.label}/{name}", every, self._part_cost(monitor, name), expensive=True))
            cost = monitor.cost("regular")
            if cost is not None:
                early_cost += cost * len([s for s in monitor.early_steps if s > step])
        early = early_cost / self._total_steps if self._total_steps > step else 0.0
        return plan(parts, self.budget, self.step_seconds(step), early)

    def _part_cost(self, monitor: ProbeMonitor, name: str) -> float | None:
        """An expensive part's measured cost, or before it ran, the monitor's prior in forward passes of the probe."""
        cost = monitor.cost(name)
        if cost is None and self._forward_seconds:
            cost = monitor.part_passes(name) * statistics.median(self._forward_seconds)
        return cost

    def _affordable(self, cost: float | None, step: int, admitted: float = 0.0, spent: float | None = None) -> bool:
        """Whether the probes' time so far (or ``spent``), what this probe step has ``admitted`` already and ``cost``
        stay within the budget of the fit's wall time so far (always, during the warm-up, as for the cadences)."""
        if self.budget is None or cost is None or self._fit_start is None or step - self._start_step < WARMUP_STEPS:
            return True
        elapsed = time.perf_counter() - self._fit_start
        return (self._spent() if spent is None else spent) + admitted + cost <= self.budget * elapsed

    def due(self, step: int, final: bool = False) -> list[_Due]:
        """What runs at ``step`` by the monitors' cadences, stretched by the budget; skipped probes are counted.
        The final probe runs whatever has not run at this step yet: the regular parts always; an expensive part where
        what the probes have spent so far, the final probe's regular parts and the expensive parts admitted before it,
        and its own cost stay within the budget of the fit's time (in the monitors' order); and one that never ran
        where it fits that budget with the other parts that never ran, whatever the probes spent."""
        if not final and step != 0 and not any(m.is_probe_step(step) or m.part_step(step) for m in self.monitors):
            return []  # most steps: nothing to plan (planning at every step cost 0.1 ms a step)
        if final:
            self.final_step = step
        factors = self.plan(step)
        self._last_plan = factors
        due = []
        # the final probe's regular parts always run: what they will cost counts before any expensive part's
        admitted = firsts = 0.0  # seconds admitted at this probe step: all parts, and parts that never ran
        if final:
            admitted = sum(
                m.cost("regular") or 0.0 for m in self.monitors if (id(m), step, "regular") not in self._steps_done
            )
        for monitor in self.monitors:
            every = monitor.every_n_steps
            done = (id(monitor), step, "regular") in self._steps_done
            regular = not done and (final or step == 0 or step in monitor.early_steps)
            if not done and not regular and every is not None and step % every == 0:
                factor = factors.get(monitor.label, 1)
                regular = factor is not None and step % (every * factor) == 0
                if not regular:
                    self._skip(monitor.label, step)
            parts = []
            for name, part_every in monitor.expensive_parts().items():
                key = f"{monitor.label}/{name}"
                if step == 0 or (id(monitor), step, name) in self._steps_done or (not final and step % part_every):
                    continue
                part_factor = factors.get(key, 1)
                cost = self._part_cost(monitor, name) if final else None
                # a part that never ran runs at the final probe where the budget of the whole fit holds it (with the
                # other such parts), whatever the regular probes spent: the budget spaces the parts, and does not
                # remove one that would fit the fit on its own (so the suite takes at most twice its budget)
                first = final and monitor.cost(name) is None and self._affordable(cost, step, firsts, spent=0.0)
                if (final and (first or self._affordable(cost, step, admitted))) or (
                    not final and part_factor is not None and step % (part_every * part_factor) == 0
                ):
                    parts.append(name)
                    admitted += cost or 0.0
                    firsts += (cost or 0.0) if first else 0.0
                else:
                    self._skip(key, step)
            if final:  # what the last batch's hook skipped at this step runs after all
                for key in [monitor.label, *(f"{monitor.label}/{name}" for name in parts)]:
                    if (key, step) in self._skipped_at:
                        self._skipped_at.discard((key, step))
                        self._skipped[key] -= 1
            if regular or parts:
                due.append(_Due(monitor, regular, parts))
        return due

    def due_at_epoch_end(self, step: int, epoch: int) -> list[_Due]:
        """The monitors whose epoch cadence probes at the end of ``epoch`` (and have not probed at ``step``)."""
        return [
            _Due(monitor, regular=True)
            for monitor in self.monitors
            if monitor.every_n_epochs is not None
            and (epoch + 1) % monitor.every_n_epochs == 0
            and (id(monitor), step, "regular") not in self._steps_done
            and monitor._last_step != step  # restored from a checkpoint saved after that probe
        ]

    def _skip(self, key: str, step: int) -> None:
        if (key, step) not in self._skipped_at:
            self._skipped_at.add((key, step))
            self._skipped[key] = self._skipped.get(key, 0) + 1

    # -- probing ----------------------------------------------------------------------------------------------------

    def probe(self, trainer: Any, pl_module: nn.Module, due: Sequence[_Due], step: int) -> None:
        """Run ``due`` at ``step``: one isolation, one forward pass per probe batch, results to the writer."""
        if not due:
            return
        for entry in due:
            for part in (["regular"] if entry.regular else []) + entry.parts:
                self._steps_done.add((id(entry.monitor), step, part))
        start = time.perf_counter()
        nonfinite = nonfinite_parameters(pl_module)
        with ExitStack() as stack:
            if self.writer is not None:
                stack.enter_context(self.writer.held())
            stack.enter_context(isolated(pl_module))
            for group in _groups(due):
                self._probe_group(pl_module, group, step, nonfinite)
        spent = time.perf_counter() - start
        self._probe_seconds += spent
        if self.writer is not None and step == self._logged_step:  # the final probe's expensive parts: said once
            self.writer.flush()
        elif self.writer is not None:
            self._logged_step = step
            scalars = {"viz/overhead_ms/probe_step": 1000 * spent, "viz/writer/waits": float(self.writer.waits)}
            if self.budget is not None:
                factors = self._last_plan or {}
                stretch = max((f for k, f in factors.items() if "/" not in k and f is not None), default=1)
                scalars["viz/budget/stretch"] = float(stretch)
                scalars["viz/budget/skipped"] = float(sum(self._skipped.values()))
                scalars["viz/budget/share"] = self._share()
            try:
                self.writer.submit(Written(step, scalars=scalars))
                self.writer.flush()
            except RuntimeError as error:
                self.monitors[0]._failed(error, step, "writing to TensorBoard")
            self._report_writer_errors()

    def _share(self) -> float:
        """The suite's share of the fit's wall time so far (see :meth:`_spent`)."""
        if self._fit_start is None:
            return 0.0
        elapsed = time.perf_counter() - self._fit_start
        return self._spent() / elapsed if elapsed > 0 else 0.0

    def _probe_group(self, pl_module: nn.Module, group: list[_Due], step: int, nonfinite: list[str]) -> None:
        first = group[0].monitor
        with ExitStack() as stack:
            stack.enter_context(first._classifier(pl_module))
            context: ProbeContext | None = None
            shared = 0.0
            if not nonfinite:
                start = time.perf_counter()
                try:
                    context = _context(pl_module, first._probe_on(pl_module), [d.monitor for d in group], self.memo)
                except Exception as error:
                    for entry in group:
                        entry.monitor._failed(error, step)
                    return
                self._forward_seconds.append(time.perf_counter() - start)
                del self._forward_seconds[:-5]
                shared = self._forward_seconds[-1] / len(group)
            for entry in group:
                entry.monitor._run(pl_module, context, entry.regular, entry.parts, step, nonfinite, shared)


def _context(
    model: nn.Module, probe: ProbeBatch, monitors: Sequence[ProbeMonitor], memo: dict[Any, Any]
) -> ProbeContext:
    layers: dict[str, None] = {}
    inputs_of: dict[str, None] = {}
    gradients = False
    for monitor in monitors:
        needs = monitor.needs()
        layers.update(dict.fromkeys(needs.layers))
        inputs_of.update(dict.fromkeys(needs.inputs_of))
        gradients |= needs.gradients
    return ProbeContext(model, probe, list(layers), list(inputs_of), gradients, memo)


def _groups(due: Sequence[_Due]) -> Iterator[list[_Due]]:
    """Monitors that probe the same images through the same view of the model share a forward pass."""
    groups: dict[tuple[int, Any, Any], list[_Due]] = {}
    for entry in due:
        groups.setdefault(entry.monitor._group_key(), []).append(entry)
    yield from groups.values()


def _same_probe(a: ProbeBatch, b: ProbeBatch) -> bool:
    def equal(x: Any, y: Any) -> bool:
        if x is None or y is None:
            return x is y
        return x.shape == y.shape and x.dtype == y.dtype and bool(torch.equal(x.cpu(), y.cpu()))

    return (
        equal(a.images, b.images)
        and equal(a.labels, b.labels)
        and equal(a.masks, b.masks)
        and (a.mean, a.std, a.class_names) == (b.mean, b.std, b.class_names)
    )


def _suffix(monitor: ProbeMonitor, others: list[ProbeMonitor]) -> str:
    """``_<option>-<value>`` for the options in which ``monitor`` differs from the first of its class, or
    ``_<n>`` when none is short enough to name it."""
    mine, first = monitor._options(), others[0]._options()
    differing = [(k, v) for k, v in mine.items() if first.get(k) != v and isinstance(v, (str, int, float))]
    if differing and len(differing) <= 2:
        return "_" + "_".join(f"{k}-{v}" for k, v in differing)
    return f"_{len(others) + 1}"


def layout_for(groups: dict[str, Any], suffix: str) -> dict[str, Any]:
    """Custom Scalars ``groups`` for a monitor whose tags carry ``suffix`` after their first part (the second
    monitor of a class: ``diagnostics_2/...``): the groups renamed after it and their regular expressions moved to its
    tags, so two instances' charts neither merge nor overwrite each other."""
    if not suffix:
        return groups
    escaped = re.escape(suffix)

    def moved(pattern: str) -> str:
        head, _, rest = pattern.partition("/")
        return f"{head}{escaped}/{rest}"

    return {
        f"{group}{suffix}": {title: [kind, [moved(p) for p in patterns]] for title, (kind, patterns) in charts.items()}
        for group, charts in groups.items()
    }
