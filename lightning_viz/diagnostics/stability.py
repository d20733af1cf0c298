"""How much a visualization changed between two probes: Spearman rank correlation, row by row.

A feature that is still forming changes its projection from one probe to the next; a converged one does not
(Zeiler & Fergus 2014, Fig. 4, watch features evolve over epochs). The rank correlation ignores the overall scale,
which the backward pass changes as the weights grow.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rank_correlation"]


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks along the last dimension of a 2-D tensor, ties given their average rank (as scipy.stats.rankdata),
    all rows at once."""
    rows, n = x.shape
    order = x.argsort(dim=-1)
    sorted_x = x.gather(-1, order)
    if n == 0:
        return torch.empty(x.shape, dtype=torch.float64, device=x.device)
    # a run of ties starts where a sorted value differs from the one before it and ends before the next start;
    # its members share the mean of its first and last 1-based positions
    starts = torch.ones(x.shape, dtype=torch.bool, device=x.device)
    starts[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    position = torch.arange(1, n + 1, dtype=torch.float64, device=x.device).expand(rows, n)
    run = starts.flatten().cumsum(0) - 1  # run of each element, numbered over the flattened rows
    ranks_sorted = ((position[starts] + position[ends]) / 2)[run].view(rows, n)
    ranks = torch.empty_like(ranks_sorted)
    ranks.scatter_(-1, order, ranks_sorted)
    return ranks


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation between matching rows of ``a`` and ``b``.

    Args:
        a: Tensor of shape (M, D).
        b: Tensor of shape (M, D).

    Returns:
        Tensor of shape (M,), float64, values in [-1, 1]; 0 for a row in which either input is constant.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"a and b must both have shape (M, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = _average_ranks(a.detach().double()), _average_ranks(b.detach().double())
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denominator = (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-300)
    corr = (ra * rb).sum(dim=1) / denominator
    constant = (ra.norm(dim=1) == 0) | (rb.norm(dim=1) == 0)
    return torch.where(constant, torch.zeros_like(corr), corr)
