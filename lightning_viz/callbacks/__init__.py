"""The monitors, written once on no Lightning base: thin configuration over the pure functions in ``methods`` and
``render``. Use them as callbacks through ``lightning_viz`` (or ``lightning_viz.lightning`` /
``lightning_viz.pytorch_lightning``), which binds each to the Lightning package you train with."""

from lightning_viz.callbacks._base import Needs, Part, ProbeLogs, ProbeMonitor
from lightning_viz.callbacks._suite import tensorboard_command
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
    "Needs",
    "Part",
    "ProbeLogs",
    "ProbeMonitor",
    "TrainingDiagnostics",
    "tensorboard_command",
]
