"""Diagnostics as pure functions: tensors -> numbers. No Lightning, no TensorBoard."""

from lightning_viz.diagnostics.faithfulness import DeletionInsertion, deletion_insertion, noisy_linear_imputation
from lightning_viz.diagnostics.kernel import (
    BANDS,
    band_energies,
    coverage_gap,
    dead_filters,
    dominance,
    dominant_band_shares,
    energy_window,
    filter_rms,
    rim_share,
    smoothness_index,
)
from lightning_viz.diagnostics.learning_rate import (
    LossHistory,
    dead_channel_fraction,
    linear_cka,
    nonfinite_parameters,
    rms_growth,
    update_ratio,
)
from lightning_viz.diagnostics.quality import (
    blank_maps,
    class_sensitivity,
    energy_pointing_game,
    map_stability,
    pointing_game,
    randomization_similarity,
)
from lightning_viz.diagnostics.stability import rank_correlation
from lightning_viz.diagnostics.stride import (
    alias_fraction,
    alias_fractions,
    lattice_peak_ratio,
    shift_consistency,
    uneven_overlap,
)

__all__ = [
    "BANDS",
    "DeletionInsertion",
    "LossHistory",
    "alias_fraction",
    "alias_fractions",
    "band_energies",
    "blank_maps",
    "class_sensitivity",
    "coverage_gap",
    "dead_channel_fraction",
    "dead_filters",
    "deletion_insertion",
    "dominance",
    "dominant_band_shares",
    "energy_pointing_game",
    "energy_window",
    "filter_rms",
    "lattice_peak_ratio",
    "linear_cka",
    "map_stability",
    "noisy_linear_imputation",
    "nonfinite_parameters",
    "pointing_game",
    "randomization_similarity",
    "rank_correlation",
    "rim_share",
    "rms_growth",
    "shift_consistency",
    "smoothness_index",
    "uneven_overlap",
    "update_ratio",
]
