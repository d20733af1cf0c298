"""From measured evidence to plain-language verdicts on the first layer's kernel size and stride and on the
learning rate, and warnings on explanation maps.

Each verdict is a pure function of an evidence record (numbers the monitor measured) and :class:`Thresholds`. It
abstains (value None, text "… not enough evidence yet") until its evidence exists, and its signals mean the same
whatever the optimizer, the weight scale, the image size and the depth:

- learning rate: non-finite loss or weights (diverged); the training loss's progress since its first batch and its
  largest jump; how far the deepest stage's representation of the probe has moved from its initial one (1 - linear
  CKA); dead channels;
- stride: the share of the first layer's response that its stride folds back (alias fraction), once the first
  layer has learned enough that its filters are no longer mostly their random initialisation;
- kernel size: a kernel smaller than its stride leaves pixels unseen; the learned part of the filters (now minus
  initial) keeping its energy inside a window smaller than the kernel says the kernel is larger than it uses.

Every verdict's text starts with a mark of its severity: ✗ failing, ✓ ok, … not enough evidence yet, – no verdict
(none can be given: a 3x3 kernel, a 2x2 deepest map). The default thresholds and how each was chosen (on several
worlds, each left out in turn) are in the README's verdict section; ``python benchmarks/diagnosis_study.py``
reproduces them.

At each probe the verdicts are logged as one Markdown text (:func:`verdict_text`, under :data:`TEXT_TAG`), which
``lightning-viz report`` reads back with :func:`verdict_lines`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DECAYED",
    "LABELS",
    "NAMES",
    "RESTART",
    "TEXT_TAG",
    "KernelEvidence",
    "LearningRateEvidence",
    "QualityThresholds",
    "StrideEvidence",
    "Thresholds",
    "Verdict",
    "kernel_size_verdict",
    "learning_rate_verdict",
    "quality_warnings",
    "stride_verdict",
    "unless_too_high",
    "verdict_lines",
    "verdict_text",
]

NOT_YET = "not enough evidence yet"

NAMES = ("kernel_size", "stride", "learning_rate")
"""The verdicts, in the order they are logged: each is ``verdict/<name>`` (its value) and ``degree/<name>``."""

LABELS = {
    "kernel_size": {-1: "too small", 0: "ok", 1: "larger than it uses"},
    "stride": {0: "ok", 1: "aliasing"},
    "learning_rate": {-1: "too low", 0: "ok", 1: "too high"},
}
"""What each verdict's value means, in words: name -> value -> label."""

TEXT_TAG = "diagnostics/verdicts"
"""The tag of the text that holds every verdict's line at a probe (:func:`verdict_text`)."""


@dataclass(frozen=True)
class Thresholds:
    """Where the verdicts draw their lines (see the module docstring for the signals).

    Args:
        progress_ok: learning rate ok once the training loss has lost at least this share of its first value.
        stalled_progress: the loss has stalled while it has lost less than this share.
        loss_rise: too high when the loss has risen this share above its first value.
        spike: too high when the loss jumped to this many times its first value and has not fallen by
            ``progress_ok`` since (a rate at the edge of stability).
        dead_channels: too high when more than this share of the deepest stage's channels are dead (zero on the
            whole probe) and the loss is not falling by ``progress_ok``.
        change_low: while the loss has stalled, the deepest stage's representation of the probe has moved less
            than this since the first probe (1 - linear CKA): too low (from ``low_after`` steps on); at or above it
            the network is learning.
        low_after: steps before a rate is called too low: early on, a working rate can move the network this
            little too.
        min_learned: kernel and stride verdicts abstain while the learned part of the first layer's filters is less
            than this share of their norm: random filters are no evidence.
        alias_fraction: stride aliasing when more than this share of the first layer's response lies beyond its
            stride's Nyquist limit.
        coarse_map: the stride gets no "ok" while the deepest stage's map is this small or smaller (2: 2x2): there
            the first stride costs resolution, which the alias fraction cannot judge.
        window_share: kernel larger than it uses when the smallest centred window holding this share of the learned
            filters' energy is smaller than the kernel.
        rise_now: too high now when the loss's last 50 steps are this share above the lowest 50-step mean it
            reached before (and ``rise_floor`` of its first value above it): a rate that went up, or an instability.
        rise_floor: the same rise as a share of the first batch's loss, so that a loss near zero is not called
            risen for noise.
        stalled_now: the loss is flat now when its last 200 steps removed less than this share of the 200 before.
    """

    progress_ok: float = 0.14
    stalled_progress: float = 0.02
    loss_rise: float = 0.1
    spike: float = 2.3
    dead_channels: float = 0.63
    change_low: float = 0.05
    low_after: int = 100
    min_learned: float = 0.15
    alias_fraction: float = 0.11
    coarse_map: int = 2
    window_share: float = 0.9
    rise_now: float = 0.5
    rise_floor: float = 0.1
    stalled_now: float = 0.05


@dataclass(frozen=True)
class Verdict:
    """One finding: its name, a number for programs (``verdict/<name>``; None while the verdict abstains), a line
    of text for people that starts with its mark (✗ failing, ✓ ok, … not enough evidence yet, – no verdict), and its
    degree: how far the evidence lies beyond the line that decided the verdict, as a ratio of at least 1 (1: on the
    line; 3: three times past it, a clear case). None where no measured line decided it (a structural fact such as
    stride 1, or no evidence yet)."""

    name: str
    value: int | None
    text: str
    degree: float | None = None
    structural: bool = False
    """True where the verdict follows from the layer's shape alone (stride 1; a kernel smaller than its stride; a
    3x3 kernel, which gets none)."""
    suggestion: float | None = None
    """The value the advice names, where it names one a check can try: the rate of "try 0.002", the size of "try
    kernel 3"."""


def _ratio(line: float, measured: float) -> float:
    """line / measured, for a verdict decided by a value below its line (at most 1000: a zero is no clearer)."""
    return min(line / max(measured, 1e-12), 1000.0)


@dataclass(frozen=True)
class LearningRateEvidence:
    """What the learning-rate verdict reads at a probe or a learning-rate check
    (:meth:`lightning_viz.diagnostics.LossHistory.evidence` builds it from the training loss and the rate).

    Args:
        step: the optimizer step.
        nonfinite: what was not finite and since when (for example "the training loss since step 49"), or None.
        loss_progress: share of the first batch's training loss removed so far; None until enough batches.
        spike: the largest training loss so far over the first batch's.
        change: 1 - linear CKA between the deepest stage's probe representation now and at the first probe.
        dead_channels: share of the deepest stage's channels that are zero on the whole probe.
        recent_progress: share of the loss removed over the recent window (its last 200 steps against the 200
            before); about 0 when the loss is flat now.
        recent_change: 1 - linear CKA between the deepest stage's probe representation at the latest probe and at
            a probe at least 100 steps before it (``recent_steps`` apart).
        start: the first batch's loss.
        now, best, best_step: the loss's mean over its last 50 steps, its lowest 50-step mean before them and the
            step that best ended at.
        rise_began: the first step after the best where the loss was half-way up to ``now``.
        rate: the rate the optimizer's first parameter group used last (None: no ``lr`` in it).
        rate_before_rise: the largest rate used before ``rise_began``.
        rate_at_best: the largest rate used up to ``best_step``.
        rate_rose: whether the rate went up after ``best_step`` (a warm restart or a jump).
        rate_rising: whether the rate is going up now (a warm-up).
        peak_rate: the largest rate so far; low_since: the first step after it that the rate was below the peak
            over :data:`DECAYED` (None while it is not).
    """

    step: int
    nonfinite: str | None = None
    loss_progress: float | None = None
    spike: float | None = None
    change: float | None = None
    dead_channels: float | None = None
    recent_progress: float | None = None
    recent_change: float | None = None
    recent_steps: int | None = None
    start: float | None = None
    now: float | None = None
    best: float | None = None
    best_step: int | None = None
    rise_began: int | None = None
    rate: float | None = None
    rate_before_rise: float | None = None
    rate_at_best: float | None = None
    rate_rose: bool | None = None
    rate_rising: bool | None = None
    peak_rate: float | None = None
    low_since: int | None = None


DECAYED = 30
"""A rate below its run's peak over this factor counts as decayed by the schedule (a cosine's last ~12 %, a step
decay's second step, OneCycle's tail): there a flat loss after a clear fall is a schedule's end, not a rate too low."""

RESTART = 1.25
"""A rate that went back up to at most this many times the largest rate the run had learned at (up to the loss's
best) is a warm restart: the loss's rise after it is planned, not trouble."""


def _rate(value: float) -> str:
    """A rate in two significant digits, as people write it: 500, 0.02, 3e-05."""
    return f"{float(f'{value:.2g}'):g}"


def learning_rate_verdict(evidence: LearningRateEvidence, thresholds: Thresholds) -> Verdict:
    """1 (too high), -1 (too low), 0 (ok) or None (not enough evidence yet), checked in this order:

    1. anything non-finite: diverged;
    2. while the loss is not falling clearly since the start: most units dead, or the loss risen above its start,
       or a jump of the loss early on that it has not recovered from: too high;
    3. the loss now well above the best it reached (by ``rise_now`` of that best and ``rise_floor`` of the first
       batch's loss): too high, named with the step it began and the rate before it; unless the rate went back up
       to a level the run already learned at (a warm restart: ok, the rise is planned);
    4. while the rate is still rising (a warm-up) and the run has barely moved: not yet judged, since a low rate
       is what a warm-up starts with;
    5. the loss flat over the recent window and the network's representation barely moving in it, after
       ``low_after`` steps: too low, while the loss has fallen less than ``progress_ok`` since the start, or when a
       schedule decayed the rate and the run has been stuck at it for longer than it trained before (decayed too
       early);
    6. the loss fallen clearly since the start (a flat loss at the end of a decayed schedule included), or the
       network's representation moving: ok (a plateau of the loss while the network changes is how many working
       runs start);
    7. the loss stalled and the network barely changed since the start, after ``low_after`` steps: too low.
    """
    e, t = evidence, thresholds
    if e.nonfinite is not None:
        smaller = "one ten times smaller" if e.rate is None else f"{_rate(e.rate / 10)} (it was {_rate(e.rate)})"
        return Verdict("learning_rate", 1, f"✗ diverged: {e.nonfinite} not finite (NaN or inf); the learning rate "
                       f"is far too high for this model: try {smaller}, gradient clipping, or a warm-up",
                       suggestion=None if e.rate is None else float(_rate(e.rate / 10)))  # fmt: skip
    p = e.loss_progress
    if p is None:
        return Verdict("learning_rate", None, f"… {NOT_YET}: the training loss has not been seen for long enough")
    numbers = _numbers(e)
    smaller = "try a rate ten times smaller" if e.rate is None else f"try {_rate(e.rate / 10)}"
    lower = None if e.rate is None else float(_rate(e.rate / 10))
    if p < t.progress_ok:
        if e.dead_channels is not None and e.dead_channels > t.dead_channels:
            return Verdict("learning_rate", 1, f"✗ too high: most units died and the loss is not falling "
                           f"({numbers}; dead limit {t.dead_channels:.0%}); {smaller}",
                           e.dead_channels / t.dead_channels, suggestion=lower)  # fmt: skip
        if p < -t.loss_rise:
            return Verdict("learning_rate", 1, f"✗ too high: the training loss rose above its start ({numbers}; "
                           f"limit +{t.loss_rise:.0%}); {smaller}", -p / t.loss_rise, suggestion=lower)  # fmt: skip
        if e.spike is not None and e.spike > t.spike:
            return Verdict("learning_rate", 1, f"✗ too high: the loss jumped to {e.spike:.1f} times its start and "
                           f"has not come down since ({numbers}; jump limit {t.spike:.1f}x, falling from "
                           f"-{t.progress_ok:.0%}); {smaller}, or a warm-up", e.spike / t.spike,
                           suggestion=lower)  # fmt: skip
    risen = _risen(e, t, numbers)
    if risen is not None:
        return risen
    if e.rate_rising and p < t.progress_ok and (e.change is None or e.change < t.change_low):
        return Verdict("learning_rate", None, f"… {NOT_YET}: the loss has barely moved, but the rate is still rising "
                       f"(a warm-up): judged once it stops ({numbers})")  # fmt: skip
    stuck = _stuck(e, t, numbers)
    if stuck is not None:
        return stuck
    if p >= t.progress_ok:
        flat = e.recent_progress is not None and e.recent_progress < t.stalled_now
        if flat and e.low_since is not None and e.peak_rate is not None:
            return Verdict("learning_rate", 0, f"✓ ok: the loss fell {p:.0%} and is flat now that the schedule has "
                           f"brought the rate down (below 1/{DECAYED} of its peak {_rate(e.peak_rate)} since "
                           f"step {e.low_since}): a decayed schedule's end ({numbers})", p / t.progress_ok)  # fmt: skip
        return Verdict("learning_rate", 0, f"✓ ok: the training loss is falling ({numbers}; ok from "
                       f"-{t.progress_ok:.0%})", p / t.progress_ok)  # fmt: skip
    if e.change is not None and e.change >= t.change_low:
        return Verdict("learning_rate", 0, f"✓ ok: the network is learning, its representation is moving while the "
                       f"loss has not fallen much yet ({numbers}; moving from {t.change_low:.2f})",
                       e.change / t.change_low)  # fmt: skip
    larger = "try a rate ten times larger" if e.rate is None else f"try {_rate(e.rate * 10)}"
    if e.change is not None and p < t.stalled_progress and e.step >= t.low_after:
        return Verdict("learning_rate", -1, f"✗ too low: the loss stalled and the network barely changed in "
                       f"{e.step} steps ({numbers}; change limit {t.change_low:.2f}); {larger}",
                       _ratio(t.change_low, e.change), suggestion=_higher(e))  # fmt: skip
    return Verdict("learning_rate", None, f"… {NOT_YET}: the loss is not falling and the network is barely moving; "
                   f"too low if it stays so until step {t.low_after} ({numbers})")  # fmt: skip


def _higher(e: LearningRateEvidence) -> float | None:
    """The rate "ten times larger" names, as its text shows it (None where the rate is unknown)."""
    return None if e.rate is None else float(_rate(e.rate * 10))


def _numbers(e: LearningRateEvidence) -> str:
    """The evidence in words, for the verdict's line."""
    parts = [f"loss {0.0 - (e.loss_progress or 0.0):+.1%} since the first batch"]
    if e.recent_progress is not None:
        parts.append(f"{0.0 - e.recent_progress:+.1%} over the last 200 steps")
    if e.spike is not None:
        parts.append(f"largest loss {e.spike:.1f}x the first")
    if e.change is not None:
        parts.append(f"representation change {e.change:.2f}")
    if e.recent_change is not None and e.recent_steps:
        parts.append(f"{e.recent_change:.3f} over the last {e.recent_steps} steps")
    if e.dead_channels is not None:
        parts.append(f"dead channels {e.dead_channels:.0%}")
    if e.rate is not None:
        peak = "" if e.peak_rate is None or e.peak_rate <= e.rate else f" (peak {_rate(e.peak_rate)})"
        parts.append(f"rate {_rate(e.rate)}{peak}")
    return ", ".join(parts)


def _risen(e: LearningRateEvidence, t: Thresholds, numbers: str) -> Verdict | None:
    """Rule 3: the loss well above its best now; a warm restart excused (ok), None where it has not risen."""
    if e.now is None or e.best is None or e.start is None or e.best <= 0 or e.start <= 0:
        return None
    rise, share = e.now / e.best - 1.0, (e.now - e.best) / e.start
    if rise <= t.rise_now or share <= t.rise_floor:
        return None
    where = (f"the loss rose from {e.best:.3g} (its best, by step {e.best_step}) to {e.now:.3g} since step "
             f"{e.rise_began}")  # fmt: skip
    restart = e.rate_rose and e.rate is not None and e.rate_at_best is not None and e.rate <= RESTART * e.rate_at_best
    if restart:
        assert e.rate is not None and e.rate_at_best is not None
        return Verdict("learning_rate", 0, f"✓ ok: {where}, after the rate went back up to {_rate(e.rate)}, a level "
                       f"the run learned at before (up to {_rate(e.rate_at_best)}): a warm restart, the loss is "
                       f"expected to fall again ({numbers})")  # fmt: skip
    before = e.rate_before_rise
    suggestion: float | None
    if e.rate is not None and before is not None and e.rate > 1.5 * before:
        advice = f"the rate went from {_rate(before)} to {_rate(e.rate)}: try {_rate(before)}, the rate it learned at"
        suggestion = float(_rate(before))
    else:
        advice = "try a rate ten times smaller" if e.rate is None else f"try {_rate(e.rate / 10)}"
        suggestion = None if e.rate is None else float(_rate(e.rate / 10))
    degree = min(rise / t.rise_now, share / t.rise_floor)
    return Verdict("learning_rate", 1, f"✗ too high now: {where} ({numbers}; limits: +{t.rise_now:.0%} of its best "
                   f"and +{t.rise_floor:.0%} of its start); {advice}", degree, suggestion=suggestion)  # fmt: skip


def _stuck(e: LearningRateEvidence, t: Thresholds, numbers: str) -> Verdict | None:
    """Rule 4: the loss flat and the network still over the recent window; None where it is not stuck (or while
    that cannot be told)."""
    if e.recent_progress is None or e.recent_change is None or e.step < t.low_after or e.loss_progress is None:
        return None
    if e.recent_progress >= t.stalled_now or e.recent_change >= t.change_low:
        return None
    degree = _ratio(t.change_low, e.recent_change)
    window = f"over the last {e.recent_steps} steps" if e.recent_steps else "recently"
    if e.loss_progress < t.progress_ok:
        larger = "try a rate ten times larger" if e.rate is None else f"try {_rate(e.rate * 10)}"
        decayed, suggestion = "", _higher(e)
        if e.low_since is not None and e.peak_rate is not None:
            decayed = f" (the schedule brought it down from {_rate(e.peak_rate)} by step {e.low_since})"
            larger = f"keep {_rate(e.peak_rate)} for longer: decay once the loss flattens"
            suggestion = float(_rate(e.peak_rate))
        return Verdict("learning_rate", -1, f"✗ too low: the loss is stuck near its start and the network barely "
                       f"changes {window}{decayed} ({numbers}; limits: loss falling {t.stalled_now:.0%}, change "
                       f"{t.change_low:.2f}); {larger}", degree, suggestion=suggestion)  # fmt: skip
    if e.low_since is not None and e.peak_rate is not None and e.step - e.low_since > max(e.low_since, 200):
        return Verdict("learning_rate", -1, f"✗ too low: decayed too early: the schedule brought the rate below 1/"
                       f"{DECAYED} of its peak {_rate(e.peak_rate)} at step {e.low_since} and the run has barely "
                       f"moved since, for longer than it trained before ({numbers}); keep {_rate(e.peak_rate)} for "
                       f"longer: decay once the loss flattens (ReduceLROnPlateau), or raise it to "
                       f"{_rate(e.peak_rate / 10)} now", degree, suggestion=float(_rate(e.peak_rate / 10)))  # fmt: skip
    return None


@dataclass(frozen=True)
class StrideEvidence:
    """What the stride verdict reads: the first layer, its kernel and stride, the learned share of its filters
    (norm of now minus initial over the norm now), its alias fraction on the probe, and the side of the deepest
    stage's feature map (the smaller of height and width)."""

    layer: str
    kernel: int
    stride: int
    learned: float | None = None
    alias_fraction: float | None = None
    deepest_map: int | None = None


def stride_verdict(evidence: StrideEvidence, thresholds: Thresholds) -> Verdict:
    """1 (aliasing), 0 (ok) or None (not enough evidence yet)."""
    e, t = evidence, thresholds
    where = f"{e.layer} ({e.kernel}x{e.kernel}, stride {e.stride})"
    if e.stride == 1:
        return Verdict("stride", 0, f"✓ ok: {where} samples every pixel, nothing to alias", structural=True)
    if e.learned is None or e.alias_fraction is None or math.isnan(e.alias_fraction) or e.learned < t.min_learned:
        learned = "not measured" if e.learned is None else f"{e.learned:.0%}"
        return Verdict("stride", None, f"… {NOT_YET}: {where} filters are still mostly their random initialisation "
                       f"(learned share {learned}, needed {t.min_learned:.0%})")  # fmt: skip
    a = e.alias_fraction
    if a > t.alias_fraction:
        return Verdict("stride", 1, f"✗ aliasing: {a:.0%} of {where}'s response lies beyond what stride "
                       f"{e.stride} can carry and folds back (limit {t.alias_fraction:.0%}); blur before subsampling "
                       f"(run the convolution at stride 1, then a small binomial blur with stride {e.stride}: Zhang "
                       f"2019, anti-aliased CNNs), or try stride {max(1, e.stride // 2)} (about 4 times the compute "
                       "after it)", a / t.alias_fraction)  # fmt: skip
    if e.deepest_map is not None and e.deepest_map <= t.coarse_map:
        m = e.deepest_map
        return Verdict("stride", None, f"– no verdict: only {a:.0%} of {where}'s response aliases (limit "
                       f"{t.alias_fraction:.0%}), but the deepest feature map is {m}x{m}: here the first stride "
                       f"costs resolution, which aliasing does not measure; for small images a smaller first stride "
                       "may help (as CIFAR ResNets use)")  # fmt: skip
    return Verdict("stride", 0, f"✓ ok: {a:.0%} of {where}'s response aliases (limit {t.alias_fraction:.0%})",
                   _ratio(t.alias_fraction, a))  # fmt: skip


@dataclass(frozen=True)
class KernelEvidence:
    """What the kernel-size verdict reads: the first layer, its kernel and stride, the learned share of its
    filters, the learned part's energy on the rim (over an even spread) and the window holding most of it."""

    layer: str
    kernel: int
    stride: int
    learned: float | None = None
    rim_share: float | None = None
    window: int | None = None


def kernel_size_verdict(evidence: KernelEvidence, thresholds: Thresholds) -> Verdict:
    """-1 (too small: smaller than its stride), 1 (larger than it uses), 0 (ok) or None (not enough evidence yet).

    A 3x3 or smaller kernel that covers its stride gets no verdict: it has no rim to judge it by, and whether a
    larger kernel would learn better depends on the data and the depth (see the README's study)."""
    e, t = evidence, thresholds
    where = f"{e.layer} ({e.kernel}x{e.kernel}, stride {e.stride})"
    if e.kernel < e.stride:
        unseen = 1 - (e.kernel / e.stride) ** 2
        return Verdict("kernel_size", -1, f"✗ too small: {where} never sees {unseen:.0%} of the pixels (a kernel "
                       f"smaller than its stride); try kernel {e.stride + 1 if e.stride % 2 == 0 else e.stride} or "
                       f"more, or stride {e.kernel}", structural=True,
                       suggestion=e.stride + 1 if e.stride % 2 == 0 else e.stride)  # fmt: skip
    if e.kernel <= 3:
        return Verdict("kernel_size", None, f"– no verdict: {where} covers every pixel and has no rim to judge its "
                       "size by", structural=True)  # fmt: skip
    if e.learned is None or e.window is None or e.learned < t.min_learned:
        learned = "not measured" if e.learned is None else f"{e.learned:.0%}"
        return Verdict("kernel_size", None, f"… {NOT_YET}: {where} filters are still mostly their random "
                       f"initialisation (learned share {learned}, needed {t.min_learned:.0%})")  # fmt: skip
    rim = "" if e.rim_share is None else f", rim energy {e.rim_share:.2f} of an even spread"
    if e.window < e.kernel:
        window = max(e.window, e.stride)
        saved = 1 - window**2 / e.kernel**2
        return Verdict("kernel_size", 1, f"✗ larger than it uses: the learned filters keep {t.window_share:.0%} of "
                       f"their energy in the central {e.window}x{e.window} of {where}{rim}; try kernel {window} "
                       f"({saved:.0%} fewer multiply-adds in {e.layer})", e.kernel / e.window)  # fmt: skip
    return Verdict("kernel_size", 0, f"✓ ok: {where} covers every pixel and the learned filters use all of it "
                   f"(the central {e.kernel - 2}x{e.kernel - 2} holds less than {t.window_share:.0%} of their "
                   f"energy{rim})")  # fmt: skip


def unless_too_high(verdict: Verdict, learning_rate: Verdict) -> Verdict:
    """``verdict`` (on the kernel or the stride), or an abstention while the learning rate is too high: the first
    layer of a run that is diverging or collapsing is no evidence of what its kernel or stride does to a network
    that learns. Verdicts that follow from the shapes alone (``structural``) stand."""
    if learning_rate.value != 1 or verdict.structural:
        return verdict
    return Verdict(verdict.name, None, f"… {NOT_YET}: the learning rate is too high (see below); the first layer is "
                   "judged once training is stable")  # fmt: skip


def verdict_text(verdicts: Sequence[Verdict], step: int) -> str:
    """The verdicts of one probe as Markdown: a paragraph ``Step 120:``, then one paragraph per verdict in the order
    given, ``- **kernel size**: ✓ ok: ...``, its line starting with its mark (✗ failing, ✓ ok, … not enough evidence
    yet, – no verdict). :func:`verdict_lines` reads it back."""
    lines = [f"- **{v.name.replace('_', ' ')}**: {v.text}" for v in verdicts]
    return f"Step {step}:\n\n" + "\n\n".join(lines)


def verdict_lines(text: str) -> dict[str, str]:
    """Each verdict's line in a text written by :func:`verdict_text`: name (``"learning_rate"``) -> line (``"✗ too
    high: ..."``), in the text's order. Paragraphs that are no verdict's line (the step) are skipped."""
    found = {}
    for paragraph in text.split("\n\n"):
        if paragraph.startswith("- **") and "**: " in paragraph:
            label, line = paragraph[len("- **") :].split("**: ", 1)
            found[label.replace(" ", "_")] = line
    return found


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


def quality_warnings(method: str, values: dict[str, float], thresholds: QualityThresholds) -> dict[str, str]:
    """Plain-language warnings from one method's explanation-quality numbers (missing numbers are skipped).

    Args:
        method: the method's name, as shown to the user.
        values: metric name (``class_sensitivity``, ``randomization``, ``blank_maps``, ``deletion_auc``,
            ``insertion_auc``, ``pointing_game``, ``pointing_game_chance``) -> value.
        thresholds: the limits.

    Returns:
        One line per problem found, keyed by the check that found it (``blank_maps``, ``class_sensitivity``,
        ``randomization``, ``deletion_insertion``, ``pointing_game``), so a caller can tell a standing warning from
        a new one while its numbers change; empty when none is.
    """
    t = thresholds
    found: dict[str, str] = {}
    blank = values.get("blank_maps")
    if blank is not None and blank > t.blank_maps:
        found["blank_maps"] = (f"{method}: {blank:.0%} of the probe's maps are blank (limit {t.blank_maps:.0%}): "
                               "the explained layer's activations or gradients are zero, a sign of dead units; check "
                               "the learning rate")  # fmt: skip
    cs = values.get("class_sensitivity")
    if cs is not None and cs > t.class_sensitivity:
        dead = " (for Grad-CAM a sign of a dead or collapsed network)" if method == "gradcam" else ""
        found["class_sensitivity"] = (f"{method}: maps barely depend on the class (correlation {cs:+.2f} between "
                                      f"the maps for the predicted and the least likely class > "
                                      f"{t.class_sensitivity}){dead}: they show what the image contains, not why "
                                      "the class was predicted")  # fmt: skip
    rs = values.get("randomization")
    if rs is not None and rs > t.randomization:
        found["randomization"] = (f"{method}: maps survive re-initialising the network (rank correlation {rs:+.2f} "
                                  f"> {t.randomization}): they reflect the input more than what the network learned "
                                  "(Adebayo et al. 2018); do not read them as explanations")  # fmt: skip
    deletion, insertion = values.get("deletion_auc"), values.get("insertion_auc")
    if deletion is not None and insertion is not None and deletion >= insertion:
        found["deletion_insertion"] = (f"{method}: removing the top-ranked pixels hurts the prediction no more "
                                       f"than restoring them helps (deletion AUC {deletion:.2f} >= insertion AUC "
                                       f"{insertion:.2f}): the maps do not point at what the prediction "
                                       "uses")  # fmt: skip
    pg, chance = values.get("pointing_game"), values.get("pointing_game_chance")
    if pg is not None and chance is not None and pg <= chance:
        found["pointing_game"] = (f"{method}: the maps' peaks fall on the object no more often than chance "
                                  f"(pointing game {pg:.2f} <= {chance:.2f}, the objects' area share)")  # fmt: skip
    return found
