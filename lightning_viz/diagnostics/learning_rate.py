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

import torch
from torch import Tensor, nn

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
    """What the learning-rate verdict reads from the training loss, kept in a few numbers: the loss of the first
    batch (the network at initialisation), the mean of the last ``window`` batches, the largest loss seen (a rate at
    the edge of stability makes the loss jump within the first steps) and the first step whose loss was not
    finite. Works with any optimizer; feed it one value per training batch.

    Example:
        >>> history = LossHistory(window=2)
        >>> for step, loss in enumerate([2.3, 2.5, 2.2, 1.9, 1.5]):
        ...     history.add(step, loss)
        >>> round(history.progress(), 2), round(history.spike(), 2)  # 1 - 1.7 / 2.3; 2.5 / 2.3
        (0.26, 1.09)
    """

    def __init__(self, window: int = 10) -> None:
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self.start: float | None = None
        self.recent: list[float] = []
        self.count = 0
        self.peak: float | None = None
        self.first_nonfinite_step: int | None = None

    def add(self, step: int, value: float) -> None:
        """Record the loss of one training batch at optimizer step ``step``."""
        if not math.isfinite(value):
            if self.first_nonfinite_step is None:
                self.first_nonfinite_step = step
            return
        self.count += 1
        self.start = value if self.start is None else self.start
        self.peak = value if self.peak is None else max(self.peak, value)
        self.recent = [*self.recent, value][-self.window :]

    @property
    def latest(self) -> float | None:
        """Mean loss of the last ``window`` batches, once a full window after the first batch has been seen."""
        return statistics.fmean(self.recent) if self.count > self.window else None

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

    def state_dict(self) -> dict[str, object]:
        return {"start": self.start, "recent": list(self.recent), "count": self.count, "peak": self.peak,
                "first_nonfinite_step": self.first_nonfinite_step}  # fmt: skip

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.start = state["start"]  # type: ignore[assignment]
        self.recent = list(state["recent"])  # type: ignore[call-overload]
        self.count = int(state["count"])  # type: ignore[call-overload]
        self.peak = state["peak"]  # type: ignore[assignment]
        self.first_nonfinite_step = state["first_nonfinite_step"]  # type: ignore[assignment]


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers that hold a NaN or an infinity."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]
