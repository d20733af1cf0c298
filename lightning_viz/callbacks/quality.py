"""ExplanationQualityMonitor: numbers that say how far the Grad-CAM and deconvnet pictures can be trusted, logged
next to the pictures at every probe."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_viz._checks import check_int
from lightning_viz.callbacks._base import Needs, Part, ProbeLogs, ProbeMonitor, nonfinite_message
from lightning_viz.callbacks._layout import CUSTOM_SCALARS_LAYOUT
from lightning_viz.diagnostics import (
    blank_maps,
    class_sensitivity,
    deletion_insertion,
    energy_pointing_game,
    map_stability,
    pointing_game,
    randomization_similarity,
)
from lightning_viz.diagnostics.verdicts import QualityThresholds, quality_warnings
from lightning_viz.methods import (
    deconvnet,
    default_cam_layer,
    grad_cam_maps,
    parametrized_layers,
    reinitialized,
    resolve_layer,
)
from lightning_viz.probing import ProbeContext

__all__ = ["METHODS", "ExplanationQualityMonitor"]

METHODS = ("gradcam", "deconvnet", "guided")

# Offset from the monitor's seed: with seed_everything(0) before building the model, seed 0 itself would redraw the
# network's initial weights, and the check would compare the network with its own starting point.
_REINIT_SEED = 2018_12_03

_Standing = dict[str, tuple[int, str]]  # warning key ("<method>/<check>") -> (the step since which it holds, its text)

_EXPENSIVE = "randomization_and_faithfulness"  # the expensive part's name


class ExplanationQualityMonitor(ProbeMonitor):
    """Log how far each method's maps can be trusted, as ``quality/<method>/<metric>``, with text warnings.

    For each method (``"gradcam"``, ``"deconvnet"``, ``"guided"``) and each probe, computed on the maps for each
    image's predicted class (see :mod:`lightning_viz.diagnostics.quality` and
    :mod:`lightning_viz.diagnostics.faithfulness` for definitions and sources):

    - ``pointing_game``, ``energy_pointing_game`` (where the probe has masks, on the maps for the true class) and
      ``pointing_game_chance`` (the objects' area share, what a constant map scores);
    - ``deletion_auc`` (lower is better) and ``insertion_auc`` (higher is better), in ``steps`` batched steps with
      ROAD's noisy linear imputation;
    - ``class_sensitivity``: correlation of the maps for the predicted and the least likely class (low: the map
      depends on the class; near +1: it does not);
    - ``randomization``: rank correlation of the maps with those of the network re-initialised (Adebayo et al.
      2018), computed with fresh tensors swapped in, never touching the training model;
    - ``stability``: rank correlation with the same maps (true class, else predicted) at the previous probe;
    - ``blank_maps``: share of constant maps.

    The randomisation check and deletion/insertion need passes of their own (a re-initialised network, ``2 *
    steps`` perturbed batches), so they run every ``expensive_every_n_steps`` steps (further apart when the budget
    needs it) and at the final probe, never at step 0; the other numbers come from the step's shared forward pass
    at every probe.

    The text ``quality/warnings`` says which maps should not be trusted right now, and why: one ✗ line per warning
    with the step since which it holds, and a ✓ line once for each that cleared. It is logged when the warnings
    change (a warning that appears or clears; not new numbers for a standing one), at the first probe, and never
    again while they stay the same. ``quality/threshold/<metric>`` draws each limit of
    :class:`~lightning_viz.diagnostics.verdicts.QualityThresholds` beside its metric in the Custom Scalars charts.

    Cost per probe and method: partial backward passes through the step's shared forward pass for the maps (one per
    target), one forward and backward pass of the re-initialised network, and ``2 * steps`` forward passes for
    deletion and insertion when they run; logged as ``viz/overhead_ms/...``.

    Args:
        methods: the methods to assess.
        layers: the Grad-CAM layer, by dotted name or module; None: the last convolutional feature map.
        steps: steps along the deletion and insertion curves.
        randomize_top: how many layers with parameters to re-initialise, counted from the output (1: the
            classifier head); None: all of them, the end of Adebayo's cascade. On Shapes re-initialising only the
            head left Grad-CAM maps rank-correlated 0.05 to 0.91 with the trained ones, depending on the draw, since
            one object dominates every feature map; re-initialising all layers separates the methods (see
            :class:`~lightning_viz.diagnostics.verdicts.QualityThresholds`).
        thresholds: when to warn.
        expensive_every_n_steps: cadence of deletion and insertion, in optimizer steps.
        **kwargs: probe, cadence and error options of :class:`~lightning_viz.callbacks.ProbeMonitor`; ``seed`` also
            seeds the re-initialised weights (offset, so as not to redraw the network's initial weights), the same
            at every probe.

    Example::

        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[ExplanationQualityMonitor()])
    """

    namespace = "quality"

    def __init__(
        self,
        methods: Sequence[str] = ("gradcam", "deconvnet"),
        layers: str | nn.Module | None = None,
        steps: int = 8,
        randomize_top: int | None = None,
        thresholds: QualityThresholds | None = None,
        expensive_every_n_steps: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(layers=layers, **kwargs)
        if isinstance(methods, str):
            methods = [methods]
        unknown = [m for m in methods if m not in METHODS]
        if not methods or unknown or len(set(methods)) != len(methods):
            raise ValueError(f"methods must be distinct names from {METHODS}, got {methods!r}")
        if self.layers is not None and len(self.layers) != 1:
            raise ValueError(f"layers must name one Grad-CAM layer, got {layers!r}")
        check_int("steps", steps)
        check_int("randomize_top", randomize_top, none=True)
        check_int("expensive_every_n_steps", expensive_every_n_steps)
        self.expensive_every_n_steps = expensive_every_n_steps
        self.methods = list(methods)
        self.steps = steps
        self.randomize_top = randomize_top
        self.thresholds = thresholds or QualityThresholds()
        self._previous: dict[str, Tensor] = {}
        self._parametrized: list[str] | None = None
        self._standing: dict[str, _Standing] = {}  # the warnings that hold, by the part that checked them
        self._said: _Standing | None = None  # the warnings at the last probe, which a text said; None before any
        self._said_step: int | None = None  # the step of the last text
        self._said_before: _Standing | None = None  # the warnings before that step (for a second part at that step)

    @override
    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "methods": self.methods,
            "steps": self.steps,
            "randomize_top": self.randomize_top,
            "expensive_every_n_steps": self.expensive_every_n_steps,
        }

    @override
    def default_layers(self, model: nn.Module, images: Tensor) -> list[str]:
        return [default_cam_layer(model, images)]

    @override
    def needs(self) -> Needs:
        return Needs(layers=self.layer_names if "gradcam" in self.methods else (), gradients=True)

    @override
    def custom_scalars(self) -> dict[str, Any]:
        return {"explanation quality": CUSTOM_SCALARS_LAYOUT["explanation quality"]}

    @override
    def parts(self) -> list[Part]:
        # per method: the re-initialised network's forward and backward pass, and 2 * steps - 1 perturbed copies
        # whose imputation costs about as much again as their forward passes
        passes = len(self.methods) * (3.0 + 2.0 * (2 * self.steps - 1))
        return [Part(_EXPENSIVE, self.expensive_every_n_steps, passes, self._randomization_and_faithfulness)]

    def _maps(self, context: ProbeContext, method: str, which: Any) -> Tensor:
        """The step's shared maps: Grad-CAM of the layer, or the class score projected to the pixels (per-pixel L1
        norm over colour channels)."""
        if method == "gradcam":
            return context.grad_cam(self.layer_names[0], which)
        return context.class_projection(method, which).abs().sum(dim=1).float()  # type: ignore[arg-type]

    def _explain_randomized(
        self, method: str, model: nn.Module, images: Tensor, target: Tensor, layer: nn.Module
    ) -> Tensor:
        if method == "gradcam":
            _, maps = grad_cam_maps(model, images, [layer], [target])
            return next(iter(maps.values()))[0]
        return deconvnet(model, images, target=target, rule=method).abs().sum(dim=1).float()  # type: ignore[arg-type]

    @override
    def compute_nonfinite(self, model: nn.Module, step: int, nonfinite: list[str]) -> ProbeLogs:
        return self._warn(step, "model", {"model/weights": nonfinite_message(step, nonfinite)})

    def _nonfinite_outputs(self, context: ProbeContext, step: int) -> ProbeLogs | None:
        if bool(torch.isfinite(context.logits).all()):
            return None
        return self._warn(step, "model", {"model/outputs": "the model's outputs on the probe are not finite (NaN or "
                                          "inf): there are no maps to check. Training has diverged or overflowed; "
                                          "see diagnostics/verdicts."})  # fmt: skip

    def _warn(self, step: int, part: str, found: dict[str, str], note: str = "") -> ProbeLogs:
        """Record the warnings ``part`` found at ``step`` (those of the other parts stand until they run again) and
        return the ``quality/warnings`` text if the warnings changed since the last text (nothing otherwise).

        A non-finite model (``part="model"``) replaces every other warning: the maps could not be checked, so what
        they last showed neither holds nor cleared. ``note`` is added to a text that finds no warning."""
        if part == "model":
            self._standing = {}
        else:
            self._standing.pop("model", None)
        held = {key: since for warnings in self._standing.values() for key, (since, _) in warnings.items()}
        self._standing[part] = {key: (held.get(key, step), text) for key, text in found.items()}
        now = {key: value for warnings in self._standing.values() for key, value in warnings.items()}
        if self._said_step == step:  # a second part at this step: its text replaces the first one's, so it is whole
            before = self._said_before
        else:
            before = self._said
            if before is not None and now.keys() == before.keys():
                self._said = now  # the same warnings (with this probe's numbers): said already
                return ProbeLogs()
            self._said_before = before
        self._said, self._said_step = now, step
        return ProbeLogs(texts={"quality/warnings": self._warnings_text(step, now, before, note)})

    def _warnings_text(self, step: int, now: _Standing, before: _Standing | None, note: str) -> str:
        cleared = {} if any(key.startswith("model/") for key in now) or before is None else before
        gone = sorted(value for key, value in cleared.items() if key not in now)
        lines = [f"- ✗ {text.removeprefix('✗ ')} (since step {since})" for since, text in sorted(now.values())]
        lines += [f"- ✓ no longer: {text.removeprefix('✗ ')} (warned from step {since})" for since, text in gone]
        if now:
            count = f"{len(now)} warning{'s' if len(now) > 1 else ''}"
            head = f"Step {step}: {count}; this text is logged again when they change."
        else:
            checked = "every check"
            if _EXPENSIVE not in self._standing:
                checked = "the checks run so far (the randomisation check and deletion/insertion have not run yet)"
            head = f"✓ No warnings at step {step}: {', '.join(self.methods)} passed {checked}.{note}"
        return "\n\n".join([head, *lines])

    @override
    def compute(self, context: ProbeContext, step: int) -> ProbeLogs:
        stop = self._nonfinite_outputs(context, step)
        if stop is not None:
            return stop
        probe, logits = context.probe, context.logits
        truth = context.target("true")
        masks = probe.masks

        logs, warnings = ProbeLogs(), dict[str, str]()
        overhead = f"viz/overhead_ms/{self.label}"
        for method in self.methods:
            values: dict[str, float] = {}
            start = time.perf_counter()
            for_predicted = self._maps(context, method, "predicted")
            for_least = self._maps(context, method, "least")
            reference = for_predicted if truth is None else self._maps(context, method, "true")  # the true class
            if not all(bool(torch.isfinite(m).all()) for m in (for_predicted, for_least, reference)):
                warnings[f"{method}/maps"] = (f"{method}: the maps are not finite (NaN or inf): nothing can be "
                                              "checked; the gradients overflowed or training has diverged")  # fmt: skip
                continue
            for_predicted, for_least, reference = for_predicted.cpu(), for_least.cpu(), reference.cpu()
            values["blank_maps"] = float(blank_maps(for_predicted).double().mean())
            if logits.shape[1] > 1:  # a single logit has no other class to compare with
                values["class_sensitivity"] = float(class_sensitivity(for_predicted, for_least).mean())
            if masks is not None:
                values["pointing_game"] = float(pointing_game(reference, masks.cpu()).mean())
                values["energy_pointing_game"] = float(energy_pointing_game(reference, masks.cpu()).mean())
                values["pointing_game_chance"] = float((masks.cpu() > 0.5).double().mean())
            if method in self._previous:
                values["stability"] = float(map_stability(reference, self._previous[method]).mean())
            self._previous[method] = reference
            logs.scalars[f"{overhead}/{method}/maps"] = 1000 * (time.perf_counter() - start)

            for metric, value in values.items():
                logs.scalars[f"quality/{method}/{metric}"] = value
            found = quality_warnings(method, values, self.thresholds)
            warnings.update({f"{method}/{check}": text for check, text in found.items()})
        for name in ("class_sensitivity", "randomization", "blank_maps"):  # drawn beside the metric in the charts
            logs.scalars[f"quality/threshold/{name}"] = float(getattr(self.thresholds, name))
        note = ""
        if any(logs.scalars.get(f"quality/{method}/blank_maps", 0) > 0 for method in self.methods):
            blank = ", ".join(f"{m} {logs.scalars.get(f'quality/{m}/blank_maps', 0):.0%}" for m in self.methods)
            note = f" Some maps are blank (constant: {blank}); those explain nothing."
        logs.update(self._warn(step, "maps", warnings, note))
        return logs

    def _randomization_and_faithfulness(self, context: ProbeContext, step: int) -> ProbeLogs:
        """The randomisation check (maps of a re-initialised network), and deletion and insertion: how fast the
        predicted class's score falls as the top-ranked pixels are removed, and rises as they are restored."""
        stop = self._nonfinite_outputs(context, step)
        if stop is not None:
            return stop
        logs, warnings = ProbeLogs(), dict[str, str]()
        model, images = context.model, context.images
        predicted = context.predicted
        overhead = f"viz/overhead_ms/{self.label}"
        if self._parametrized is None:  # the forward order of the layers does not change: trace it once, on one image
            self._parametrized = parametrized_layers(model, images[:1])
        layers = self._parametrized
        top = layers if self.randomize_top is None else layers[-self.randomize_top :]
        randomized = reinitialized(model, top, _REINIT_SEED + self.seed)
        for method in self.methods:
            maps = self._maps(context, method, "predicted")
            if not bool(torch.isfinite(maps).all()):
                continue
            start = time.perf_counter()
            layer = resolve_layer(model, self.layer_names[0])[1]  # a module: the randomized wrapper renames layers
            again = self._explain_randomized(method, randomized, images, predicted, layer).cpu()
            values = {"randomization": float(randomization_similarity(maps.cpu(), again).mean())}
            logs.scalars[f"{overhead}/{method}/randomization"] = 1000 * (time.perf_counter() - start)
            start = time.perf_counter()
            curves = deletion_insertion(
                model, images, maps, predicted, self.steps, seed=self.seed, logits=context.logits
            )
            values["deletion_auc"] = float(curves.deletion.mean())
            values["insertion_auc"] = float(curves.insertion.mean())
            logs.scalars[f"{overhead}/{method}/deletion_insertion"] = 1000 * (time.perf_counter() - start)
            for metric, value in values.items():
                logs.scalars[f"quality/{method}/{metric}"] = value
            found = quality_warnings(method, values, self.thresholds)
            warnings.update({f"{method}/{check}": text for check, text in found.items()})
        logs.update(self._warn(step, _EXPENSIVE, warnings))
        return logs

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "previous": dict(self._previous),
            "warnings": {
                "standing": {part: dict(found) for part, found in self._standing.items()},
                "said": None if self._said is None else dict(self._said),
                "said_step": self._said_step,
                "said_before": None if self._said_before is None else dict(self._said_before),
            },
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._previous = dict(state_dict.get("previous", {}))
        warnings = state_dict.get("warnings")
        if warnings is not None:
            self._standing = {part: dict(found) for part, found in warnings["standing"].items()}
            self._said = None if warnings["said"] is None else dict(warnings["said"])
            self._said_step = warnings["said_step"]
            self._said_before = None if warnings["said_before"] is None else dict(warnings["said_before"])
