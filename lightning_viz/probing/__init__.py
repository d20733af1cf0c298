"""The shared probe step: one probe batch, one forward pass and the caches every monitor of a step reads.

Between the pure ``methods``/``diagnostics`` below and the Lightning glue in ``callbacks`` above; no Lightning and
no TensorBoard here either.
"""

from lightning_viz.probing.context import ProbeContext, Target
from lightning_viz.probing.schedule import stretch

__all__ = ["ProbeContext", "Target", "stretch"]
