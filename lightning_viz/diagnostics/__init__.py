"""Diagnostics as pure functions: tensors -> numbers. No Lightning, no TensorBoard."""

from lightning_viz.diagnostics.faithfulness import DeletionInsertion, deletion_insertion, noisy_linear_imputation
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
from lightning_viz.diagnostics.quality import (
    blank_maps,
    class_sensitivity,
    energy_pointing_game,
    map_stability,
    pointing_game,
    randomization_similarity,
)
from lightning_viz.diagnostics.stability import rank_correlation
from lightning_viz.diagnostics.stride import lattice_peak_ratio, shift_consistency, uneven_overlap

__all__ = [
    "BANDS",
    "DeletionInsertion",
    "band_energies",
    "blank_maps",
    "class_sensitivity",
    "dead_channel_fraction",
    "dead_filters",
    "deletion_insertion",
    "dominance",
    "dominant_band_shares",
    "energy_pointing_game",
    "filter_rms",
    "lattice_peak_ratio",
    "linear_cka",
    "map_stability",
    "noisy_linear_imputation",
    "pointing_game",
    "randomization_similarity",
    "rank_correlation",
    "rms_growth",
    "shift_consistency",
    "smoothness_index",
    "uneven_overlap",
    "update_ratio",
]
