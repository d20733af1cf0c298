"""TrainingDiagnostics: the numbers behind "is my first-layer kernel too large, is my stride aliasing, is my
learning rate too high or too low?", logged on the fixed probe batch at every probe step.

The metrics are the pure functions of :mod:`lightning_viz.diagnostics`; their definitions and sources are there,
and the verdicts' rules and thresholds, chosen from the validation study, are in
:mod:`lightning_viz.diagnostics.verdicts`.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_viz.callbacks._base import ProbeLogs, ProbeMonitor, layer_key
from lightning_viz.diagnostics import (
    band_energies,
    dead_channel_fraction,
    dead_filters,
    dominance,
    dominant_band_shares,
    lattice_peak_ratio,
    linear_cka,
    rms_growth,
    shift_consistency,
    smoothness_index,
    uneven_overlap,
    update_ratio,
)
from lightning_viz.diagnostics.verdicts import Thresholds, learning_rate_verdict, stride_verdict
from lightning_viz.methods import conv_layer_names, project_units, resolve_layer, stage_layers, top_k_units
from lightning_viz.methods._hooks import forward_until
from lightning_viz.methods._layers import named_layers
from lightning_viz.probe import ProbeBatch

__all__ = ["CUSTOM_SCALARS_LAYOUT", "TrainingDiagnostics"]

# TensorBoard's Custom Scalars tab: one group per question (tags are regular expressions).
CUSTOM_SCALARS_LAYOUT = {
    "kernel size": {
        "band energy shares": ["Multiline", [r"diagnostics/band_(low|mid|high)/.*"]],
        "dominant band shares": ["Multiline", [r"diagnostics/dominant_(low|mid|high)/.*"]],
        "smoothness index": ["Multiline", [r"diagnostics/smoothness/.*"]],
        "dead filters, dominance": ["Multiline", [r"diagnostics/(dead_filters|dominance)/.*"]],
    },
    "stride": {
        "uneven overlap": ["Multiline", [r"diagnostics/uneven_overlap/.*"]],
        "lattice-peak ratio": ["Multiline", [r"diagnostics/lattice_peak_ratio/.*"]],
        "shift consistency (TVD)": ["Multiline", [r"diagnostics/shift_tvd/.*"]],
    },
    "learning rate": {
        "update / weight ratio": ["Multiline", [r"diagnostics/update_ratio/.*"]],
        "dead channels": ["Multiline", [r"diagnostics/dead_channels/.*"]],
        "first-layer RMS growth": ["Multiline", [r"diagnostics/rms_growth/.*"]],
        "CKA with the previous probe": ["Multiline", [r"diagnostics/cka_previous/.*"]],
    },
    "explanation quality": {
        "pointing game (vs chance)": ["Multiline", [r"quality/.*/(energy_)?pointing_game(_chance)?"]],
        "deletion / insertion AUC": ["Multiline", [r"quality/.*/(deletion|insertion)_auc"]],
        "class sensitivity (low: depends on the class)": ["Multiline", [r"quality/.*/class_sensitivity"]],
        "randomisation (low: passes)": ["Multiline", [r"quality/.*/randomization"]],
        "stability, blank maps": ["Multiline", [r"quality/.*/(stability|blank_maps)"]],
    },
}


class TrainingDiagnostics(ProbeMonitor):
    """Log kernel-size, stride and learning-rate diagnostics as ``diagnostics/<metric>/<layer>``.

    Kernel size (first convolution's weights): band energy shares (``band_low``/``band_mid``/``band_high``), shares
    of filters dominated by each band (``dominant_*``), mean ``smoothness`` index, fraction of ``dead_filters``,
    ``dominance`` (max / median filter RMS). Stride: ``uneven_overlap`` of the first layer's kernel and stride,
    ``lattice_peak_ratio`` of deconvnet projections of the deepest stage's top units at the first layer's stride,
    ``shift_tvd/model`` (total variation distance of the probe's outputs under 1-3 px shifts). Learning rate:
    ``update_ratio`` ||dW||/||W|| of every convolution across the optimizer step that leads to a probe step
    (weights copied just before that step only), ``dead_channels`` and ``cka_previous`` (linear CKA with the
    previous probe) of each stage, and the first layer's ``rms_growth`` since training started.

    Args:
        layers: stages for dead channels and CKA; None: each convolutional stage's output, up to five.
        first_layer: the convolution the kernel and stride diagnostics are about; None: the first ``nn.Conv2d``.
        top_k: units projected for the lattice-peak ratio.
        thresholds: verdict thresholds; None: the defaults chosen from the validation study.
        **kwargs: probe, cadence and error options of :class:`~lightning_viz.callbacks.ProbeMonitor`.

    Example::

        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[TrainingDiagnostics()])
    """

    def __init__(
        self,
        layers: str | nn.Module | list[str | nn.Module] | None = None,
        first_layer: str | nn.Module | None = None,
        top_k: int = 9,
        thresholds: Thresholds | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(layers=layers, **kwargs)
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        self.first_layer = first_layer
        self.top_k = top_k
        self.thresholds = thresholds or Thresholds()
        self._max_lpr = float("-inf")
        self._lr_high = False
        self._first: str | None = None
        self._initial: Tensor | None = None
        self._before: tuple[int, dict[str, Tensor]] | None = None
        self._previous: dict[str, Tensor] = {}

    @override
    def _options(self) -> dict[str, Any]:
        return {
            **super()._options(),
            "first_layer": layer_key(self.first_layer),
            "top_k": self.top_k,
            "thresholds": self.thresholds,
        }

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        name = (
            conv_layer_names(pl_module)[0]
            if self.first_layer is None
            else resolve_layer(pl_module, self.first_layer)[0]
        )
        if not isinstance(resolve_layer(pl_module, name)[1], nn.Conv2d):
            raise ValueError(f"first_layer {self.first_layer!r} is not an nn.Conv2d")
        self._first = name

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._first is not None
        first = resolve_layer(pl_module, self._first)[1]
        if self._initial is None and isinstance(first, nn.Conv2d):
            self._initial = first.weight.detach().float().cpu().clone()  # a copy: training updates it in place
        if trainer.is_global_zero and self._writer is not None and trainer.global_step == 0:
            self._writer.add_custom_scalars(CUSTOM_SCALARS_LAYOUT)
        super().on_train_start(trainer, pl_module)

    @override
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        step = trainer.global_step + 1  # the step this update completes
        if not trainer.is_global_zero or not self.is_probe_step(step) or (self._before and self._before[0] == step):
            return
        convs = {name: module.weight for name, module in _convs(pl_module)}
        self._before = (step, {name: weight.detach().clone() for name, weight in convs.items()})

    @override
    def default_layers(self, model: nn.Module, images: Tensor) -> list[str]:
        return stage_layers(model, images)

    @override
    def compute(self, model: nn.Module, probe: ProbeBatch, step: int) -> ProbeLogs:
        assert self._first is not None
        first = resolve_layer(model, self._first)[1]
        assert isinstance(first, nn.Conv2d)
        weight = first.weight.detach().float().cpu()
        logs = ProbeLogs()
        put = logs.scalars.__setitem__
        tag = self._first
        for band, share in zip(("low", "mid", "high"), band_energies(weight).mean(dim=0).tolist(), strict=True):
            put(f"diagnostics/band_{band}/{tag}", share)
        for band, share in zip(("low", "mid", "high"), dominant_band_shares(weight).tolist(), strict=True):
            put(f"diagnostics/dominant_{band}/{tag}", share)
        if weight.shape[-1] == weight.shape[-2] and weight.shape[-1] > 1:
            put(f"diagnostics/smoothness/{tag}", float(smoothness_index(weight).mean()))
        put(f"diagnostics/dead_filters/{tag}", float(dead_filters(weight).double().mean()))
        put(f"diagnostics/dominance/{tag}", dominance(weight))
        if self._initial is not None:
            put(f"diagnostics/rms_growth/{tag}", rms_growth(weight, self._initial))
        kernel, stride = first.kernel_size[0], first.stride[0]
        put(f"diagnostics/uneven_overlap/{tag}", uneven_overlap(kernel, stride) if stride <= kernel else 1.0)

        layers = dict(resolve_layer(model, name) for name in self.layer_names)
        with torch.no_grad():  # a copy goes in: a forward pass may modify its input in place
            acts = forward_until(model, probe.images.clone(), layers)
        for name, act in acts.items():
            put(f"diagnostics/dead_channels/{name}", dead_channel_fraction(act))
            if name in self._previous and len(self._previous[name]) == len(act):
                put(f"diagnostics/cka_previous/{name}", linear_cka(self._previous[name], act.float().cpu()))
            self._previous[name] = act.detach().float().cpu()

        deepest = self.layer_names[-1]
        top = top_k_units(acts[deepest], self.top_k)
        projections = project_units(
            model, probe.images[top.index[:, 0]], {deepest: (torch.arange(len(top.index)), top.index[:, 1:].cpu())}
        )
        h, w = projections.shape[-2:]
        lpr = lattice_peak_ratio(projections[..., : h - h % stride, : w - w % stride], stride)
        put(f"diagnostics/lattice_peak_ratio/{tag}", lpr)
        self._max_lpr = max(self._max_lpr, lpr)
        put("diagnostics/shift_tvd/model", shift_consistency(model, probe.images))

        ratios = []
        if self._before is not None and self._before[0] == step:
            for name, module in _convs(model):
                if name in self._before[1]:
                    ratios.append(update_ratio(self._before[1][name], module.weight))
                    put(f"diagnostics/update_ratio/{name}", ratios[-1])
            self._before = None

        median = statistics.median(ratios) if ratios else None
        dead = logs.scalars[f"diagnostics/dead_channels/{deepest}"]
        verdicts = [
            stride_verdict(tag, kernel, stride, self._max_lpr, self.thresholds),
            learning_rate_verdict(step, median, dead, self._lr_high, self.thresholds),
        ]
        self._lr_high = self._lr_high or verdicts[1].value == 1
        for verdict in verdicts:
            put(f"verdict/{verdict.name}", float(verdict.value))
        logs.texts["diagnostics/verdicts"] = "\n\n".join(f"- **{v.name}**: {v.text}" for v in verdicts)
        return logs


def _convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(name, module) for name, module in named_layers(model) if isinstance(module, nn.Conv2d)]
