"""The advice check of :class:`~lightning_viz.TrainingDiagnostics`: a failing verdict's advice tried on copies of the
model for a few steps, beside the run (:func:`~lightning_viz.diagnostics.counterfactual.counterfactual`).

When a verdict fails, the check keeps the run's latest training batches (references, ``batches + held_out`` of them)
until the budget affords an experiment, then trains a control copy, a second control (another batch order) and one
copy per advice for ``steps`` steps on the older batches, and scores them on the latest ones, which no copy trained
on. What counts as better is the verdict's own outcome:

- learning rate: the copy at the rate the verdict names, on the held-out loss (a copy that diverges loses);
- stride (aliasing): the first layer blurred before it subsamples, on the shift consistency of the held-out images
  (the mean total variation distance of the outputs under 1-3 pixel shifts), at a held-out loss that is no worse;
- kernel too small: the kernel grown to the size the verdict names (the old weights in its centre, zeros around),
  on the held-out loss.

The kernel "larger than it uses" is not tried: its advice saves compute, which a copy cannot show to be better.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_viz.callbacks._interface import ProbeLogs
from lightning_viz.diagnostics.counterfactual import Judgement, Result, counterfactual
from lightning_viz.diagnostics.stride import shift_consistency
from lightning_viz.diagnostics.verdicts import Verdict
from lightning_viz.methods import OutputSpec, as_classifier
from lightning_viz.methods.surgery import Variant, optimizer_for, try_blur, try_kernel, try_rate

__all__ = ["OUTCOMES", "TEXT_TAG", "AdviceCheck", "Trial", "trials_for", "with_tried"]

OUTCOMES = {"confirmed": 1.0, "inconclusive": 0.0, "not confirmed": -1.0}
"""``confirmation/<verdict>``'s value for each outcome."""

TEXT_TAG = "diagnostics/confirmation"

SHIFT_IMAGES = 16
"""Images of each held-out batch whose shift consistency is measured (12 shifted copies each)."""

KEEP_ALWAYS_BYTES = 64 * 2**20
"""The latest batches are kept at all times where they take at most this many bytes together (so that a verdict
that first fails at the fit's final probe can still be tried); larger ones only while a trial is due."""

SETTLE = 8
"""Steps every copy takes at the lower rate after a learning-rate trial's steps (see ``counterfactual``'s
``settle``)."""


@dataclass(frozen=True)
class Trial:
    """One failing verdict's advice, as a check tries it.

    Args:
        verdict: the verdict's name (``"stride"``).
        value: the verdict's value whose advice this is (1: aliasing).
        name: the advice in words (``"rate 0.002"``, ``"a blurred conv1"``, ``"kernel 3"``).
        variant: the advice applied to a copy.
        on_shifts: judged on shift consistency at a loss no worse, rather than on the loss.
        cost: the copy's training step in units of the run's (the blurred layer runs at stride 1).
        rate: the rate a learning-rate trial tries.
    """

    verdict: str
    value: int
    name: str
    variant: Variant
    on_shifts: bool = False
    cost: float = 1.0
    rate: float | None = None


def trials_for(verdicts: Sequence[Verdict], first_layer: str, rate: float | None, stride: int = 2) -> list[Trial]:
    """The advice of each failing verdict that a check can try, from the verdicts, the first layer's name and stride
    and the first parameter group's rate now (a suggested rate scales every group's rate alike). The blurred copy's
    first layer runs at stride 1: stride^2 times its work, counted as that many training steps (an upper bound)."""
    cost = float(stride**2)
    trials = []
    for verdict in verdicts:
        value, suggestion = verdict.value, verdict.suggestion
        if value is None or value == 0:
            continue
        if verdict.name == "learning_rate" and suggestion is not None and rate:
            name = f"rate {suggestion:g}"
            trials.append(Trial(verdict.name, value, name, try_rate(suggestion / rate), rate=suggestion))
        elif verdict.name == "stride" and value == 1:
            trials.append(Trial(verdict.name, value, f"a blurred {first_layer}", try_blur(first_layer), True, cost))
        elif verdict.name == "kernel_size" and value == -1 and suggestion is not None:
            size = int(suggestion)
            trials.append(Trial(verdict.name, value, f"kernel {size}", try_kernel(first_layer, size)))
    return trials


def with_tried(verdicts: Sequence[Verdict], tried: dict[str, tuple[int, Judgement]]) -> list[Verdict]:
    """``verdicts`` with " — tried: ..." appended to each line whose value a check tried the advice of."""
    shown = []
    for verdict in verdicts:
        result = tried.get(verdict.name)
        if result is not None and result[0] == verdict.value:
            verdict = replace(verdict, text=f"{verdict.text} — tried: {result[1].text}")
        shown.append(verdict)
    return shown


def judge_trial(result: Result, trial: Trial) -> Judgement:
    """The trial's judgement: on the held-out loss; or, for the blur, on shift consistency and the loss together.
    The blur is confirmed only where its copy is both steadier under shifts and at a lower held-out loss, each beyond
    its noise. Steadier at the same loss is inconclusive: in the validation study (benchmarks/counterfactual_study.py)
    such copies were no steadier than their controls 300 steps later; steadier at a higher loss is inconclusive too
    (the network has not adapted to the new layer within the check)."""
    loss = result.judge(trial.name)
    if not trial.on_shifts or result.variants[trial.name].diverged is not None or result.control.diverged is not None:
        return loss
    shifts = result.judge(trial.name, on="metric", what="shift distance")
    if shifts.outcome != "confirmed":
        return shifts
    steadier = f"{abs(shifts.difference):.0%} steadier under shifts (shift distance noise {shifts.noise:.1%})"
    if loss.outcome == "not confirmed":
        text = (f"inconclusive: {trial.name} was {steadier} after {result.steps} steps, but at a held-out loss "
                f"{loss.difference:+.0%} against the control (noise {loss.noise:.1%}): the network has not adapted "
                "to the new layer within the check")  # fmt: skip
        return Judgement("inconclusive", shifts.difference, shifts.noise, text)
    if loss.outcome == "inconclusive":
        text = (f"inconclusive: {trial.name} was {steadier} after {result.steps} steps at the same held-out loss "
                f"({loss.difference:+.1%}, noise {loss.noise:.1%}): steadier alone, which longer runs did not "
                "keep")  # fmt: skip
        return Judgement("inconclusive", shifts.difference, shifts.noise, text)
    text = (f"confirmed: {trial.name} was {steadier} after {result.steps} steps at a lower held-out loss "
            f"({loss.difference:+.1%}, noise {loss.noise:.1%})")  # fmt: skip
    return Judgement("confirmed", shifts.difference, shifts.noise, text)


def _split(batch: Any) -> tuple[Tensor, Tensor] | None:
    """(images, labels) of a training batch ``(images, labels, ...)``, or None for any other form."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        return None
    images, labels = batch[0], batch[1]
    if not (isinstance(images, Tensor) and isinstance(labels, Tensor)) or images.dim() != 4 or labels.dim() != 1:
        return None
    if len(images) != len(labels) or labels.is_floating_point() or len(images) < 2:
        return None
    return images.detach(), labels.detach()


class AdviceCheck:
    """The advice check's state: what is due, the batch buffer, and what each verdict's last check found.

    Args:
        steps: training steps per copy.
        batches: buffered training batches the copies train on (cycled over ``steps``).
        held_out: the latest buffered batches, on which the copies are scored.
        output: where the logits are in what the model returns (the monitor's ``output``).
        network: the submodule to call as the model (the monitor's ``network``).
        seed: the copies' seed.
    """

    def __init__(self, steps: int, batches: int = 8, held_out: int = 4, output: OutputSpec = None,
                 network: str | None = None, seed: int = 0) -> None:  # fmt: skip
        self.steps, self.batches, self.held_out = steps, batches, held_out
        self.output, self.network, self.seed = output, network, seed
        self.buffer: deque[tuple[Tensor, Tensor]] = deque(maxlen=batches + held_out)
        self.due: list[Trial] = []
        self.tried: dict[str, tuple[int, Judgement]] = {}  # verdict -> (the value tried, what the check found)
        self.checked: dict[str, tuple[int, int]] = {}  # verdict -> (the value tried, the step of its last check)
        self.unavailable: str | None = None  # why the check cannot run in this fit (said once)
        self._copy_seconds: float | None = None  # one copy's measured seconds, per unit of cost
        self._rate: float | None = None  # the first group's rate at the latest verdicts
        self.result: Result | None = None  # the latest check's scores
        self.snapshot: tuple[int, dict[str, Any], dict[str, Any]] | None = None  # the latest finite state, on the CPU
        self.tried_from: dict[str, int] = {}  # verdict -> the kept state's step a diverged run was tried from

    def update(self, verdicts: Sequence[Verdict], step: int, first_layer: str, rate: float | None,
               now: bool = False, stride: int = 2) -> None:  # fmt: skip
        """The trials now due: a failing verdict's advice when the verdict first fails with this value, and again
        once the run is twice as long as at its last check (``now``: every failing verdict's). The buffer is
        emptied when nothing is due and its batches are too large to keep at all times."""
        due = []
        self._rate = rate
        for trial in trials_for(verdicts, first_layer, rate, stride):
            last = self.checked.get(trial.verdict)
            if now or last is None or last[0] != trial.value or step >= 2 * max(last[1], 1):
                due.append(trial)
        self.due = due if self.unavailable is None else []
        if not self.due and not (self.buffer and self._small(self.buffer[-1])):
            self.buffer.clear()

    def _small(self, batch: tuple[Tensor, Tensor]) -> bool:
        """Whether a full buffer of batches like ``batch`` would take at most :data:`KEEP_ALWAYS_BYTES`."""
        each = sum(t.numel() * t.element_size() for t in batch)
        return each * (self.buffer.maxlen or 1) <= KEEP_ALWAYS_BYTES

    def keep(self, batch: Any) -> None:
        """Buffer a training batch (a reference, no copy): while a trial is due, and at all times while the batches
        are small."""
        if self.unavailable is not None:
            return
        split = _split(batch)
        if not self.due and (split is None or not self._small(split)):
            return
        if split is None:
            self.unavailable = (f"the advice check needs training batches (images, labels, ...), got "
                                f"{type(batch).__name__}")  # fmt: skip
            self.due, self.buffer = [], deque(maxlen=self.buffer.maxlen)
            return
        self.buffer.append(split)

    @property
    def ready(self) -> bool:
        return bool(self.due) and len(self.buffer) == self.buffer.maxlen

    def can_run(self) -> bool:
        """Enough batches for a check at the fit's end: at least two to train on and two to score."""
        return bool(self.due) and len(self.buffer) >= 4

    def estimate(self, step_seconds: float) -> float:
        """The expected seconds of the due check: the copies' training steps, their scoring and the copying."""
        units = 2.0 + sum(trial.cost for trial in self.due)
        steps = self.steps + (SETTLE if any(trial.rate is not None for trial in self.due) else 0)
        per_copy = self._copy_seconds if self._copy_seconds is not None else 1.3 * steps * step_seconds
        return units * per_copy

    @property
    def urgent(self) -> bool:
        """Whether a learning-rate verdict's first check is due: it runs at once, whatever the budget (a rate too
        high may diverge the run before the budget affords a check; the first layer's advice keeps)."""
        return any(trial.verdict == "learning_rate" and trial.verdict not in self.checked for trial in self.due)

    def keep_state(self, model: nn.Module, optimizer: Optimizer, step: int) -> None:
        """Keep the model's and the optimizer's state (a copy on the CPU): a run that diverges later is tried from
        it."""
        self.snapshot = (step, _to_cpu(model.state_dict()), _to_cpu(optimizer.state_dict()))

    def restored(self, model: nn.Module, optimizer: Optimizer) -> tuple[nn.Module, Optimizer]:
        """A copy of ``model`` and of its optimizer in the kept state."""
        assert self.snapshot is not None
        twin = copy.deepcopy(model)
        twin.load_state_dict(self.snapshot[1])
        twin_optimizer = optimizer_for(optimizer, model, twin)
        twin_optimizer.load_state_dict(copy.deepcopy(self.snapshot[2]))
        return twin, twin_optimizer

    def run(self, model: nn.Module, optimizer: Optimizer, step: int, over_budget: bool = False,
            at_end: bool = False, start: int | None = None) -> ProbeLogs:  # fmt: skip
        """Try the due trials' advice on copies of ``model`` (see the module docstring) and say what was found;
        ``start``: the step whose state ``model`` holds, where it is not ``step`` (a diverged run's kept state)."""
        trials, batches = self.due, list(self.buffer)
        cut = len(batches) - max(2, min(self.held_out, len(batches) // 3))  # a partial buffer at the fit's end
        train, held_out = batches[:cut], batches[cut:]
        began = time.perf_counter()
        metric = _shift_metric(self._classifier) if any(trial.on_shifts for trial in trials) else None
        rates = [trial.rate for trial in trials if trial.rate is not None]
        settle_rate = min([*rates, self._rate]) if rates and self._rate else None
        settle = SETTLE if settle_rate is not None else 0
        result = counterfactual(model, optimizer, train, held_out, self._loss, {t.name: t.variant for t in trials},
                                self.steps, metric=metric, seed=self.seed, settle=settle,
                                settle_rate=settle_rate)  # fmt: skip
        seconds = time.perf_counter() - began
        self.result = result
        self._copy_seconds = seconds / (2.0 + sum(trial.cost for trial in trials))
        logs = ProbeLogs()
        lines = []
        source = "" if start is None else f" from the weights of step {start} (the latest probe before it diverged)"
        for trial in trials:
            judgement = judge_trial(result, trial)
            if start is not None:
                self.tried_from[trial.verdict] = start
                judgement = replace(judgement, text=f"(from step {start}'s weights) {judgement.text}")
            self.tried[trial.verdict] = (trial.value, judgement)
            self.checked[trial.verdict] = (trial.value, step)
            logs.scalars[f"confirmation/{trial.verdict}"] = OUTCOMES[judgement.outcome]
            for what, number in (("difference", judgement.difference), ("noise", judgement.noise)):
                if number == number and abs(number) != float("inf"):
                    logs.scalars[f"confirmation/{trial.verdict}_{what}"] = number
            lines.append(f"- **{trial.verdict.replace('_', ' ')}**: {judgement.text}")
        when = ""
        if over_budget:
            when = (", at the fit's end (the budget could not afford it during the fit)" if at_end else
                    ", at once, over the budget (a learning rate's first check does not wait for it)")  # fmt: skip
        settled = "" if not settle else f" (then {settle} more at {settle_rate:g} for every copy)"
        head = (f"Step {step}: the failing verdicts' advice tried on copies of the model{source}{when}: {self.steps} "
                f"steps{settled} on {len(train)} recent training batches, scored on the {len(held_out)} latest, in "
                f"{seconds:.1f} s.")  # fmt: skip
        logs.texts[TEXT_TAG] = "\n\n".join([head, *lines])
        self.due = []
        self.buffer.clear()
        return logs

    def _classifier(self, model: nn.Module) -> Any:
        network = model.get_submodule(self.network) if self.network is not None else None
        return as_classifier(model, self.output, network)

    def _loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, labels = batch
        with self._classifier(model):
            logits = model(images)
        if logits.shape[-1] == 1:  # one logit per image: a binary classifier
            return F.binary_cross_entropy_with_logits(logits.reshape(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels)


def _to_cpu(value: Any) -> Any:
    """``value`` (a state dict) with every tensor copied to the CPU."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return copy.deepcopy(value)


def _shift_metric(classifier: Callable[[nn.Module], Any]) -> Callable[[nn.Module, tuple[Tensor, Tensor]], float]:
    def metric(model: nn.Module, batch: tuple[Tensor, Tensor]) -> float:
        with classifier(model), torch.no_grad():
            return shift_consistency(model, batch[0][:SHIFT_IMAGES])

    return metric
