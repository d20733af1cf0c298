"""Learning-rate diagnostics.

- Update-to-weight ratio ||dW|| / ||W|| of one optimizer step, for any optimizer (Karpathy, CS231n notes: about
  1e-3 is healthy; far below, the layer barely learns; far above, it thrashes);
- dead channels on the probe (too high a rate kills ReLU units);
- filter RMS growth against initialisation (ZF renormalised first-layer filters whose RMS passed 0.1);
- linear CKA between a layer's representations at successive probes (Kornblith et al. 2019, "Similarity of Neural
  Network Representations Revisited"): lower layers converge first; a frozen net gives CKA 1 everywhere, so read it
  together with the update ratio.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["dead_channel_fraction", "linear_cka", "rms_growth", "update_ratio"]


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
