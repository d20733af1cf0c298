"""What a monitor gives the suite and gets from it: what it needs from the shared forward pass, its expensive parts,
and what one probe logs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lightning_viz.callbacks._writer import Image
from lightning_viz.probing import ProbeContext

__all__ = ["Image", "Needs", "Part", "ProbeLogs"]


@dataclass
class ProbeLogs:
    """What one probe logs, keyed by tag: images ((H, W, 3) uint8 arrays, or functions that draw one on the writer
    thread, holding copies, never tensors training will change), scalars and markdown text."""

    images: dict[str, Image] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def update(self, other: ProbeLogs) -> None:
        self.images.update(other.images)
        self.scalars.update(other.scalars)
        self.texts.update(other.texts)


@dataclass(frozen=True)
class Needs:
    """What a monitor reads from the shared forward pass: layer outputs, layer inputs, and whether it takes
    gradients through it (Grad-CAM, class-score projections)."""

    layers: Sequence[str] = ()
    inputs_of: Sequence[str] = ()
    gradients: bool = False


@dataclass(frozen=True)
class Part:
    """An expensive part of a monitor, with a rarer cadence than its regular probes.

    Attributes:
        name: its name in the ``viz/*`` tags (``activation_max``).
        every: its cadence in optimizer steps (the budget may stretch it; it also runs at the final probe where the
            budget allows, and never at step 0).
        passes: its cost before it first ran, in forward passes of the probe batch (a backward pass counts two).
        compute: what it logs, from the step's context and the step.
    """

    name: str
    every: int
    passes: float
    compute: Callable[[ProbeContext, int], ProbeLogs]
