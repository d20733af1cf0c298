"""TrainingDiagnostics: the numbers behind "is my first-layer kernel too large, is my stride aliasing, is my
learning rate too high or too low?", logged on the fixed probe batch at every probe step.

The metrics are the pure functions of :mod:`lightning_viz.diagnostics`; their definitions and sources are there,
and the verdicts' rules and thresholds, chosen from the validation study, are in
:mod:`lightning_viz.diagnostics.verdicts`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from lightning_viz._checks import check_int
from lightning_viz.callbacks._advice import TEXT_TAG as ADVICE_TAG
from lightning_viz.callbacks._advice import AdviceCheck, with_tried
from lightning_viz.callbacks._base import LayerSpec, Needs, Part, ProbeLogs, ProbeMonitor
from lightning_viz.callbacks._layout import CUSTOM_SCALARS_LAYOUT
from lightning_viz.callbacks._suite import shown_names
from lightning_viz.diagnostics import (
    LossHistory,
    alias_fractions,
    band_energies,
    coverage_gap,
    dead_channel_fraction,
    dead_filters,
    dominance,
    dominant_band_shares,
    energy_window,
    lattice_peak_ratio,
    linear_cka,
    rim_share,
    rms_growth,
    shift_consistency,
    smoothness_index,
    uneven_overlap,
    update_ratio,
)
from lightning_viz.diagnostics.verdicts import (
    KernelEvidence,
    LearningRateEvidence,
    StrideEvidence,
    Thresholds,
    Verdict,
    kernel_size_verdict,
    learning_rate_verdict,
    stride_verdict,
    unless_too_high,
    verdict_text,
)
from lightning_viz.methods import conv_layer_names, named_layers, resolve_layer
from lightning_viz.probing import ProbeContext

__all__ = ["CUSTOM_SCALARS_LAYOUT", "TrainingDiagnostics"]  # the layout is re-exported where it always was

REFERENCE_UPDATE_RATIO = 1e-3
"""The update / weight ratio often cited as healthy (CS231n's "about 1e-3"): a rule of thumb drawn for reference as
``reference/log10_update_ratio``, not a verdict (healthy runs sit well above it with Adam: see the README's verdict
study)."""

RECENT_STEPS = 100
"""The least span, in steps, over which ``recent_change`` measures the network's movement (between two probes)."""

_LOG_FLOOR = 1e-6  # log10 forms are drawn at -6 for smaller values (rounding noise), and not at all for 0


def _log10(value: float) -> float | None:
    """``value`` on a log10 axis, for numbers whose range spans decades; None for 0 or less (a frozen layer's update
    ratio), which a log axis cannot show."""
    return math.log10(max(value, _LOG_FLOOR)) if value > 0 else None


class TrainingDiagnostics(ProbeMonitor):
    """Log kernel-size, stride and learning-rate diagnostics as ``diagnostics/<metric>/<layer>``, and verdicts.

    Kernel size (first convolution's weights): band energy shares (``band_low``/``band_mid``/``band_high``), shares
    of filters dominated by each band (``dominant_*``), mean ``smoothness`` index, fraction of ``dead_filters``,
    ``dominance`` (max / median filter RMS), the ``learned_share`` of the filters (norm of now minus initial over
    the norm now), the rim energy of the filters (``rim_share``) and of their learned part (``learned_rim_share``),
    the ``energy_window`` holding most of the learned energy, and the ``coverage_gap`` of a kernel smaller than its
    stride. Stride: ``uneven_overlap``, the ``alias_fraction`` of the first layer's response on the probe (and of
    its learned part's, ``learned_alias_fraction``), ``lattice_peak_ratio`` of deconvnet projections of the deepest
    stage's top units, ``shift_tvd/model`` (total variation distance of the probe's outputs under 1-3 px shifts).
    Learning rate: ``loss_progress`` (share of the starting training loss removed), ``loss_recent_progress`` (over
    the last 200 steps), ``loss_rise`` and ``loss_rise_share`` (the last 50 steps over the loss's best, as a share of
    the best and of the first loss), ``lr/<group>`` (each parameter group's rate), ``probe_loss``, ``change`` of
    the deepest stage's probe representation since the first probe (1 - linear CKA) and ``recent_change`` over
    probes at least 100 steps apart, ``update_ratio``
    ||dW||/||W|| of every convolution across the optimizer step that leads to a probe step, ``dead_channels`` and
    ``cka_previous`` of each stage, and the first layer's ``rms_growth``. The numbers whose range spans decades are
    also logged as their log10 (``log10_learned_share``, ``log10_change``, ``log10_update_ratio``; not for 0), which
    the Custom Scalars charts draw (:data:`CUSTOM_SCALARS_LAYOUT`). The early probes (``early_steps``: 5, 10, 25
    and 50) are the learning rate's: they leave out the lattice-peak ratio, and the alias fractions while the
    filters have learned too little for the stride verdict to read them.

    Verdicts ``verdict/kernel_size`` (-1 too small, 0 ok, 1 larger than it uses), ``verdict/stride`` (0 ok, 1
    aliasing) and ``verdict/learning_rate`` (-1 too low, 0 ok, 1 too high) are logged only where there is evidence
    for them; the text ``diagnostics/verdicts`` marks each line (✗ failing, ✓ ok, … not enough evidence yet, – no
    verdict), says "not enough evidence yet" until there is, names a diverged run (non-finite loss or weights) with
    the first step it was seen, and gives the numbers and the suggested fix. Beside them, ``threshold/<name>`` draws
    each line a verdict reads, and ``reference/log10_update_ratio`` the update ratio's rule of thumb
    (:data:`REFERENCE_UPDATE_RATIO`), which decides nothing.

    Args:
        layers: stages for dead channels and CKA; None: each convolutional stage's output, up to five.
        first_layer: the convolution the kernel and stride diagnostics are about; None: the first ``nn.Conv2d``.
        top_k: units projected for the lattice-peak ratio: the strongest unit of each of the deepest stage's
            ``top_k`` strongest channels (4: the units :class:`~lightning_viz.DeconvNetMonitor` shows first in
            each of its rows, so the two share one projection pass).
        thresholds: verdict thresholds; None: the defaults chosen from the validation study.
        shift_every_n_steps: cadence of the shift consistency (twelve forward passes of the probe), in optimizer
            steps; it also runs at the final probe, never at step 0.
        check_every_n_steps: cadence of the learning-rate check between probes (the training loss and each
            parameter group's rate, ``diagnostics/lr/<group>``; no forward pass, no picture): it logs
            ``verdict/learning_rate`` and the loss numbers, and the verdict text where the verdict changed, so that a
            rate that jumps or a schedule that stalls the run is named within 50-100 steps however far apart the
            budget spaces the probes. None: only at probes.
        confirm_advice: try a failing verdict's advice before it is given: train copies of the model for
            ``confirm_steps`` steps on the run's latest batches, a control and a second control as they are and one
            with the advice applied (the suggested rate, the first layer blurred before it subsamples, the kernel
            grown), score them on the latest batches none trained on, and log ``confirmation/<verdict>`` (1
            confirmed, 0 inconclusive, -1 not confirmed; ``_difference`` and ``_noise`` beside it), the finding in
            ``diagnostics/confirmation`` and " — tried: ..." after the verdict's line. It runs where the budget
            affords it (a learning rate's first check at once: a rate too high can diverge the run first), and
            again once the run is twice as long; a run that diverged is tried from the latest finite probe's state
            (kept on the CPU). Training is unchanged; on rank zero only. :meth:`confirm_now` runs it on demand.
        confirm_steps: training steps of each copy (a rate's copies take 8 more at the lower rate).
        confirm_at_end: also try, when the fit ends, the advice still due, whatever the budget (before the final
            probe, or after it where that probe found the failure): for fits too short for the budget to afford a
            check (a few hundred steps), which pay for it in time (``viz/budget`` says how much).
        **kwargs: probe, cadence and error options of :class:`~lightning_viz.callbacks.ProbeMonitor`.

    Example::

        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[TrainingDiagnostics()])
    """

    namespace = "diagnostics"
    default_early_steps = (5, 10, 25, 50)  # learning-rate trouble shows there (see the verdicts)

    def __init__(
        self,
        layers: str | nn.Module | list[str | nn.Module] | None = None,
        first_layer: str | nn.Module | None = None,
        top_k: int = 4,
        thresholds: Thresholds | None = None,
        shift_every_n_steps: int = 500,
        check_every_n_steps: int | None = 50,
        confirm_advice: bool = True,
        confirm_steps: int = 24,
        confirm_at_end: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(layers=layers, **kwargs)
        for name, flag in (("confirm_advice", confirm_advice), ("confirm_at_end", confirm_at_end)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.confirm_at_end = confirm_at_end
        check_int("confirm_steps", confirm_steps)
        check_int("top_k", top_k)
        check_int("shift_every_n_steps", shift_every_n_steps)
        check_int("check_every_n_steps", check_every_n_steps, none=True)
        self.shift_every_n_steps = shift_every_n_steps
        self.check_every_n_steps = check_every_n_steps
        self.first_layer = first_layer
        self.top_k = top_k
        self.thresholds = thresholds or Thresholds()
        self._first: str | None = None
        self._initial: Tensor | None = None
        self._before: tuple[int, dict[str, Tensor]] | None = None
        self._previous: dict[str, Tensor] = {}
        self._reference: Tensor | None = None  # the deepest stage's probe representation at the first probe
        self._losses = LossHistory()
        self._pending: list[tuple[int, Tensor]] = []  # batch losses not yet read (read at a probe: one sync)
        self._rates: dict[int, float] = {}  # the first group's rate by step, until its loss is read
        self._rates_now: dict[str, float] = {}  # every group's latest rate
        self._window: list[tuple[int, Tensor]] = []  # the deepest stage's probe representations, for recent_change
        self._probe_numbers: dict[str, Any] = {}  # the latest probe's learning-rate evidence, for the checks
        self._judged: tuple[Any, Any] | None = None  # the latest probe's kernel and stride verdicts, for the checks
        self._said: int | None = None  # the learning-rate verdict's value in the latest text
        self._probe_finite = True  # the latest probe's outputs were finite
        self._stride = 2  # the first layer's (set at fit start)
        self._retell = False  # an advice check found something: the next check writes the verdict text again
        self._latest: tuple[int, list[Verdict]] | None = None  # the latest verdicts (for confirm_now)
        self.confirm_steps = confirm_steps
        self._advice = AdviceCheck(confirm_steps, output=self.output, network=self.network, seed=self.seed) \
            if confirm_advice else None  # fmt: skip

    @override
    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "first_layer": self.layer_key(self.first_layer),
            "top_k": self.top_k,
            "thresholds": self.thresholds,
            "shift_every_n_steps": self.shift_every_n_steps,
            "check_every_n_steps": self.check_every_n_steps,
        }

    @override
    def fit_start(self, model: nn.Module) -> None:
        name = conv_layer_names(model)[0] if self.first_layer is None else resolve_layer(model, self.first_layer)[0]
        first = resolve_layer(model, name)[1]
        if not isinstance(first, nn.Conv2d):
            raise ValueError(f"first_layer {self.first_layer!r} is not an nn.Conv2d")
        self._first = name
        self._stride = max(first.stride)

    @override
    def train_start(self, model: nn.Module) -> None:
        assert self._first is not None
        first = resolve_layer(model, self._first)[1]
        if self._initial is None and isinstance(first, nn.Conv2d):
            self._initial = first.weight.detach().float().cpu().clone()  # a copy: training updates it in place

    @override
    def before_update(self, model: nn.Module, step: int) -> None:
        if self._before is None or self._before[0] != step:
            self._before = (step, {name: module.weight.detach().clone() for name, module in _convs(model)})

    @override
    def observe_batch(self, step: int, outputs: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor) and loss.numel() == 1:
            # kept on its device: reading it now would make a GPU wait at every step
            self._pending.append((step, loss.detach().reshape(())))

    @override
    def observe_rates(self, step: int, rates: dict[str, float]) -> None:
        self._rates_now = rates
        if rates:
            self._rates[step] = next(iter(rates.values()))
            if len(self._rates) > 4096:  # no loss seen for that long (manual optimization returning none): keep few
                del self._rates[next(iter(self._rates))]

    @override
    def check(self, step: int) -> ProbeLogs:
        """The learning-rate verdict between probes, every ``check_every_n_steps``: from the training loss, the rate
        and the latest probe's numbers; its text is written where the verdict changed."""
        self._read_losses()
        logs = ProbeLogs(scalars=self._loss_numbers())
        evidence = self._losses.evidence(step, self._nonfinite_loss(), **self._probe_numbers)
        verdict = learning_rate_verdict(evidence, self.thresholds)
        if verdict.value is not None:
            logs.scalars["verdict/learning_rate"] = float(verdict.value)
        if verdict.degree is not None:
            logs.scalars["degree/learning_rate"] = verdict.degree
        if self._judged is not None:
            kernel, stride = self._judged
            verdicts = [unless_too_high(kernel, verdict), unless_too_high(stride, verdict), verdict]
            self._consider(verdicts, step)
            if verdict.value != self._said or self._retell:
                logs.texts["diagnostics/verdicts"] = self._text(verdicts, step)
                self._said, self._retell = verdict.value, False
        return logs

    def _consider(self, verdicts: list[Verdict], step: int, now: bool = False) -> None:
        """The latest verdicts: the advice check learns which fail."""
        self._latest = (step, verdicts)
        if self._advice is not None and self._first is not None:
            rate = next(iter(self._rates_now.values()), None)
            self._advice.update(verdicts, step, self._first, rate, now, self._stride)

    def _text(self, verdicts: list[Verdict], step: int) -> str:
        """The verdicts' text, with what an advice check found appended to the lines it tried."""
        return verdict_text(verdicts if self._advice is None else with_tried(verdicts, self._advice.tried), step)

    @override
    def keep_batch(self, batch: Any) -> None:
        if self._advice is not None:
            self._advice.keep(batch)

    @override
    def experiment_ready(self, step_seconds: float, at_end: bool) -> tuple[float, bool] | None:
        advice = self._advice
        if advice is None or not (advice.ready or (at_end and self.confirm_at_end and advice.can_run())):
            return None
        return advice.estimate(step_seconds), advice.urgent or (at_end and self.confirm_at_end)

    @override
    def experiment(self, model: nn.Module, optimizers: Sequence[Any], step: int, over_budget: bool,
                   at_end: bool) -> ProbeLogs:  # fmt: skip
        """The advice check (``confirm_advice``): the failing verdicts' advice tried on copies of the model."""
        advice = self._advice
        assert advice is not None
        why = None
        if len(optimizers) != 1:
            why = f"the advice check tries one optimizer's run, this fit has {len(optimizers)}"
        elif any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
            why = "the advice check cannot train copies of a model with SyncBatchNorm on one rank"
        if why is not None:
            advice.unavailable, advice.due = why, []
            advice.buffer.clear()
            return ProbeLogs(texts={ADVICE_TAG: f"Step {step}: {why}; no advice is tried in this fit."})
        optimizer, start = optimizers[0], None
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # diverged: the rate, from before
            kept = advice.snapshot
            if kept is None:
                advice.due = []
                return ProbeLogs()
            start = kept[0]
            advice.due = [t for t in advice.due if t.rate is not None and advice.tried_from.get(t.verdict) != start]
            if not advice.due:  # tried from that state already
                return ProbeLogs()
            model, optimizer = advice.restored(model, optimizer)
        logs = advice.run(model, optimizer, step, over_budget, at_end, start)
        self._retell = True
        if at_end and step == self.last_step and self._latest is not None:  # after the final probe: its verdicts
            logs.texts["diagnostics/verdicts"] = self._text(self._latest[1], step)
        return logs

    @override
    def after_probe(self, model: nn.Module, optimizers: Sequence[Any], step: int) -> None:
        """Keep the state of a probe where everything is finite (a run that diverges later is tried from it)."""
        finite = self._probe_finite and self._losses.first_nonfinite_step is None
        finite = finite and all(bool(torch.isfinite(p).all()) for p in model.parameters())
        if self._advice is not None and len(optimizers) == 1 and finite:
            self._advice.keep_state(model, optimizers[0], step)

    def confirm_now(self, trainer: Any, pl_module: nn.Module) -> None:
        """Try the advice of the verdicts failing now, on demand (outside the budget's spacing; its time counts),
        with the batches kept since they began to fail (at least four are needed)."""
        if self._advice is None:
            raise RuntimeError("TrainingDiagnostics(confirm_advice=False) tries no advice")
        if not trainer.is_global_zero or self._latest is None:
            return
        step, verdicts = self._latest
        self._consider(verdicts, step, now=True)
        if not self._advice.can_run():
            warnings.warn("confirm_now: nothing to try (no verdict fails, or fewer than 4 training batches were kept "
                          "since one began to fail)", stacklevel=2)  # fmt: skip
            return
        start, step = time.perf_counter(), trainer.global_step
        try:
            logs = self.experiment(pl_module, trainer.optimizers, step, over_budget=False, at_end=False)
        except Exception as error:  # warned once, and training goes on (on_error="raise" re-raises)
            self.suite.failed(self, error, step, "advice check")
            logs = ProbeLogs()
        self.suite.log_extra(self, step, logs, time.perf_counter() - start)

    def _nonfinite_loss(self) -> str | None:
        """What the learning-rate verdict names when the training loss stopped being finite, or None."""
        first = self._losses.first_nonfinite_step
        return None if first is None else f"the training loss since step {first}"

    def _loss_numbers(self) -> dict[str, float]:
        """The training loss's numbers and the rates, at a probe or a check."""
        numbers = {}
        if not self.rates_logged:
            numbers.update({f"diagnostics/lr/{name}": rate for name, rate in self._rates_now.items()})
        for name, value in (("loss_progress", self._losses.progress()), ("loss_spike", self._losses.spike()),
                            ("loss_recent_progress", self._losses.recent_progress())):  # fmt: skip
            if value is not None:
                numbers[f"diagnostics/{name}"] = value
        rise, start = self._losses.rise(), self._losses.start
        if rise is not None and rise[1] > 0 and start is not None and start > 0:
            numbers["diagnostics/loss_rise"] = rise[0] / rise[1] - 1.0  # over the best (rise_now)
            numbers["diagnostics/loss_rise_share"] = (rise[0] - rise[1]) / start  # over the first batch's (rise_floor)
        return numbers

    @override
    def layer_options(self) -> list[LayerSpec | None]:
        return [*super().layer_options(), self.first_layer]

    @override
    def needs(self) -> Needs:
        assert self._first is not None
        return Needs(layers=self.layer_names, inputs_of=[self._first])

    @override
    def custom_scalars(self) -> dict[str, Any]:
        return {group: CUSTOM_SCALARS_LAYOUT[group] for group in ("kernel size", "stride", "learning rate")}

    @override
    def parts(self) -> list[Part]:
        return [Part("shift_consistency", self.shift_every_n_steps, 12.0, self._shift_consistency)]  # 3 sizes x 4 ways

    def _shift_consistency(self, context: ProbeContext, step: int) -> ProbeLogs:
        """Shift consistency: 12 shifted copies of the probe in one forward pass, twelve times the probe's own."""
        if not bool(torch.isfinite(context.logits).all()):
            return ProbeLogs()
        tvd = shift_consistency(context.model, context.images, reference=context.logits)
        return ProbeLogs(scalars={"diagnostics/shift_tvd/model": tvd})

    def _read_losses(self) -> None:
        if self._pending:
            values = torch.stack([loss.float() for _, loss in self._pending]).cpu().tolist()
            for (step, _), value in zip(self._pending, values, strict=True):
                self._losses.add(step, value, self._rates.pop(step, None))
            last = self._pending[-1][0]
            self._rates = {step: rate for step, rate in self._rates.items() if step > last}
            self._pending = []

    @override
    def compute(self, context: ProbeContext, step: int) -> ProbeLogs:
        """The kernel-size numbers from the first layer's weights, the learning rate's from the stages and the loss,
        the stride's from the first layer's response, and the three verdicts."""
        model = context.model
        assert self._first is not None
        first = resolve_layer(model, self._first)[1]
        assert isinstance(first, nn.Conv2d)
        kernel, stride, tag = first.kernel_size[0], first.stride[0], self._first
        self._read_losses()
        if self._losses.first_nonfinite_step is not None:
            return self.compute_nonfinite(model, step, [])
        logs = ProbeLogs()
        learned = self._kernel_numbers(first, logs.scalars)
        logits = context.logits
        self._probe_finite = bool(torch.isfinite(logits).all())
        if not self._probe_finite:
            lr = self._losses.evidence(step, f"the probe's outputs at step {step}")
            return self._verdicts(
                logs, step, lr, KernelEvidence(tag, kernel, stride), StrideEvidence(tag, kernel, stride)
            )
        self._stage_numbers(context, step, logs.scalars)
        alias = self._alias_numbers(context, first, learned, logs.scalars)
        self._update_ratios(model, step, logs.scalars)
        logs.scalars.update(self._loss_numbers())
        scalars, deepest = logs.scalars, self.layer_names[-1]
        learned_share = scalars.get(f"diagnostics/learned_share/{tag}")
        window = _int_or_none(scalars.get(f"diagnostics/energy_window/{tag}"))
        rim = scalars.get(f"diagnostics/learned_rim_share/{tag}")
        map_size = int(scalars[f"diagnostics/map_size/{deepest}"])
        return self._verdicts(
            logs,
            step,
            self._losses.evidence(step, **self._probe_numbers),
            KernelEvidence(tag, kernel, stride, learned_share, rim, window),
            StrideEvidence(tag, kernel, stride, learned_share, alias, map_size),
        )

    def _kernel_numbers(self, first: nn.Conv2d, put: dict[str, float]) -> Tensor | None:
        """The first layer's weights: band energies, smoothness, dead filters, dominance, coverage, overlap, and
        what was learned since the start (its share, rim share and energy window). Returns the learned part."""
        tag, kernel, stride = self._first, first.kernel_size[0], first.stride[0]
        weight = first.weight.detach().float().cpu()
        energies = band_energies(weight)
        for band, share in zip(("low", "mid", "high"), energies.mean(dim=0).tolist(), strict=True):
            put[f"diagnostics/band_{band}/{tag}"] = share
        dominant = dominant_band_shares(weight, energies=energies)
        for band, share in zip(("low", "mid", "high"), dominant.tolist(), strict=True):
            put[f"diagnostics/dominant_{band}/{tag}"] = share
        if weight.shape[-1] == weight.shape[-2] and weight.shape[-1] > 1:
            put[f"diagnostics/smoothness/{tag}"] = float(smoothness_index(weight).mean())
        put[f"diagnostics/dead_filters/{tag}"] = float(dead_filters(weight).double().mean())
        put[f"diagnostics/dominance/{tag}"] = dominance(weight)
        put[f"diagnostics/coverage_gap/{tag}"] = coverage_gap(kernel, stride)
        if stride <= kernel:
            put[f"diagnostics/uneven_overlap/{tag}"] = uneven_overlap(kernel, stride)
        learned = None
        if self._initial is not None and self._initial.shape == weight.shape:
            put[f"diagnostics/rms_growth/{tag}"] = rms_growth(weight, self._initial)
            learned = weight - self._initial
            share = float(learned.norm() / weight.norm().clamp_min(1e-12))
            put[f"diagnostics/learned_share/{tag}"] = share
            if (log_share := _log10(share)) is not None:
                put[f"diagnostics/log10_learned_share/{tag}"] = log_share
        if weight.shape[-1] == weight.shape[-2] and kernel >= 3:
            put[f"diagnostics/rim_share/{tag}"] = rim_share(weight)
            if learned is not None and learned.norm() > 0:
                put[f"diagnostics/learned_rim_share/{tag}"] = rim_share(learned)
                put[f"diagnostics/energy_window/{tag}"] = energy_window(learned, self.thresholds.window_share)
                put[f"diagnostics/kernel_size/{tag}"] = kernel
        return learned

    def _stage_numbers(self, context: ProbeContext, step: int, put: dict[str, float]) -> None:
        """The probe loss, each stage's dead channels and CKA with the previous probe, and the deepest stage's
        change since the first probe and over the recent probes (the learning-rate verdict's, kept for the checks)."""
        probe, logits = context.probe, context.logits
        acts = {name: context.activation(name) for name in self.layer_names}
        if probe.labels is not None and logits.dim() == 2 and logits.shape[1] > 1:
            put["diagnostics/probe_loss"] = float(F.cross_entropy(logits.float(), probe.labels.to(logits.device)))
        for name, act in acts.items():
            put[f"diagnostics/dead_channels/{name}"] = dead_channel_fraction(act)
            if name in self._previous and len(self._previous[name]) == len(act):
                put[f"diagnostics/cka_previous/{name}"] = linear_cka(self._previous[name], act.float().cpu())
            self._previous[name] = act.detach().float().cpu()
        deepest = self.layer_names[-1]
        first_probe = self._reference is None or len(self._reference) != len(acts[deepest])
        if first_probe:
            self._reference = acts[deepest].detach().float().cpu()
        assert self._reference is not None
        change = 1.0 - linear_cka(self._reference, acts[deepest].float().cpu())
        put[f"diagnostics/change/{deepest}"] = change
        numbers: dict[str, Any] = {"change": change, "dead_channels": put[f"diagnostics/dead_channels/{deepest}"]}
        numbers.update(self._recent_change(step, acts[deepest].detach().float().cpu()))
        if "recent_change" in numbers:
            put[f"diagnostics/recent_change/{deepest}"] = numbers["recent_change"]
            if (log_recent := _log10(numbers["recent_change"])) is not None:
                put[f"diagnostics/log10_recent_change/{deepest}"] = log_recent
        self._probe_numbers = numbers
        if not first_probe and (log_change := _log10(change)) is not None:  # 0 by definition at the first probe
            put[f"diagnostics/log10_change/{deepest}"] = log_change
        put[f"diagnostics/map_size/{deepest}"] = min(acts[deepest].shape[-2:])

    def _recent_change(self, step: int, representation: Tensor) -> dict[str, Any]:
        """1 - linear CKA of the deepest stage's representation now and at the latest probe at least
        :data:`RECENT_STEPS` before (the network's movement over the recent window), and that window's steps."""
        if self._window and len(self._window[0][1]) != len(representation):
            self._window = []
        older = [(s, r) for s, r in self._window if s <= step - RECENT_STEPS]
        numbers: dict[str, Any] = {}
        if older:
            since, then = older[-1]
            numbers = {"recent_change": 1.0 - linear_cka(then, representation), "recent_steps": step - since}
            self._window = [(s, r) for s, r in self._window if s >= since]
        self._window.append((step, representation))
        return numbers

    def _alias_numbers(self, context: ProbeContext, first: nn.Conv2d, learned: Tensor | None,
                       put: dict[str, float]) -> float | None:  # fmt: skip
        """The alias fractions of the first layer's response (returned: the whole filters'), and the lattice peaks of
        the deepest stage's top units. An early probe is the learning rate's: the alias fraction waits until the
        stride verdict can read it (the filters learned enough) and the lattice peaks until the regular probes."""
        tag, stride = self._first, first.stride[0]
        alias = None
        share = put.get(f"diagnostics/learned_share/{tag}")
        inputs = context.layer_inputs.get(tag) if tag is not None else None
        if inputs is not None and not (context.early and (share is None or share < self.thresholds.min_learned)):
            weights: list[Tensor | None] = [None]
            if learned is not None and learned.norm() > 0:
                weights.append(learned.to(first.weight.device, first.weight.dtype))
            fractions = alias_fractions(first, inputs, weights)
            alias = fractions[0]
            put[f"diagnostics/alias_fraction/{tag}"] = alias
            if len(fractions) > 1:
                put[f"diagnostics/learned_alias_fraction/{tag}"] = fractions[1]
        if not context.early:
            deepest = self.layer_names[-1]
            top = context.top_units(deepest, self.top_k)
            projections = context.project(deepest, top.index, "deconvnet")  # shared with DeconvNetMonitor's panel
            h, w = projections.shape[-2:]
            if stride <= min(h, w):
                lpr = lattice_peak_ratio(projections[..., : h - h % stride, : w - w % stride], stride)
                put[f"diagnostics/lattice_peak_ratio/{tag}"] = lpr
        return alias

    def _update_ratios(self, model: nn.Module, step: int, put: dict[str, float]) -> None:
        """||dW|| / ||W|| of every convolution across the optimizer step that led to this probe step."""
        if self._before is None or self._before[0] != step:
            return
        for name, module in _convs(model):
            if name in self._before[1]:
                ratio = update_ratio(self._before[1][name], module.weight)
                put[f"diagnostics/update_ratio/{name}"] = ratio
                if (log_ratio := _log10(ratio)) is not None:
                    put[f"diagnostics/log10_update_ratio/{name}"] = log_ratio
        self._before = None

    @override
    def compute_nonfinite(self, model: nn.Module, step: int, nonfinite: list[str]) -> ProbeLogs:
        """Nothing can be measured on NaN weights: the learning-rate verdict names the divergence and when it was
        first seen (the training loss is read at every step, the weights only at probes)."""
        assert self._first is not None
        self._read_losses()
        first = resolve_layer(model, self._first)[1]
        assert isinstance(first, nn.Conv2d)
        kernel, stride = first.kernel_size[0], first.stride[0]
        loss = self._nonfinite_loss()
        seen = [] if loss is None else [loss]
        if nonfinite:
            seen.append(f"the weights at step {step} ({shown_names(nonfinite)})")
        return self._verdicts(
            ProbeLogs(),
            step,
            self._losses.evidence(step, " and ".join(seen)),
            KernelEvidence(self._first, kernel, stride),
            StrideEvidence(self._first, kernel, stride),
        )

    def _verdicts(
        self, logs: ProbeLogs, step: int, lr: LearningRateEvidence, kernel: KernelEvidence, stride: StrideEvidence
    ) -> ProbeLogs:
        learning_rate = learning_rate_verdict(lr, self.thresholds)
        self._judged = (kernel_size_verdict(kernel, self.thresholds), stride_verdict(stride, self.thresholds))
        self._said = learning_rate.value
        verdicts = [unless_too_high(self._judged[0], learning_rate), unless_too_high(self._judged[1], learning_rate),
                    learning_rate]  # fmt: skip
        for verdict in verdicts:
            if verdict.value is not None:  # an abstaining verdict logs no number, only its text
                logs.scalars[f"verdict/{verdict.name}"] = float(verdict.value)
            if verdict.degree is not None:
                logs.scalars[f"degree/{verdict.name}"] = verdict.degree
        logs.scalars.update(_chart_lines(self.thresholds))
        self._consider(verdicts, step)
        logs.texts["diagnostics/verdicts"] = self._text(verdicts, step)
        return logs

    @override
    def state_dict(self) -> dict[str, Any]:
        self._read_losses()
        return {
            **super().state_dict(),
            "initial": self._initial,
            "reference": self._reference,
            "previous": dict(self._previous),
            "losses": self._losses.state_dict(),
            "window": list(self._window),
            "rates": dict(self._rates),
            "probe_numbers": dict(self._probe_numbers),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._initial = state_dict.get("initial", self._initial)
        self._reference = state_dict.get("reference", self._reference)
        self._previous = dict(state_dict.get("previous", self._previous))
        if "losses" in state_dict:
            self._losses.load_state_dict(state_dict["losses"])
        self._window = list(state_dict.get("window", self._window))
        self._rates = dict(state_dict.get("rates", self._rates))
        self._probe_numbers = dict(state_dict.get("probe_numbers", self._probe_numbers))


_THRESHOLD_SERIES = ("progress_ok", "stalled_progress", "spike", "change_low", "dead_channels", "min_learned",
                     "alias_fraction", "coarse_map", "rise_now", "rise_floor", "stalled_now")  # fmt: skip


def _chart_lines(thresholds: Thresholds) -> dict[str, float]:
    """The lines the Custom Scalars charts draw beside their numbers: ``threshold/<name>`` for each threshold a
    verdict reads (as a constant series, which TensorBoard never smooths), in the form its chart draws the number
    (``log10_*`` for a log10 chart; ``risen_progress``: ``loss_rise`` on the loss progress axis; ``coverage_gap``:
    any uncovered pixel), and the update ratio's rule of thumb as ``reference/log10_update_ratio``."""
    t = thresholds
    lines = {f"threshold/{name}": float(getattr(t, name)) for name in _THRESHOLD_SERIES}
    lines["threshold/risen_progress"] = -t.loss_rise
    lines["threshold/coverage_gap"] = 0.0
    for name in ("min_learned", "change_low"):
        lines[f"threshold/log10_{name}"] = math.log10(max(getattr(t, name), _LOG_FLOOR))
    lines["reference/log10_update_ratio"] = math.log10(REFERENCE_UPDATE_RATIO)
    return lines


def _int_or_none(value: float | None) -> int | None:
    return None if value is None or math.isnan(value) else int(value)


def _convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(name, module) for name, module in named_layers(model) if isinstance(module, nn.Conv2d)]
