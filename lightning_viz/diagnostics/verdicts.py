"""From numbers to plain-language verdicts on the stride and the learning rate, and warnings on explanation maps.

Each verdict compares measured numbers with thresholds and says what to try. The default thresholds were chosen
from the validation study (``python benchmarks/diagnosis_study.py``: ZF-style net on Shapes, SGD with momentum
0.9, first layers 11/4, 7/2, 3/1, learning rates 0.02, x10, /100, three seeds); the README shows the table and
each threshold's margin to the nearest wrong side. Other data or optimisers may need other thresholds: pass
your own :class:`Thresholds`.

No kernel-size verdict: in the study none of the kernel metrics (band energies, dominant bands, smoothness,
dominance, dead filters) separated 11x11 from 7x7 on every seed within the first 100 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QualityThresholds", "Thresholds", "Verdict", "learning_rate_verdict", "quality_warnings", "stride_verdict"]


@dataclass(frozen=True)
class Thresholds:
    """Verdict thresholds.

    Args:
        lattice_peak_ratio: stride: a first-layer stride > 1 whose deconvnet projections have shown a lattice
            stronger than this (the largest lattice-peak ratio seen so far, log10 peak/ring power) aliases.
            Study: 11/4 at least 0.934, every stride-2 run at most 0.797.
        early_update_ratio: learning rate too high: median update/weight ratio over the convolutions above this
            at a probe within the first ``early_steps`` steps. Study, step 10: x10 at least 0.011, working rate
            at most 0.0017.
        early_steps: the window of ``early_update_ratio`` (later, a healthy ratio grows past it with momentum).
        dead_channels: learning rate too high: the deepest stage's dead-channel fraction above this at any probe.
            Study: working rate at most 0.156 in 100 steps, x10 at least 0.53 at step 100.
        low_update_ratio: learning rate too low: median update/weight ratio below this. Study: /100 at most
            2.7e-5, working rate at least 0.0012, x10 after its collapse at least 8.1e-4.
    """

    lattice_peak_ratio: float = 0.86
    early_update_ratio: float = 0.0043
    early_steps: int = 10
    dead_channels: float = 0.35
    low_update_ratio: float = 1.5e-4


@dataclass(frozen=True)
class Verdict:
    """One finding: its name, a number for programs (``verdict/<name>``) and a line of text for people."""

    name: str
    value: int
    text: str


def stride_verdict(layer: str, kernel: int, stride: int, max_lpr: float, thresholds: Thresholds) -> Verdict:
    """1 (aliasing) when ``stride > 1`` and the largest lattice-peak ratio seen exceeds its threshold, else 0."""
    limit = thresholds.lattice_peak_ratio
    if stride > 1 and max_lpr > limit:
        return Verdict("stride", 1, f"{layer} stride {stride} with kernel {kernel}: projections show a strong "
                       f"stride-{stride} lattice (lattice-peak ratio {max_lpr:.2f} > {limit}); try stride "
                       f"{max(1, stride // 2)}, as ZFNet did")  # fmt: skip
    return Verdict("stride", 0, f"{layer} stride {stride} with kernel {kernel}: no strong lattice "
                   f"(lattice-peak ratio {max_lpr:.2f} <= {limit})")  # fmt: skip


def learning_rate_verdict(
    step: int, median_update_ratio: float | None, dead_channels: float, already_high: bool, thresholds: Thresholds
) -> Verdict:
    """1 (too high), -1 (too low) or 0.

    Too high once the early update ratio or the dead-channel fraction has passed its threshold (and from then on:
    a rate that is too high often shows as a spike, then a collapse with dead units and tiny updates); too low when
    the median update ratio is below its threshold.
    """
    t = thresholds
    r = median_update_ratio
    if (
        already_high
        or dead_channels > t.dead_channels
        or (r is not None and step <= t.early_steps and r > t.early_update_ratio)
    ):
        measured = f"update/weight ratio {r:.2g}" if r is not None else "no update ratio at this step"
        return Verdict("learning_rate", 1, f"learning rate too high at or before step {step}: {measured} (limit "
                       f"{t.early_update_ratio:g} in the first {t.early_steps} steps; about 1e-3 is healthy), dead "
                       f"channels {dead_channels:.0%} (limit {t.dead_channels:.0%}); try a rate ten times "
                       "smaller")  # fmt: skip
    if r is not None and r < t.low_update_ratio:
        return Verdict("learning_rate", -1, f"learning rate too low: update/weight ratio {r:.2g} < "
                       f"{t.low_update_ratio:g} (about 1e-3 is healthy); try a rate ten times larger")  # fmt: skip
    shown = "no update ratio at this step" if r is None else f"update/weight ratio {r:.2g}"
    return Verdict("learning_rate", 0, f"learning rate ok: {shown}, dead channels {dead_channels:.0%}")


@dataclass(frozen=True)
class QualityThresholds:
    """When :class:`~lightning_viz.ExplanationQualityMonitor` warns that a method's maps should not be trusted.

    Args:
        class_sensitivity: the maps for the predicted and the least likely class correlate above this: the maps do
            not depend on the class. Measured on Shapes (ShapesNet, 16 probe images): Grad-CAM -0.3 to -0.1,
            deconvnet +0.2, guided backpropagation +0.1 to +0.4 once trained.
        randomization: the maps of the trained and of the re-initialised network rank-correlate above this: the
            maps show the input rather than what the network learned. Shapes, every layer re-initialised, five
            draws on each of two trained nets: Grad-CAM -0.04 to 0.38, deconvnet 0.49 to 0.58.
        blank_maps: more than this share of the probe's maps is constant: nothing to explain with (a dead layer).
    """

    class_sensitivity: float = 0.5
    randomization: float = 0.5
    blank_maps: float = 0.5


def quality_warnings(method: str, values: dict[str, float], thresholds: QualityThresholds) -> list[str]:
    """Plain-language warnings from one method's explanation-quality numbers (missing numbers are skipped).

    Args:
        method: the method's name, as shown to the user.
        values: metric name (``class_sensitivity``, ``randomization``, ``blank_maps``, ``deletion_auc``,
            ``insertion_auc``, ``pointing_game``, ``pointing_game_chance``) -> value.
        thresholds: the limits.

    Returns:
        One line per problem found, empty when none is.
    """
    t, found = thresholds, []
    blank = values.get("blank_maps")
    if blank is not None and blank > t.blank_maps:
        found.append(f"{method}: {blank:.0%} of the probe's maps are blank (limit {t.blank_maps:.0%}): the "
                     "explained layer's activations or gradients are zero, a sign of dead units; check the learning "
                     "rate")  # fmt: skip
    cs = values.get("class_sensitivity")
    if cs is not None and cs > t.class_sensitivity:
        dead = " (for Grad-CAM a sign of a dead or collapsed network)" if method == "gradcam" else ""
        found.append(f"{method}: maps barely depend on the class (correlation {cs:+.2f} between the maps for the "
                     f"predicted and the least likely class > {t.class_sensitivity}){dead}: they show what the image "
                     "contains, not why the class was predicted")  # fmt: skip
    rs = values.get("randomization")
    if rs is not None and rs > t.randomization:
        found.append(f"{method}: maps survive re-initialising the network (rank correlation {rs:+.2f} > "
                     f"{t.randomization}): they reflect the input more than what the network learned "
                     "(Adebayo et al. 2018); do not read them as explanations")  # fmt: skip
    deletion, insertion = values.get("deletion_auc"), values.get("insertion_auc")
    if deletion is not None and insertion is not None and deletion >= insertion:
        found.append(f"{method}: removing the top-ranked pixels hurts the prediction no more than restoring them "
                     f"helps (deletion AUC {deletion:.2f} >= insertion AUC {insertion:.2f}): the maps do not point "
                     "at what the prediction uses")  # fmt: skip
    pg, chance = values.get("pointing_game"), values.get("pointing_game_chance")
    if pg is not None and chance is not None and pg <= chance:
        found.append(f"{method}: the maps' peaks fall on the object no more often than chance (pointing game "
                     f"{pg:.2f} <= {chance:.2f}, the objects' area share)")  # fmt: skip
    return found
