"""lightning_viz: training-time visualization and diagnostics of convolutional networks for PyTorch Lightning.

The monitors are Lightning callbacks of the package you train with: ``lightning_viz.GradCAMMonitor`` and its
siblings are ``lightning.pytorch`` callbacks when ``lightning.pytorch`` is imported and ``pytorch_lightning`` is
not, and ``pytorch_lightning`` callbacks otherwise; ``lightning_viz.lightning`` and ``lightning_viz.pytorch_lightning``
name one package explicitly. Only the chosen package is imported, when a monitor is first looked up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_viz.probe import ProbeBatch

if TYPE_CHECKING:
    from lightning_viz.pytorch_lightning import (
        DeconvNetMonitor,
        ExplanationQualityMonitor,
        FilterMonitor,
        GradCAMMonitor,
        TrainingDiagnostics,
    )

__all__ = [
    "DeconvNetMonitor",
    "ExplanationQualityMonitor",
    "FilterMonitor",
    "GradCAMMonitor",
    "ProbeBatch",
    "TrainingDiagnostics",
]
__version__ = "0.1.0"

_MONITORS = {"DeconvNetMonitor", "ExplanationQualityMonitor", "FilterMonitor", "GradCAMMonitor", "TrainingDiagnostics"}


def __getattr__(name: str) -> Any:
    if name in _MONITORS:
        from lightning_viz._namespace import PACKAGES, chosen

        return getattr(importlib.import_module(PACKAGES[chosen()]), name)
    raise AttributeError(f"module 'lightning_viz' has no attribute {name!r}")
