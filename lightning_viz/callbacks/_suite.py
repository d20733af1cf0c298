"""The suite: the one object that runs the probe steps of all the lightning_viz monitors attached to a trainer.

Each monitor's Lightning hooks hand over to the suite, which acts once per step whichever monitor calls first. At a
probe step (:meth:`ProbeSuite.probe_step`) it checks the weights are finite, enters the isolation once, builds one
:class:`~lightning_viz.probing.ProbeContext` (one forward pass) per group of monitors that probe the same images,
runs each due monitor's regular part and expensive parts on it, tags what they return and hands it to the background
writer. It owns the cadence and the budget (:mod:`lightning_viz.probing.schedule`), counting everything it does:
drawing the probe, tracing layers, the probe steps, what the writer's drawing adds to the steps after them, the
final probe and the drain.
"""

from __future__ import annotations

import math
import re
import statistics
import time
import warnings
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from lightning_viz._namespace import PACKAGES
from lightning_viz.callbacks._interface import ProbeLogs
from lightning_viz.callbacks._model_check import check_classifier
from lightning_viz.callbacks._writer import BackgroundWriter, Written, use_native_crc32c
from lightning_viz.diagnostics import nonfinite_parameters
from lightning_viz.methods import as_classifier, isolated, resolve_layer
from lightning_viz.probe import ProbeBatch
from lightning_viz.probing import ProbeContext
from lightning_viz.probing.schedule import WARMUP_STEPS, Job, Schedule, StepTimes, keeps_images
from lightning_viz.render import notice
from lightning_viz.report import tensorboard_command_for

__all__ = [
    "Due",
    "ProbeSuite",
    "nonfinite_message",
    "optimizer_rates",
    "refuse_sharded",
    "shown_names",
    "suite_for",
    "tensorboard_command",
]

AFTERMATH = 20
"""The most training steps after a probe charged to it (the writer's drawing, the emptied caches): the typical step is
the median of the other steps, so some must stay uncharged even where probes come often and the writer is slow."""

_SUITES: weakref.WeakKeyDictionary[Any, ProbeSuite] = weakref.WeakKeyDictionary()


def suite_for(trainer: Any, monitors: Sequence[Any]) -> ProbeSuite:
    """The suite of ``trainer``'s ``monitors`` (created by the first monitor that asks, dropped at teardown)."""
    suite = _SUITES.get(trainer)
    if suite is None:
        suite = _SUITES[trainer] = ProbeSuite(list(monitors))
    return suite


def tensorboard_command(logdir: str, monitors: Sequence[Any], max_steps: int, log_every_n_steps: int = 50,
                        executable: str = "tensorboard") -> str:  # fmt: skip
    """The TensorBoard command that shows everything ``monitors`` write in a fit of ``max_steps`` steps: its
    ``--samples_per_plugin`` counts, for each plugin, at most the steps one tag can be written at (each monitor's
    probes at step 0, its early steps, its cadence and the final probe; its pictures on the thinning cadence; its
    checks), an upper bound, since the budget only spaces probes out."""
    images = scalars = 0
    for monitor in (m for m in monitors if hasattr(m, "check_every_n_steps")):  # the lightning_viz monitors
        every = monitor.every_n_steps
        probes = {0, max_steps, *(s for s in monitor.early_steps if s <= max_steps)}
        probes |= set(range(0, max_steps + 1, every)) if every else set()
        pictures = {s for s in probes if s in monitor.early_steps or s in (0, max_steps) or keeps_images(s, every)}
        images = max(images, len(pictures))
        checks = max_steps // monitor.check_every_n_steps if monitor.check_every_n_steps else 0
        scalars += len(probes) + checks  # the suite's own scalars are written at any monitor's probe
    lightning = max_steps // max(1, log_every_n_steps) + 1  # Lightning's own scalars
    counts = {"images": {"": images}, "scalars": {"": max(scalars, lightning)}, "text": {"": scalars}}
    return tensorboard_command_for(logdir, counts, executable)


def optimizer_rates(optimizers: Sequence[Any]) -> dict[str, float]:
    """The learning rate of every parameter group of ``optimizers``, by a name for its tag: the group's ``name``
    where it has one, else ``pg<i>`` (as Lightning's LearningRateMonitor), with ``opt<j>-`` in front for several
    optimizers. Groups without a numeric ``lr`` are left out."""
    rates = {}
    for j, optimizer in enumerate(optimizers):
        for i, group in enumerate(getattr(optimizer, "param_groups", [])):
            rate = group.get("lr")
            if isinstance(rate, torch.Tensor) and rate.numel() == 1:
                rate = float(rate)
            if isinstance(rate, (int, float)) and not isinstance(rate, bool):
                name = str(group.get("name") or f"pg{i}")
                rates[name if len(optimizers) == 1 else f"opt{j}-{name}"] = float(rate)
    return rates


def shown_names(names: Sequence[str]) -> str:
    """The first three ``names`` and how many more: the non-finite parameters in a line of text."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# strategies that shard parameters across ranks: a forward pass on rank zero alone would wait for the others' shards
_SHARDED = ("FSDP", "DeepSpeed", "ModelParallel")


def refuse_sharded(strategy: object, monitor: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` when ``strategy`` shards the parameters: the monitors probe on global rank zero alone, with
    no collective call, which would hang or fail on a sharded model."""
    name = type(strategy).__name__
    if any(kind in name for kind in _SHARDED):
        raise error(
            f"{monitor} does not support {name}: it shards the parameters across ranks, and the monitors probe on "
            "rank zero alone; train with strategy='ddp' (each rank holds the whole model) while you diagnose, or "
            "remove the lightning_viz callbacks"
        )


def nonfinite_message(step: int, names: list[str]) -> str:
    """The line a monitor logs when the model holds NaN or infinite values."""
    return (f"✗ step {step}: the model's weights are not finite (NaN or inf in {shown_names(names)}); training has "
            "diverged, so there is nothing to draw. See diagnostics/verdicts (TrainingDiagnostics) for the first "
            "step it was seen; try a learning rate ten times smaller.")  # fmt: skip


@dataclass
class Due:
    """What one monitor runs at a probe step: its regular part and/or some of its expensive parts."""

    monitor: Any
    regular: bool
    parts: list[str] = field(default_factory=list)


class ProbeSuite:
    """Runs the probe steps of the lightning_viz monitors of one trainer (see the module docstring).

    Args:
        monitors: the trainer's monitors, in ``trainer.callbacks`` order.
    """

    def __init__(self, monitors: list[Any]) -> None:
        self.monitors = monitors
        budgets = [m.budget for m in monitors if m.budget is not None]
        self.budget = min(budgets) if budgets and len(budgets) == len(monitors) else None
        bounds = [m.max_image_bytes for m in monitors if m.max_image_bytes is not None]
        self.max_image_bytes = min(bounds) if bounds else None
        self.images_stopped: int | None = None  # the step from which pictures stopped at the bound
        self._images_at: tuple[int, bool] | None = None  # whether the step's pictures fit the bound
        self._image_steps: set[int] = set()  # the steps whose pictures were submitted
        self._summarised: int | None = None  # the final step whose viz/logs text was written
        self.counts: dict[str, Counter[str]] = {"images": Counter(), "scalars": Counter(), "text": Counter()}
        self.log_every_n_steps = 50  # Lightning's own scalars' cadence (the trainer's, from the fit's start)
        self.writer: BackgroundWriter | None = None
        self.probes: list[ProbeBatch] = []  # the distinct probe batches (one forward pass each per step)
        self.memo: dict[Any, Any] = {}  # setup-time results several monitors need (default layers, crop layouts)
        self.started = False
        self.schedule: Schedule | None = None
        self.times = StepTimes()
        self.spent = 0.0  # seconds the suite cost the fit so far, everything counted
        self.unbudgeted = 0.0  # of which experiments that ran whatever the budget
        self._costs: dict[str, list[float]] = {}  # seconds of each job's runs: the first and the last five
        self._renders: dict[str, list[float]] = {}  # the writer's seconds for each job's results
        self._done: dict[int, set[str]] = {}  # the job keys that ran, by step
        self._regular: dict[int, Job] = {}  # each monitor's regular job, by id
        self._warned: dict[int, set[str]] = {}
        self._drawn: dict[int, dict[str, None]] = {}  # image tags each monitor drew, in order
        self._noticed: set[int] = set()  # monitors whose pictures got the divergence notice
        self._step_started: tuple[int, float] | None = None  # (batch's step, its start time)
        self._aftermath = 0  # steps still to charge after a probe: until the writer is idle, at most AFTERMATH
        self._last_hook: tuple[str, int, int] | None = None
        self._forward: list[float] = []  # the shared forward pass's last times (the parts' priors' unit)
        self.final_step: int | None = None
        self._logged_step: int | None = None
        _name_monitors(monitors)

    # -- the probe step ---------------------------------------------------------------------------------------------

    def probe_step(self, pl_module: nn.Module, step: int, due: Sequence[Due]) -> None:
        """Run ``due`` at ``step``: the weights checked, one isolation, one context (forward pass) per group of
        monitors probing the same images, each monitor's compute and parts, their tagged logs to the writer, and the
        suite's own scalars. Everything it takes counts against the budget."""
        if not due:
            return
        start = time.perf_counter()
        for entry in due:
            self._done.setdefault(step, set()).update(_keys(entry))
        nonfinite = nonfinite_parameters(pl_module)
        with self._writer_held(), isolated(pl_module):
            for group in _groups(due):
                monitor = group[0].monitor
                with as_classifier(pl_module, monitor.output, _network(pl_module, monitor)):
                    context = None if nonfinite else self._context(pl_module, group, step)
                    if context is None and not nonfinite:
                        continue  # the forward pass failed: each monitor of the group warned
                    for entry in group:
                        logs = self._compute(entry, pl_module, context, step, nonfinite)
                        if logs is not None:
                            self._write(entry, step, logs)
        seconds = time.perf_counter() - start
        self.spent += seconds
        self._aftermath = AFTERMATH
        self._log_suite(step, seconds, final=step == self.final_step)

    def _context(self, pl_module: nn.Module, group: list[Due], step: int) -> ProbeContext | None:
        """The group's shared forward pass (None where it fails: each monitor warns)."""
        start = time.perf_counter()
        needs = [entry.monitor.needs() for entry in group]
        layers = list(dict.fromkeys(name for n in needs for name in n.layers))
        inputs_of = list(dict.fromkeys(name for n in needs for name in n.inputs_of))
        early = all(self._early_only(entry.monitor, step) for entry in group)
        try:
            probe = probe_on(group[0].monitor.probe, pl_module)
            context = ProbeContext(pl_module, probe, layers, inputs_of, any(n.gradients for n in needs), self.memo,
                                   early=early)  # fmt: skip
        except Exception as error:
            for entry in group:
                self.failed(entry.monitor, error, step)
            return None
        self._forward = [*self._forward[-4:], time.perf_counter() - start]
        return context

    def _compute(self, entry: Due, pl_module: nn.Module, context: ProbeContext | None, step: int,
                 nonfinite: list[str]) -> ProbeLogs | None:  # fmt: skip
        """What ``entry``'s monitor logs at ``step``, each part timed for the budget; None where it failed (warned)."""
        monitor = entry.monitor
        monitor.last_step = step
        logs = ProbeLogs()
        try:
            if context is None:  # non-finite weights: one status line (and a notice on each picture), no part
                return self._diverged(monitor, pl_module, step, nonfinite) if entry.regular else None
            share = self._forward[-1] / max(1, len(self.monitors))
            for key, compute in _work(entry):
                start = time.perf_counter()
                logs.update(compute(context, step))
                seconds = time.perf_counter() - start + (share if key == monitor.label else 0.0)
                if not (key == monitor.label and self._early_only(monitor, step)):  # an early probe is lighter
                    _record(self._costs, key, seconds)
                logs.scalars[f"viz/overhead_ms/{key}"] = 1000 * seconds
        except Exception as error:
            self.failed(monitor, error, step)
            return None
        return logs

    def _diverged(self, monitor: Any, pl_module: nn.Module, step: int, nonfinite: list[str]) -> ProbeLogs:
        logs: ProbeLogs = monitor.compute_nonfinite(pl_module, step, nonfinite)
        if id(monitor) not in self._noticed:  # each picture's last card says why the pictures stop
            self._noticed.add(id(monitor))
            card = notice(f"✗ diverged by step {step}", nonfinite_message(step, nonfinite)[2:])
            logs.images.update({tag: card for tag in self._drawn.get(id(monitor), {}) if tag not in logs.images})
        return logs

    def _write(self, entry: Due, step: int, logs: ProbeLogs) -> None:
        """``logs`` under the monitor's own tags, to the writer (drawn there; its time counted for the job)."""
        monitor, suffix = entry.monitor, entry.monitor.tag_suffix
        self._drawn.setdefault(id(monitor), {}).update(dict.fromkeys(logs.images))
        if self.writer is None:  # fast_dev_run: nothing to log to
            return
        job = monitor.label if entry.regular else f"{monitor.label}/{entry.parts[0]}" if entry.parts else None
        images = logs.images if logs.images and self._keeps_images(monitor, step, entry.regular) else {}
        written = Written(
            step,
            images={tagged(tag, suffix): image for tag, image in images.items()},
            scalars={tag if tag.startswith("viz/") else tagged(tag, suffix): v for tag, v in logs.scalars.items()},
            texts={tagged(tag, suffix): text for tag, text in logs.texts.items()},
            timing=f"viz/render_ms/{monitor.label}" if logs.images else None,
            done=(lambda seconds: _record(self._renders, job, seconds)) if job is not None else None,
        )
        self._count(written)
        try:
            self.writer.submit(written)
        except RuntimeError as error:
            self.failed(monitor, error, step, "writing to TensorBoard")

    def _count(self, written: Written) -> None:
        """Count the steps each tag is written at (what ``--samples_per_plugin`` must keep to show them all)."""
        for plugin, tags in (("images", written.images), ("scalars", written.scalars), ("text", written.texts)):
            self.counts[plugin].update(tags.keys())
        if written.images:
            self._image_steps.add(written.step)

    # -- what is kept: pictures on a thinning cadence, within a bound of bytes ---------------------------------------

    def _keeps_images(self, monitor: Any, step: int, regular: bool) -> bool:
        """Whether ``monitor``'s pictures at ``step`` are written: the final probe's always; a regular probe's on its
        cadence only where the thinning cadence keeps them (:func:`~lightning_viz.probing.schedule.keeps_images`);
        any other (step 0, early steps, epochs, expensive parts, ``probe_now``) as they come; all of them while
        they fit ``max_image_bytes`` (the final probe's held in reserve)."""
        if step == self.final_step:
            return True
        first = self.schedule.first_step if self.schedule is not None else 0
        every = monitor.every_n_steps
        thinned = regular and every is not None and step % every == 0 and not keeps_images(step, every, first)
        return not thinned and self._images_fit(step)

    def _images_fit(self, step: int) -> bool:
        """Whether a probe step's pictures fit the bound, with one more probe's kept for the final one (decided once
        per step, from what the writer has encoded so far)."""
        if self._images_at is not None and self._images_at[0] == step:
            return self._images_at[1]
        fits = True
        if self.max_image_bytes is not None and self.writer is not None:
            written = dict(self.writer.image_bytes)  # a copy: the writer's thread adds to it
            largest = max(written.values(), default=0)
            queued = len(self._image_steps.difference(written))  # submitted, not encoded yet: as large
            fits = sum(written.values()) + (queued + 2) * largest <= self.max_image_bytes
            if not fits and self.images_stopped is None:
                self.images_stopped = step
                total = sum(written.values()) / 1e6
                text = (f"Step {step}: pictures stop here: the monitors have written {total:.0f} MB of them, and one "
                        f"more probe's ({largest / 1e6:.1f} MB) and the final probe's would pass max_image_bytes="
                        f"{self.max_image_bytes:.3g}. The final probe's pictures are kept; scalars and verdicts go "
                        "on. Raise max_image_bytes= (or None) to keep more.")  # fmt: skip
                self.writer.submit(Written(step, texts={"viz/images": text}))
        self._images_at = (step, fits)
        return fits

    def logs_text(self, step: int) -> str:
        """What the suite wrote, in words, and the TensorBoard command that shows all of it (TensorBoard keeps a
        random sample of 10 pictures and texts and 1,000 scalars per tag unless told to keep more)."""
        written = self.writer.image_bytes if self.writer is not None else {}
        sets = len(self._image_steps)
        lightning = {"": step // max(1, self.log_every_n_steps) + 1}  # Lightning's own scalars
        logdir = getattr(getattr(self.writer, "writer", None), "log_dir", "LOGDIR")
        command = tensorboard_command_for(logdir, {**self.counts, "scalars": {**self.counts["scalars"], **lightning}})
        stopped = "" if self.images_stopped is None else f" (stopped at step {self.images_stopped} by max_image_bytes)"
        return (f"Step {step}: {sets} steps of pictures, {sum(written.values()) / 1e6:.1f} MB{stopped}; at most "
                f"{max(self.counts['scalars'].values(), default=0)} steps of a scalar and "
                f"{max(self.counts['text'].values(), default=0)} of a text. TensorBoard shows every one with:\n\n"
                f"    {command}")  # fmt: skip

    # -- the budget -------------------------------------------------------------------------------------------------

    def cost(self, key: str) -> float | None:
        """A job's expected seconds: the median of its runs after the first (which also traces the network) where
        there are any, and what the writer took to draw its results; None before it ran."""
        runs = self._costs.get(key)
        if not runs:
            return None
        drawn = self._renders.get(key)
        return _typical(runs) + (_typical(drawn) if drawn else 0.0)

    def _costs_now(self) -> dict[str, float | None]:
        assert self.schedule is not None
        costs = {job.key: self.cost(job.key) for job in self.schedule.jobs}
        if self._forward:  # an expensive part not yet run: its prior, in forward passes of the probe
            forward = statistics.median(self._forward)
            for monitor in self.monitors:
                for part in monitor.parts():
                    key = f"{monitor.label}/{part.name}"
                    costs[key] = costs[key] if costs[key] is not None else part.passes * forward
        return costs

    def decide(self, step: int, final: bool = False) -> list[Due]:
        """What runs at ``step``: the schedule's decision, grouped by monitor."""
        if self.schedule is None:
            return []
        if final:
            self.final_step = step
        elif step != self.schedule.first_step and not self._on_some_cadence(step):
            return []  # most steps: nothing to decide
        done = self._done.get(step, set())
        typical = self.times.typical() if step - self.schedule.first_step >= WARMUP_STEPS else None
        decision = self.schedule.decide(step, self._costs_now(), self.spent_now(), typical, final, done)
        run = set(decision.run)
        due = []
        for monitor in self.monitors:
            parts = [p.name for p in monitor.parts() if f"{monitor.label}/{p.name}" in run]
            if monitor.label in run or parts:
                due.append(Due(monitor, monitor.label in run, parts))
        return due

    def _on_some_cadence(self, step: int) -> bool:
        assert self.schedule is not None
        return any(job.falls_on(step) for job in self.schedule.jobs)

    def spent_now(self) -> float:
        """The suite's cost so far: its own time on the training thread and what it added to the steps after its
        probes (the writer drawing beside training, the caches the probe emptied)."""
        return self.spent + max(0.0, self.times.excess)

    def _log_suite(self, step: int, seconds: float, final: bool) -> None:
        """The suite's own scalars (once per step), and at the final probe the budget's summary text."""
        if self.writer is None:
            return
        scalars = {"viz/overhead_ms/probe_step": 1000 * seconds, "viz/writer/waits": float(self.writer.waits)}
        texts = {}
        if self.schedule is not None and step != self._logged_step:
            self._logged_step = step
            scalars.update(self._budget_scalars(step))
            if final and self.budget is not None:
                texts["viz/budget"] = self.budget_text(step)
        try:
            self.writer.submit(written := Written(step, scalars=scalars, texts=texts))
            self._count(written)
            self.writer.flush()
        except RuntimeError as error:
            self.failed(self.monitors[0], error, step, "writing to TensorBoard")
        self._report_writer_errors()

    def _bare_seconds(self, step: int) -> float | None:
        typical = self.times.typical()
        if typical is None or self.schedule is None:
            return None
        return typical * max(1, step - self.schedule.first_step)

    def _budget_scalars(self, step: int) -> dict[str, float]:
        assert self.schedule is not None
        scalars = {"viz/budget/spent_s": self.spent_now()}
        bare = self._bare_seconds(step)
        if bare is not None:
            scalars["viz/budget/share"] = self.spent_now() / bare
        if self.budget is not None:
            scalars["viz/budget/skipped"] = float(sum(self.schedule.skipped.values()))
            if bare is not None:
                scalars["viz/budget/allowed_s"] = self.budget * bare
        return scalars

    def budget_text(self, step: int) -> str:
        """The budget at the fit's end in words: what the suite took against what it was allowed, and what it left
        out for it, with the fix."""
        assert self.schedule is not None and self.budget is not None
        bare, spent = self._bare_seconds(step), self.spent_now()
        share = f"{spent / bare:.1%} of {bare:.1f} s of training" if bare else "the fit was too short to time"
        lines = [f"Step {step}: the suite took {spent:.2f} s, {share} (budget={self.budget:g})."]
        if bare and spent > self.budget * bare and self.unbudgeted and spent - self.unbudgeted <= self.budget * bare:
            lines.append(f"✗ Over budget by the advice checks: {self.unbudgeted:.2f} s of them ran whatever the budget "
                         "(a learning rate's first check, or one still due at the fit's end: see "
                         f"diagnostics/confirmation); without them the suite took "
                         f"{(spent - self.unbudgeted) / bare:.1%}. A longer fit affords them within its budget; "
                         "TrainingDiagnostics(confirm_at_end=False) leaves the fit's end out, confirm_advice=False "
                         "every check.")  # fmt: skip
        elif bare and spent > self.budget * bare:
            extra = f" (and {self.unbudgeted:.2f} s of advice checks)" if self.unbudgeted else ""
            lines.append(f"✗ Over budget: step 0, the early probes and the final probe always run{extra}, and this fit "
                         f"({step - self.schedule.first_step} steps) is too short to pay for them at "
                         f"budget={self.budget:g}; a longer fit keeps it.")  # fmt: skip
        costs = self._costs_now()
        ran = set().union(*self._done.values())
        never = [key for key in self.schedule.skipped if key not in ran]
        for key in never:
            cost = costs.get(key)
            need = "" if cost is None else f" (about {cost:.2f} s a run)"
            lines.append(
                f"✗ {key} never ran: the budget could not afford it{need}. Raise budget= (for example to "
                f"{_budget_for(spent + (cost or 0.0), bare):g}) or call probe_now(trainer, pl_module, parts=True) "
                "where you want it."
            )
        skipped = {k: n for k, n in self.schedule.skipped.items() if k not in never}
        if skipped:
            listed = ", ".join(f"{key} {n}" for key, n in skipped.items())
            lines.append(f"Probes the budget spaced out (skipped at their cadence): {listed}.")
        return "\n\n".join(lines)

    # -- the Lightning hooks, once per step whichever monitor calls first -------------------------------------------

    def _once(self, hook: str, trainer: Any, batch_idx: int = -1) -> bool:
        """Whether this call is the first of ``hook`` at this step and batch (every monitor's hook hands over)."""
        key = (hook, trainer.global_step, batch_idx)
        if self._last_hook == key:
            return False
        self._last_hook = key
        return True

    def setup(self, monitor: Any, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        """Check ``monitor``'s environment before anything runs: the trainer's Lightning package, a TensorBoard
        logger, a strategy that keeps the whole model on rank zero, its layer options."""
        ns = monitor.lightning()
        name = type(monitor).__name__
        if not isinstance(trainer, ns.Trainer):
            other = "lightning.pytorch" if type(trainer).__module__.startswith("lightning.") else "pytorch_lightning"
            raise ns.MisconfigurationException(
                f"{name} is a {ns.name} callback, but the Trainer is a {other} one: import the monitors "
                f"from {PACKAGES[other]} (or import {other} before `from lightning_viz import ...`)"
            )
        writer = next((getattr(x, "experiment", None) for x in trainer.loggers if isinstance(x, ns.TensorBoardLogger)),
                      None)  # fmt: skip
        monitor.name_layer_options(pl_module)
        if trainer.is_global_zero:
            self.attach_writer(writer)
        if stage != "fit":
            # said once for all the monitors, and only to a user who attached them for this stage: after a fit
            # (trainer.fit, then trainer.test) it is no news
            if monitor is self.monitors[0] and all(m.last_step is None for m in self.monitors):
                names = ", ".join(sorted({type(m).__name__ for m in self.monitors}))
                stage = getattr(stage, "value", stage)  # a TrainerFn: "validate", "test", "predict"
                warnings.warn(f"{names} probe during fit only: trainer.{stage} logs nothing from them (a callback "
                              "of yours may call probe_now from its hooks)", UserWarning, stacklevel=3)  # fmt: skip
            return
        refuse_sharded(trainer.strategy, name, ns.MisconfigurationException)
        if writer is None and not getattr(trainer, "fast_dev_run", False):
            raise ns.MisconfigurationException(
                f"{name} logs to TensorBoard, but trainer.loggers has no TensorBoardLogger "
                f"(found {[type(x).__name__ for x in trainer.loggers] or 'none'}): "
                "pass Trainer(logger=TensorBoardLogger(...))"
            )

    def fit_start(self, monitor: Any, pl_module: nn.Module) -> None:
        """After ``configure_model``, on every rank, so a configuration error stops all ranks alike."""
        monitor.resolve_layers(pl_module)
        monitor.fit_start(pl_module)

    def train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        """Start the fit (on every rank) and probe step 0 (on rank zero, when the fit starts from it)."""
        if self._once("train_start", trainer):
            self.start(trainer, pl_module)
            if trainer.global_step == 0 and probing(trainer):
                self.probe_step(pl_module, 0, self.decide(0))
                self.after_probes(trainer, pl_module, 0)

    def batch_start(self, trainer: Any, batch_idx: int) -> None:
        if self._once("batch_start", trainer, batch_idx):
            self._step_started = (trainer.global_step, time.perf_counter())

    def batch_end(self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Time the step, show the monitors its output and batch, run the probe step that falls on it, and the
        experiments the budget affords (at the fit's last step: before its final probe, which then shows them)."""
        if not self._once("batch_end", trainer, batch_idx):
            return
        if self._step_started is not None:
            batch_step, started = self._step_started
            self.times.add(time.perf_counter() - started, after_probe=self._aftermath > 0)
            if self._aftermath > 0:  # the first step that ends with the writer idle is the last one charged
                self._aftermath = 0 if self.writer is None or self.writer.idle() else self._aftermath - 1
            if trainer.is_global_zero:
                for monitor in self.monitors:
                    monitor.observe_batch(batch_step, outputs)
                    monitor.keep_batch(batch)
        if probing(trainer):
            step = trainer.global_step
            final = self.is_last(step)
            if final:
                self.experiments(trainer, pl_module, step, at_end=True)
            self.probe_step(pl_module, step, self.decide(step, final=final))
            self.after_probes(trainer, pl_module, step)
            self.check_step(step)
            self.experiments(trainer, pl_module, step, at_end=final)  # at the end: what the final probe found

    def check_step(self, step: int) -> None:
        """The monitors' cheap checks that fall on ``step`` (``check_every_n_steps``: no forward pass, no picture;
        the learning-rate verdict between probes), where the monitor did not probe at it. Their time counts."""
        if step == 0:
            return
        for monitor in self.monitors:
            every = monitor.check_every_n_steps
            if every is None or step % every != 0 or monitor.label in self._done.get(step, set()):
                continue
            start = time.perf_counter()
            try:
                logs = monitor.check(step)
            except Exception as error:
                self.failed(monitor, error, step, "check")
                continue
            if logs.scalars or logs.texts:
                self._write(Due(monitor, regular=False), step, logs)
            self.spent += time.perf_counter() - start

    def experiments(self, trainer: Any, pl_module: nn.Module, step: int, at_end: bool = False) -> None:
        """The monitors' experiments that are ready (an advice check: :meth:`ProbeMonitor.experiment`), where the
        budget affords them, and urgent ones whatever the budget (they say so). Their time counts (the probes after
        them are spaced to repay it); a failure warns and training continues."""
        step_seconds, ran = self.step_seconds(), False
        for monitor in self.monitors:
            ready = monitor.experiment_ready(step_seconds or 0.0, at_end)
            if ready is None:
                continue
            cost, urgent = ready
            affords = self.affords(step, cost)
            if not (affords or urgent):
                continue
            start = time.perf_counter()
            try:
                logs = monitor.experiment(pl_module, trainer.optimizers, step, over_budget=not affords, at_end=at_end)
            except Exception as error:
                self.failed(monitor, error, step, "advice check")
                logs = ProbeLogs()
            seconds = time.perf_counter() - start
            self.log_extra(monitor, step, logs, seconds)
            self.unbudgeted += 0.0 if affords else seconds
            ran = True
        if ran and step == self.final_step and self.budget is not None and self.writer is not None:
            # after the final probe, whose budget text did not count them: that text again, counting them
            self.writer.submit(written := Written(step, scalars=self._budget_scalars(step),
                                                  texts={"viz/budget": self.budget_text(step)}))  # fmt: skip
            self._count(written)
            self.writer.flush()

    def after_probes(self, trainer: Any, pl_module: nn.Module, step: int) -> None:
        """:meth:`ProbeMonitor.after_probe` of each monitor that probed at ``step``; its time counts."""
        start = time.perf_counter()
        for monitor in self.monitors:
            if monitor.last_step == step:
                try:
                    monitor.after_probe(pl_module, trainer.optimizers, step)
                except Exception as error:
                    self.failed(monitor, error, step, "after its probe")
        self.spent += time.perf_counter() - start

    def affords(self, step: int, seconds: float) -> bool:
        """Whether work off every cadence that costs ``seconds`` (an advice check) fits the budget at ``step``."""
        if self.schedule is None:
            return False
        typical = self.times.typical() if step - self.schedule.first_step >= WARMUP_STEPS else None
        return self.schedule.affords(step, seconds, self._costs_now(), self.spent_now(), typical)

    def step_seconds(self) -> float | None:
        """The typical training step's seconds, once known."""
        return self.times.typical()

    def log_extra(self, monitor: Any, step: int, logs: ProbeLogs, seconds: float) -> None:
        """Logs of work a monitor ran off the probe steps (an advice check), under its tags; its ``seconds`` count
        against the budget."""
        self.spent += seconds
        if logs.scalars or logs.texts:
            self._write(Due(monitor, regular=False), step, logs)
            if self.writer is not None:
                self.writer.flush()

    def before_optimizer_step(self, trainer: Any, pl_module: nn.Module) -> None:
        if self._once("before_optimizer_step", trainer) and trainer.is_global_zero:
            rates = optimizer_rates(trainer.optimizers)
            for monitor in self.monitors:
                monitor.observe_rates(trainer.global_step, rates)  # the rates this update uses, by the batch's step
            step = trainer.global_step + 1  # the step this update completes
            for monitor in self.monitors:
                if self._regular_job(monitor).falls_on(step):
                    monitor.before_update(pl_module, step)

    def epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        """The epoch cadence: the monitors whose ``every_n_epochs`` falls on this epoch (and have not probed here)."""
        if not (self._once("epoch_end", trainer) and probing(trainer)):
            return
        step, epoch = trainer.global_step, trainer.current_epoch
        due = [
            Due(m, regular=True)
            for m in self.monitors
            if m.every_n_epochs is not None
            and (epoch + 1) % m.every_n_epochs == 0
            and m.label not in self._done.get(step, set())
            and m.last_step != step  # restored from a checkpoint saved after that probe
        ]
        self.probe_step(pl_module, step, due)

    def train_end(self, trainer: Any, pl_module: nn.Module) -> None:
        """The final probe of every monitor (and the expensive parts the budget affords), unless it ran already."""
        if self._once("train_end", trainer) and probing(trainer) and trainer.global_step != self.final_step:
            step = trainer.global_step
            self.experiments(trainer, pl_module, step, at_end=True)
            self.probe_step(pl_module, step, self.decide(step, final=True))
            self.experiments(trainer, pl_module, step, at_end=True)  # what the final probe found

    def probe_now(self, monitor: Any, trainer: Any, pl_module: nn.Module, parts: bool = False) -> None:
        """``monitor``'s regular probe (and its expensive parts where ``parts``) at the current step, once per step,
        from any hook; on demand, so outside the budget's spacing (its time still counts)."""
        step = trainer.global_step
        if probing(trainer) and step != monitor.last_step:
            self.start(trainer, pl_module)
            names = [part.name for part in monitor.parts()] if parts else []
            self.probe_step(pl_module, step, [Due(monitor, regular=True, parts=names)])

    def is_last(self, step: int) -> bool:
        """Whether ``step`` is the fit's last optimizer step (as far as the trainer can tell)."""
        if self.schedule is not None and self.schedule.last_step is not None:
            return step >= self.schedule.last_step
        return False

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def attach_writer(self, summary_writer: Any) -> None:
        if self.writer is None and summary_writer is not None:
            use_native_crc32c()
            self.writer = BackgroundWriter(summary_writer)

    def start(self, trainer: Any, pl_module: nn.Module) -> None:
        """Once per fit, on every rank (so a configuration error stops all ranks alike): the probes drawn and
        checked, the layers chosen, the schedule made, the custom-scalars layout written; its time counts."""
        if self.started:
            return
        self.started = True
        start = time.perf_counter()
        for monitor in self.monitors:
            self._prepare(trainer, pl_module, monitor)
        self.log_every_n_steps = getattr(trainer, "log_every_n_steps", 50) or 50
        logged = any(type(c).__name__ == "LearningRateMonitor" for c in trainer.callbacks)
        for monitor in self.monitors:
            monitor.rates_logged = logged  # Lightning's LearningRateMonitor logs them already
            monitor.train_start(pl_module)
        jobs = []
        for monitor in self.monitors:
            jobs.append(self._regular_job(monitor))
            jobs += [Job(f"{monitor.label}/{p.name}", p.every, expensive=True) for p in monitor.parts()]
        self.schedule = Schedule(jobs, self.budget, trainer.global_step, _last_step(trainer))
        if trainer.is_global_zero and self.writer is not None:
            layout: dict[str, Any] = {}
            for monitor in self.monitors:
                layout.update(layout_for(monitor.custom_scalars(), monitor.tag_suffix))
            if layout:
                self.writer.writer.add_custom_scalars(layout)
        self.spent += time.perf_counter() - start

    def _prepare(self, trainer: Any, pl_module: nn.Module, monitor: Any) -> None:
        """Draw ``monitor``'s probe (shared with the monitors that draw the same), check the model once per view of
        it, and choose its layers."""
        if monitor.probe is None:
            key = ("drawn", monitor.probe_size, monitor.seed)
            if key not in self.memo:
                self.memo[key] = ProbeBatch.from_dataloader(probe_loader(trainer, monitor), monitor.probe_size,
                                                            monitor.seed)  # fmt: skip
            monitor.probe = self.memo[key]
        monitor.probe = self._shared_probe(monitor.probe)
        network = _network(pl_module, monitor)
        if ("checked", group_key(monitor)) not in self.memo:
            check_classifier(pl_module, probe_on(monitor.probe, pl_module).images, monitor.probe, monitor.output,
                             network, type(monitor).__name__, monitor.misconfiguration())  # fmt: skip
            self.memo[("checked", group_key(monitor))] = True
        if monitor.layer_names:
            return
        if monitor.layers is not None:
            monitor.layer_names = [resolve_layer(pl_module, layer)[0] for layer in monitor.layers]
            return
        layers_key: Any = (type(monitor).default_layers, group_key(monitor))  # the same choice for monitors of one view
        if layers_key not in self.memo:
            with isolated(pl_module), as_classifier(pl_module, monitor.output, network):
                self.memo[layers_key] = monitor.default_layers(pl_module, probe_on(monitor.probe, pl_module).images)
        monitor.layer_names = list(self.memo[layers_key])

    def _shared_probe(self, probe: ProbeBatch) -> ProbeBatch:
        """The suite's probe batch equal to ``probe`` (one object for all monitors that probe the same images, so a
        checkpoint holds one copy and the step one forward pass), or ``probe`` itself."""
        for known in self.probes:
            if known is probe or same_probe(known, probe):
                return known
        self.probes.append(probe)
        return probe

    def finish(self) -> None:
        """Write out everything queued (its time counts), and report the writer's failures as failed probes."""
        if self.writer is not None:
            start = time.perf_counter()
            self.writer.drain()
            if self.final_step is not None and self._summarised != self.final_step:  # once: every monitor finishes
                self._summarised = self.final_step  # what was written, now that it all is
                self.writer.submit(Written(self.final_step, texts={"viz/logs": self.logs_text(self.final_step)}))
                self.writer.drain()
            self.spent += time.perf_counter() - start
            self._report_writer_errors()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self._report_writer_errors()
            self.writer = None
        for trainer, suite in list(_SUITES.items()):
            if suite is self:
                del _SUITES[trainer]

    def _report_writer_errors(self) -> None:
        if self.writer is not None:
            for error in self.writer.errors():
                self.failed(self.monitors[0], error, None, "writing to TensorBoard")

    # -- error policy -----------------------------------------------------------------------------------------------

    def failed(self, monitor: Any, error: BaseException, step: int | None, what: str = "probe") -> None:
        """A failed probe (or write) warns once per distinct error and training continues; with
        ``on_error="raise"`` it stops training."""
        if monitor.on_error == "raise":
            raise error
        message = f"{type(error).__name__}: {error}"
        warned = self._warned.setdefault(id(monitor), set())
        if message not in warned:
            warned.add(message)
            at = "" if step is None else f" at step {step}"
            warnings.warn(f"{type(monitor).__name__} {what}{at} failed ({message}); training continues and later "
                          "probes are still tried. Pass on_error='raise' to stop on it.", stacklevel=3)  # fmt: skip

    def _early_only(self, monitor: Any, step: int) -> bool:
        """Whether ``step`` is one of ``monitor``'s early probes and nothing more (not step 0, the regular cadence or
        the final probe): a monitor may leave out there what only the regular probes need."""
        job = self._regular_job(monitor)
        return step in job.early and step != 0 and not job.falls_on(step, early=False) and step != self.final_step

    def _regular_job(self, monitor: Any) -> Job:
        """``monitor``'s regular part as the schedule sees it (made once: read at every step)."""
        job = self._regular.get(id(monitor))
        if job is None:
            job = self._regular[id(monitor)] = Job(monitor.label, monitor.every_n_steps, frozenset(monitor.early_steps))
        return job

    @contextmanager
    def _writer_held(self) -> Iterator[None]:
        with ExitStack() as stack:
            if self.writer is not None:
                stack.enter_context(self.writer.held())
            yield


# -- small pure helpers ---------------------------------------------------------------------------------------------


def probing(trainer: Any) -> bool:
    return not trainer.sanity_checking and trainer.is_global_zero


def _keys(entry: Due) -> list[str]:
    label = entry.monitor.label
    return ([label] if entry.regular else []) + [f"{label}/{name}" for name in entry.parts]


def _work(entry: Due) -> Iterator[tuple[str, Any]]:
    """The job key and compute function of each part ``entry`` runs: the regular one first."""
    monitor = entry.monitor
    if entry.regular:
        yield monitor.label, monitor.compute
    for part in monitor.parts():
        if part.name in entry.parts:
            yield f"{monitor.label}/{part.name}", part.compute


def _record(costs: dict[str, list[float]], key: str | None, seconds: float) -> None:
    if key is not None:
        runs = costs.setdefault(key, [])
        runs.append(seconds)
        del runs[1:-5]  # the first run and the last five


def _typical(runs: list[float]) -> float:
    """The median of the runs after the first once there are any: the first also does one-time work (tracing
    receptive fields, checking the crops of unit projections)."""
    return statistics.median(runs[1:] if len(runs) > 1 else runs)


def _budget_for(seconds: float, bare: float | None) -> float:
    """A round budget that would hold ``seconds`` in a fit of ``bare`` seconds."""
    if not bare:
        return 0.1
    return min(1.0, math.ceil(100 * seconds / bare) / 100)


def _last_step(trainer: Any) -> int | None:
    """The step of the fit's final probe, where the trainer knows it (validate/test have no train loader)."""
    try:
        steps = trainer.estimated_stepping_batches if trainer.training or trainer.state.fn == "fit" else None
    except Exception:
        return None
    if not isinstance(steps, (int, float)) or math.isinf(steps):
        return None
    return int(steps)


def _network(pl_module: nn.Module, monitor: Any) -> nn.Module | None:
    return None if monitor.network is None else resolve_layer(pl_module, monitor.network)[1]


def _output_key(output: Any) -> Any:
    """``output`` as it goes into a key: a function by its qualified name, never its identity."""
    if output is None or isinstance(output, (str, int)):
        return output
    return getattr(output, "__qualname__", type(output).__qualname__)


def group_key(monitor: Any) -> tuple[int, Any, Any]:
    """Monitors with equal keys share the step's forward pass: the same probe, the same view of the model."""
    return id(monitor.probe), _output_key(monitor.output), monitor.network


def _groups(due: Sequence[Due]) -> Iterator[list[Due]]:
    groups: dict[tuple[int, Any, Any], list[Due]] = {}
    for entry in due:
        groups.setdefault(group_key(entry.monitor), []).append(entry)
    yield from groups.values()


def probe_on(probe: ProbeBatch, model: nn.Module) -> ProbeBatch:
    """``probe`` on ``model``'s device and float dtype, its images a copy (a forward pass that normalises its input
    in place must not change the probe, or the user's tensor)."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = param.device if param is not None else torch.device("cpu")
    moved = probe.to(device, None if param is None else param.dtype)
    return replace(moved, images=moved.images.clone())


def probe_loader(trainer: Any, monitor: Any) -> Any:
    """The validation loader, else the train loader, to draw the probe from."""
    loaders = trainer.val_dataloaders
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    if loaders is None:
        loaders = trainer.train_dataloader
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0]
    if loaders is None:
        raise monitor.misconfiguration()("no validation or training loader to draw the probe batch from")
    return loaders


def same_probe(a: ProbeBatch, b: ProbeBatch) -> bool:
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


def tagged(tag: str, suffix: str) -> str:
    """``tag`` with ``suffix`` after its first part: ``deconvnet/conv1`` -> ``deconvnet_rule-guided/conv1``."""
    if not suffix:
        return tag
    head, _, rest = tag.partition("/")
    return f"{head}{suffix}/{rest}" if rest else f"{head}{suffix}"


def _name_monitors(monitors: list[Any]) -> None:
    """Tags unique per monitor: the second monitor of a class gets a suffix naming its options that differ."""
    seen: dict[type, list[Any]] = {}
    for monitor in monitors:
        others = seen.setdefault(type(monitor), [])
        monitor.tag_suffix = "" if not others else _suffix(monitor, others)
        others.append(monitor)


def _suffix(monitor: Any, others: list[Any]) -> str:
    """``_<option>-<value>`` for the options in which ``monitor`` differs from the first of its class, or ``_<n>``
    when none is short enough to name it."""
    mine, first = monitor.options(), others[0].options()
    differing = [(k, v) for k, v in mine.items() if first.get(k) != v and isinstance(v, (str, int, float))]
    if differing and len(differing) <= 2:
        return "_" + "_".join(f"{k}-{v}" for k, v in differing)
    return f"_{len(others) + 1}"


def layout_for(groups: dict[str, Any], suffix: str) -> dict[str, Any]:
    """Custom Scalars ``groups`` for a monitor whose tags carry ``suffix`` after their first part: the groups renamed
    after it and their regular expressions moved to its tags, so two instances' charts neither merge nor overwrite
    each other."""
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
