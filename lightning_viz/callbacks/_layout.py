"""TensorBoard's Custom Scalars layout of the monitors: one group per question, one chart per number."""

from __future__ import annotations

__all__ = ["CUSTOM_SCALARS_LAYOUT"]

# TensorBoard's Custom Scalars tab: one group per question, one chart per number (tags are regular expressions that
# TensorBoard matches at the start of a tag). A chart whose number decides a verdict or a warning draws the line that
# decides it (a ``threshold/...`` series, or the series it is compared with) and its title says which side fails; a
# chart whose number decides nothing says "no verdict". Numbers whose range spans decades are drawn as their log10.
# TensorBoard smooths every series that is not constant (0.6 by default, in each dashboard's sidebar): read the
# verdicts at smoothing 0. The suite renames the groups and tags of a second instance (``_suite.layout_for``).
CUSTOM_SCALARS_LAYOUT = {
    "kernel size": {
        "verdict: -1 too small, 0 ok, 1 larger than it uses (read at smoothing 0)": [
            "Multiline",
            [r"verdict/kernel_size"],
        ],
        "log10 learned share of the filters (below the line: kernel and stride verdicts wait)": [
            "Multiline",
            [r"diagnostics/log10_learned_share/", r"threshold/log10_min_learned"],
        ],
        "window holding most of the learned energy (below the kernel's line: larger than it uses)": [
            "Multiline",
            [r"diagnostics/energy_window/", r"diagnostics/kernel_size/"],
        ],
        "share of pixels no window covers (above the line: too small)": [
            "Multiline",
            [r"diagnostics/coverage_gap/", r"threshold/coverage_gap"],
        ],
        "rim energy of the filters and of their learned part (no verdict; 1: an even spread)": [
            "Multiline",
            [r"diagnostics/(learned_)?rim_share/"],
        ],
        "band energy shares (no verdict)": ["Multiline", [r"diagnostics/band_(low|mid|high)/"]],
        "smoothness index (no verdict; 0: noise, as at init)": ["Multiline", [r"diagnostics/smoothness/"]],
        "dead filters, dominance (no verdict)": ["Multiline", [r"diagnostics/(dead_filters|dominance)/"]],
    },
    "stride": {
        "verdict: 0 ok, 1 aliasing (read at smoothing 0)": ["Multiline", [r"verdict/stride"]],
        "alias fraction (above the line: aliasing)": [
            "Multiline",
            [r"diagnostics/alias_fraction/", r"threshold/alias_fraction"],
        ],
        "deepest feature map side (at or below the line: no stride verdict)": [
            "Multiline",
            [r"diagnostics/map_size/", r"threshold/coarse_map"],
        ],
        "alias fraction of the learned part of the filters (no verdict)": [
            "Multiline",
            [r"diagnostics/learned_alias_fraction/"],
        ],
        "shift consistency, TVD (no verdict; lower: steadier under shifts)": ["Multiline", [r"diagnostics/shift_tvd/"]],
        "lattice-peak ratio, a log10 power ratio (no verdict)": ["Multiline", [r"diagnostics/lattice_peak_ratio/"]],
        "uneven overlap (no verdict; 1: even)": ["Multiline", [r"diagnostics/uneven_overlap/"]],
    },
    "learning rate": {
        "verdict: -1 too low, 0 ok, 1 too high (read at smoothing 0)": ["Multiline", [r"verdict/learning_rate"]],
        "training loss progress since the first batch (above the top line: ok; below the middle: stalled; below the "
        "bottom: too high) and over the last 200 steps (below the stalled_now line: flat now)": [
            "Multiline",
            [r"diagnostics/loss_(recent_)?progress", r"threshold/(progress_ok|stalled_(progress|now)|risen_progress)"],
        ],
        "log10 representation change since the first probe and over the recent probes (below the line with the loss "
        "stalled: too low)": [
            "Multiline",
            [r"diagnostics/log10_(recent_)?change/", r"threshold/log10_change_low"],
        ],
        "training loss now over its best, as a share of the best and of the first batch's (above both lines: too "
        "high now)": [
            "Multiline",
            [r"diagnostics/loss_rise", r"threshold/rise_(now|floor)"],
        ],
        "learning rate of each parameter group (no verdict; the verdicts name it)": ["Multiline", [r"diagnostics/lr/"]],
        "largest training loss over the first (above the line with the loss not falling: too high)": [
            "Multiline",
            [r"diagnostics/loss_spike", r"threshold/spike"],
        ],
        "dead channels (deepest stage above the line with the loss not falling: too high)": [
            "Multiline",
            [r"diagnostics/dead_channels/", r"threshold/dead_channels"],
        ],
        "log10 update / weight ratio (no verdict; the line: 1e-3, a rule of thumb)": [
            "Multiline",
            [r"diagnostics/log10_update_ratio/", r"reference/log10_update_ratio"],
        ],
        "first-layer RMS growth (no verdict; 1: as at init)": ["Multiline", [r"diagnostics/rms_growth/"]],
        "CKA with the previous probe (no verdict; 1: unchanged)": ["Multiline", [r"diagnostics/cka_previous/"]],
    },
    "explanation quality": {
        "pointing game (at or below the chance line: warning)": [
            "Multiline",
            [r"quality/[^/]+/(energy_)?pointing_game(_chance)?$"],
        ],
        "deletion and insertion AUC (deletion at or above the insertion line: warning)": [
            "Multiline",
            [r"quality/[^/]+/(deletion|insertion)_auc$"],
        ],
        "class sensitivity (above the line: the maps ignore the class)": [
            "Multiline",
            [r"quality/[^/]+/class_sensitivity$"],
        ],
        "randomisation check (above the line: the maps survive re-initialisation)": [
            "Multiline",
            [r"quality/[^/]+/randomization$"],
        ],
        "blank maps (above the line: warning)": ["Multiline", [r"quality/[^/]+/blank_maps$"]],
        "stability between probes (no warning; 1: the same maps)": ["Multiline", [r"quality/[^/]+/stability$"]],
    },
}
