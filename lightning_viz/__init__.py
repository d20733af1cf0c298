"""lightning_viz: training-time visualization and diagnostics of convolutional networks for PyTorch Lightning."""

from lightning_viz.callbacks import (
    DeconvNetMonitor,
    ExplanationQualityMonitor,
    FilterMonitor,
    GradCAMMonitor,
    TrainingDiagnostics,
)
from lightning_viz.probe import ProbeBatch

__all__ = [
    "DeconvNetMonitor",
    "ExplanationQualityMonitor",
    "FilterMonitor",
    "GradCAMMonitor",
    "ProbeBatch",
    "TrainingDiagnostics",
]
__version__ = "0.1.0"
