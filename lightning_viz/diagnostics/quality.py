"""How far a saliency map can be trusted: numbers that check maps against ground truth and against the model.

- Pointing game (Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop"): does the map's maximum
  fall on the object? Ties count fractionally: the share of the maximal pixels that are on the object, so a
  constant map scores the object's area fraction (the chance value). Cost: none beyond the map.
- Energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the map's (non-negative) mass on the
  object; a constant map also scores the area fraction. Cost: none beyond the map.
- Class sensitivity (Nie et al. 2018, "A Theoretical Explanation for Perplexing Behaviors of Backpropagation-based
  Visualizations"): the correlation between the maps for two classes. Near +1 means the map does not depend on the
  class (deconvnet and guided backprop are nearly class-blind; a Grad-CAM near +1 flags a dead network). Cost: one
  more backward pass per class.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_viz.diagnostics.stability import rank_correlation

__all__ = [
    "blank_maps",
    "class_sensitivity",
    "energy_pointing_game",
    "map_stability",
    "pointing_game",
    "randomization_similarity",
]


def _check(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if maps.dim() != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both have shape (N, H, W), got {tuple(maps.shape)} and "
                         f"{tuple(masks.shape)}")  # fmt: skip
    return maps.detach().double().flatten(1), (masks.detach() > 0.5).flatten(1)


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Per image, the share of the map's maximal pixels that lie on the object: 1 for a hit, 0 for a miss.

    Args:
        maps: Tensor of shape (N, H, W).
        masks: object masks, Tensor of shape (N, H, W), object where > 0.5.

    Returns:
        Tensor of shape (N,), float64, values in [0, 1]; a constant map scores the object's area fraction.
    """
    flat, on = _check(maps, masks)
    peak = flat == flat.amax(dim=1, keepdim=True)
    return (peak & on).sum(dim=1).double() / peak.sum(dim=1).double()


def energy_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Per image, the share of the map's mass (negative values clipped to 0) on the object.

    Returns:
        Tensor of shape (N,), float64, values in [0, 1]; a constant map scores the object's area fraction, an
        all-zero map 0.
    """
    flat, on = _check(maps, masks)
    mass = flat.clamp_min(0)
    return (mass * on).sum(dim=1) / mass.sum(dim=1).clamp_min(1e-300)


def class_sensitivity(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Per image, the Pearson correlation between the maps for two classes: Tensor of shape (N,), in [-1, 1].

    Two constant maps count as identical (1: the map does not depend on the class, as the blank Grad-CAM maps of a
    network whose last features are dead); one constant map against a varying one scores 0.
    """
    if maps_a.shape != maps_b.shape or maps_a.dim() < 2:
        raise ValueError(f"maps must have one shape (N, ...), got {tuple(maps_a.shape)} and {tuple(maps_b.shape)}")
    a = maps_a.detach().double().flatten(1)
    b = maps_b.detach().double().flatten(1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    norm_a, norm_b = a.norm(dim=1), b.norm(dim=1)
    corr = (a * b).sum(dim=1) / (norm_a * norm_b).clamp_min(1e-300)
    corr = torch.where((norm_a > 0) & (norm_b > 0), corr, torch.zeros_like(corr))
    return torch.where((norm_a == 0) & (norm_b == 0), torch.ones_like(corr), corr)


def blank_maps(maps: Tensor) -> Tensor:
    """Per image, whether the map is constant (all zero, for Grad-CAM): bool Tensor of shape (N,). A blank map
    explains nothing; many of them mean the explained layer's activations or gradients are zero. Cost: none."""
    if maps.dim() < 2:
        raise ValueError(f"maps must have shape (N, ...), got {tuple(maps.shape)}")
    flat = maps.detach().flatten(1)
    return flat.amax(dim=1) == flat.amin(dim=1)


def _rank_similarity(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    if maps_a.shape != maps_b.shape or maps_a.dim() != 3:
        raise ValueError(f"maps must both have shape (N, H, W), got {tuple(maps_a.shape)} and {tuple(maps_b.shape)}")
    return rank_correlation(maps_a.flatten(1), maps_b.flatten(1))


def randomization_similarity(maps: Tensor, randomized_maps: Tensor) -> Tensor:
    """Per image, the Spearman rank correlation between a method's maps for the trained model and for the model
    with its top layers re-initialised (the maps for the same classes): Tensor of shape (N,), in [-1, 1]. High
    means the map does not depend on what those layers learned."""
    return _rank_similarity(maps, randomized_maps)


def map_stability(maps: Tensor, previous: Tensor) -> Tensor:
    """Per image, the Spearman rank correlation between a map and the same map (same image, same class) at the
    previous probe: Tensor of shape (N,), in [-1, 1]."""
    return _rank_similarity(maps, previous)
