"""Lightning callbacks: thin configuration over the pure functions in ``methods`` and ``render``."""

from lightning_viz.callbacks._base import ProbeLogs, ProbeMonitor
from lightning_viz.callbacks.deconvnet import DeconvNetMonitor
from lightning_viz.callbacks.diagnostics import TrainingDiagnostics
from lightning_viz.callbacks.filters import FilterMonitor
from lightning_viz.callbacks.gradcam import GradCAMMonitor
from lightning_viz.callbacks.quality import ExplanationQualityMonitor

__all__ = [
    "DeconvNetMonitor",
    "ExplanationQualityMonitor",
    "FilterMonitor",
    "GradCAMMonitor",
    "ProbeLogs",
    "ProbeMonitor",
    "TrainingDiagnostics",
]
