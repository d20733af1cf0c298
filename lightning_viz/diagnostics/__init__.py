"""Diagnostics as pure functions: tensors -> numbers. No Lightning, no TensorBoard."""

from lightning_viz.diagnostics.kernel import (
    BANDS,
    band_energies,
    dead_filters,
    dominance,
    dominant_band_shares,
    filter_rms,
    smoothness_index,
)
from lightning_viz.diagnostics.learning_rate import dead_channel_fraction, linear_cka, rms_growth, update_ratio
from lightning_viz.diagnostics.quality import class_sensitivity, energy_pointing_game, pointing_game
from lightning_viz.diagnostics.stability import rank_correlation
from lightning_viz.diagnostics.stride import lattice_peak_ratio, shift_consistency, uneven_overlap

__all__ = [
    "BANDS",
    "band_energies",
    "class_sensitivity",
    "dead_channel_fraction",
    "dead_filters",
    "dominance",
    "dominant_band_shares",
    "energy_pointing_game",
    "filter_rms",
    "lattice_peak_ratio",
    "linear_cka",
    "pointing_game",
    "rank_correlation",
    "rms_growth",
    "shift_consistency",
    "smoothness_index",
    "uneven_overlap",
    "update_ratio",
]
