"""Learning-rate diagnostics.

- Update-to-weight ratio ||dW|| / ||W|| of one optimizer step, for any optimizer (Karpathy, CS231n notes: about
  1e-3 is healthy; far below, the layer barely learns; far above, it thrashes);
- dead channels on the probe (too high a rate kills ReLU units);
- filter RMS growth against initialisation (ZF renormalised first-layer filters whose RMS passed 0.1);
- linear CKA between a layer's representations at successive probes (Kornblith et al. 2019, "Similarity of Neural
  Network Representations Revisited"): lower layers converge first; a frozen net gives CKA 1 everywhere, so read it
  together with the update ratio;
- the training loss's progress since the start, and the first step it was not finite (:class:`LossHistory`), and
  parameters that hold NaN or infinity: signals that mean the same whatever the optimizer (an update ratio does not:
  Adam's step is about ``lr`` per weight whatever the gradient).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch
from torch import Tensor, nn

from lightning_viz.diagnostics.verdicts import DECAYED, LearningRateEvidence

__all__ = [
    "LossHistory",
    "dead_channel_fraction",
    "linear_cka",
    "nonfinite_parameters",
    "rms_growth",
    "update_ratio",
]


def update_ratio(before: Tensor, after: Tensor) -> float:
    """||after - before|| / ||before|| for one parameter tensor across one optimizer step."""
    if before.shape != after.shape:
        raise ValueError(f"shapes differ: {tuple(before.shape)} and {tuple(after.shape)}")
    before, after = before.detach().double(), after.detach().double()
    return float((after - before).norm() / before.norm().clamp_min(1e-300))


def dead_channel_fraction(activations: Tensor) -> float:
    """Fraction of channels that are exactly zero on every image and position: activations (N, C, H, W)."""
    if activations.dim() != 4:
        raise ValueError(f"activations must have shape (N, C, H, W), got {tuple(activations.shape)}")
    return float((activations.detach().abs().amax(dim=(0, 2, 3)) == 0).double().mean())


def rms_growth(weight: Tensor, initial: Tensor) -> float:
    """RMS of the weights over their RMS at initialisation."""
    return float(weight.detach().double().pow(2).mean().sqrt() / initial.detach().double().pow(2).mean().sqrt())


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear centred kernel alignment between two representations of the same N examples.

    CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred X (N, p) and Y (N, q); inputs of more than
    two dimensions are flattened per example. 1 for identical representations, invariant to orthogonal transforms
    and isotropic scaling. Computed with the N x N Gram matrices (||Y^T X||_F^2 = tr(X X^T Y Y^T)), so a feature
    map of 32,768 values per image costs a 16 x 16 matrix, not a 32,768 x 32,768 one.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"need the same examples: {x.shape[0]} and {y.shape[0]} rows")
    x = x.detach().double().flatten(1)
    y = y.detach().double().flatten(1)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    gram_x, gram_y = x @ x.T, y @ y.T
    cross = (gram_x * gram_y).sum()
    norm = gram_x.norm() * gram_y.norm()
    return float(cross / norm.clamp_min(1e-300))


class LossHistory:
    """What the learning-rate verdict reads from the training loss and the optimizer's rate, kept in bounded memory.

    Since the start: the loss of the first batch (the network at initialisation), the mean of the last ``window``
    batches, the largest loss seen (a rate at the edge of stability makes the loss jump within the first steps) and
    the first step whose loss was not finite. Over the recent past, in blocks of ``block`` steps (the last ``keep``
    of them, plus running summaries): the loss's fall over the last ``recent`` steps against the ``recent`` before,
    its lowest 2-block mean so far (to see it rise again), and the rate's history: its peak, when it fell below the
    peak over :data:`DECAYED`, and how high it had been when the loss was at its best (a rate that goes back up to
    a level the run already learned at is a warm restart, not a jump). Works with any optimizer; feed it one value
    per training batch, with the rate its update used where there is one.

    Example:
        >>> history = LossHistory(window=2)
        >>> for step, loss in enumerate([2.3, 2.5, 2.2, 1.9, 1.5]):
        ...     history.add(step, loss)
        >>> round(history.progress(), 2), round(history.spike(), 2)  # 1 - 1.7 / 2.3; 2.5 / 2.3
        (0.26, 1.09)
    """

    def __init__(self, window: int = 10, block: int = 25, recent: int = 200, keep: int = 200) -> None:
        if window < 1 or block < 1 or recent < 2 * block or keep < 2 * recent // block:
            raise ValueError(f"need window >= 1, block >= 1, recent >= 2 * block and keep >= 2 * recent / block, got "
                             f"{window}, {block}, {recent}, {keep}")  # fmt: skip
        self.window, self.block, self.recent, self.keep = window, block, recent, keep
        self.start: float | None = None
        self.last: list[float] = []
        self.count = 0
        self.peak: float | None = None
        self.first_nonfinite_step: int | None = None
        self.blocks: list[list[float]] = []  # [end step, mean loss, largest rate, running largest rate]
        self._sum, self._n = 0.0, 0  # the block being filled: its loss sum and batches
        self._rate: float | None = None  # and its largest rate
        # the lowest 2-block mean: (mean, its end step, the rate's peak up to it, the rate of its last block)
        self.best: tuple[float, int, float | None, float | None] | None = None
        self.rate: float | None = None
        self.peak_rate: float | None = None
        self.peak_rate_step: int | None = None
        self.low_since: int | None = None  # first step after the peak with the rate below it over DECAYED

    def add(self, step: int, value: float, rate: float | None = None) -> None:
        """Record the loss of one training batch at optimizer step ``step``, and the rate its update used."""
        if rate is not None and math.isfinite(rate):
            self._add_rate(step, rate)
        if not math.isfinite(value):
            if self.first_nonfinite_step is None:
                self.first_nonfinite_step = step
            return
        self.count += 1
        self.start = value if self.start is None else self.start
        self.peak = value if self.peak is None else max(self.peak, value)
        self.last = [*self.last, value][-self.window :]
        self._sum, self._n = self._sum + value, self._n + 1
        self._rate = rate if self._rate is None or (rate is not None and rate > self._rate) else self._rate
        if self._n == self.block:
            self._close_block(step)

    def _add_rate(self, step: int, rate: float) -> None:
        self.rate = rate
        if self.peak_rate is None or rate > self.peak_rate:
            self.peak_rate, self.peak_rate_step, self.low_since = rate, step, None
        if rate < self.peak_rate / DECAYED:
            self.low_since = step if self.low_since is None else self.low_since
        else:
            self.low_since = None

    def _close_block(self, step: int) -> None:
        running = self.blocks[-1][3] if self.blocks else math.nan
        rate = math.nan if self._rate is None else self._rate
        running = rate if math.isnan(running) else running if math.isnan(rate) else max(running, rate)
        self.blocks.append([float(step), self._sum / self._n, rate, running])
        self._sum, self._n, self._rate = 0.0, 0, None
        if len(self.blocks) >= 4:  # the pair before the latest two becomes history: the best the loss has been
            (_, a, _, _), (end, b, rate, seen) = self.blocks[-4], self.blocks[-3]
            pair = (a + b) / 2
            if self.best is None or pair < self.best[0]:
                self.best = (pair, int(end), None if math.isnan(seen) else seen, None if math.isnan(rate) else rate)
        del self.blocks[: -self.keep]

    @property
    def latest(self) -> float | None:
        """Mean loss of the last ``window`` batches, once a full window after the first batch has been seen."""
        return statistics.fmean(self.last) if self.count > self.window else None

    def progress(self) -> float | None:
        """Share of the first batch's loss removed so far, 1 - latest / start: about 0 when the loss has not moved,
        negative when it rose; None until there are enough batches (or for a loss that starts at or below 0)."""
        start, latest = self.start, self.latest
        if start is None or latest is None or start <= 0:
            return None
        return 1.0 - latest / start

    def spike(self) -> float | None:
        """The largest loss seen over the first batch's: about 1 for a healthy run, several for a rate at the edge
        of stability; None until there are enough batches (or for a loss that starts at or below 0)."""
        if self.start is None or self.peak is None or self.start <= 0 or self.latest is None:
            return None
        return self.peak / self.start

    def recent_progress(self) -> float | None:
        """Share of the loss removed over the last ``recent`` steps: 1 - (mean of their loss) / (mean of the
        ``recent`` steps before); about 0 when the loss is flat now. None until there are ``2 * recent`` steps."""
        n = self.recent // self.block
        if len(self.blocks) < 2 * n:
            return None
        now = statistics.fmean(b[1] for b in self.blocks[-n:])
        before = statistics.fmean(b[1] for b in self.blocks[-2 * n : -n])
        return 1.0 - now / before if before > 0 else None

    def rise(self) -> tuple[float, float, int, int] | None:
        """How far the loss is now above its best: (mean of the last two blocks, the lowest 2-block mean before
        them, the step that best ended at, the step the rise began: the first later block half-way up); None
        before there is a best."""
        if self.best is None or len(self.blocks) < 2:
            return None
        now = (self.blocks[-1][1] + self.blocks[-2][1]) / 2
        best, best_step, _, _ = self.best
        halfway = best + (now - best) / 2
        began = next((int(b[0]) - self.block + 1 for b in self.blocks if b[0] > best_step and b[1] > halfway),
                     int(self.blocks[-1][0]))  # fmt: skip
        return now, best, best_step, began

    def _rate_rose(self) -> bool | None:
        """Whether the rate went up after the loss's best (a warm restart, a jump): a kept block after it used more
        than 1.5 times the rate of the block the best ended in."""
        if self.best is None:
            return None
        at_best = self.best[3]
        after = [b[2] for b in self.blocks if b[0] > self.best[1] and not math.isnan(b[2])]
        if at_best is None or not after:
            return None
        return max(after) > 1.5 * at_best

    def rate_rising(self) -> bool | None:
        """Whether the rate is going up now (a warm-up, OneCycle's first phase): the last block's largest rate above
        that of the block two before it by more than 2 %. None without rates."""
        rates = [b[2] for b in self.blocks[-3:]]
        if len(rates) < 3 or any(math.isnan(r) for r in rates):
            return None
        return rates[-1] > 1.02 * rates[0]

    def rate_before(self, step: int) -> float | None:
        """The largest rate of the kept blocks that ended before ``step`` (the rate a jump left)."""
        rates = [b[2] for b in self.blocks if b[0] < step and not math.isnan(b[2])]
        return max(rates) if rates else None

    def evidence(self, step: int, nonfinite: str | None = None, change: float | None = None,
                 recent_change: float | None = None, recent_steps: int | None = None,
                 dead_channels: float | None = None) -> LearningRateEvidence:  # fmt: skip
        """The learning-rate verdict's evidence at ``step``: this history's numbers and the probe's (``change``
        since the first probe, ``recent_change`` over the last ``recent_steps``, ``dead_channels``)."""
        rise = self.rise()
        return LearningRateEvidence(
            step,
            nonfinite,
            self.progress(),
            self.spike(),
            change,
            dead_channels,
            recent_progress=self.recent_progress(),
            recent_change=recent_change,
            recent_steps=recent_steps,
            start=self.start,
            now=None if rise is None else rise[0],
            best=None if rise is None else rise[1],
            best_step=None if rise is None else rise[2],
            rise_began=None if rise is None else rise[3],
            rate=self.rate,
            rate_before_rise=None if rise is None else self.rate_before(rise[3]),
            rate_at_best=None if self.best is None else self.best[2],
            rate_rose=self._rate_rose(),
            rate_rising=self.rate_rising(),
            peak_rate=self.peak_rate,
            low_since=self.low_since,
        )

    def state_dict(self) -> dict[str, object]:
        return {"start": self.start, "recent": list(self.last), "count": self.count, "peak": self.peak,
                "first_nonfinite_step": self.first_nonfinite_step, "blocks": [list(b) for b in self.blocks],
                "partial": (self._sum, self._n, self._rate), "best": self.best, "rate": self.rate,
                "peak_rate": self.peak_rate, "peak_rate_step": self.peak_rate_step,
                "low_since": self.low_since}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = state["start"]
        self.last = list(state["recent"])
        self.count = int(state["count"])
        self.peak = state["peak"]
        self.first_nonfinite_step = state["first_nonfinite_step"]
        self.blocks = [list(b) for b in state.get("blocks", [])]
        self._sum, self._n, self._rate = state.get("partial", (0.0, 0, None))
        self.best = None if state.get("best") is None else tuple(state["best"])
        self.rate, self.peak_rate = state.get("rate"), state.get("peak_rate")
        self.peak_rate_step, self.low_since = state.get("peak_rate_step"), state.get("low_since")


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers that hold a NaN or an infinity."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]
