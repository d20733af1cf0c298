"""The monitors as ``pytorch_lightning`` callbacks (``from lightning_viz.pytorch_lightning import GradCAMMonitor``).

Importing this module imports ``pytorch_lightning`` and never ``lightning``."""

from lightning_viz import callbacks as _core
from lightning_viz._namespace import bind

__all__ = [
    "DeconvNetMonitor",
    "ExplanationQualityMonitor",
    "FilterMonitor",
    "GradCAMMonitor",
    "ProbeMonitor",
    "TrainingDiagnostics",
]

DeconvNetMonitor: type[_core.DeconvNetMonitor] = bind(_core.DeconvNetMonitor, "pytorch_lightning")
ExplanationQualityMonitor: type[_core.ExplanationQualityMonitor] = bind(
    _core.ExplanationQualityMonitor, "pytorch_lightning"
)
FilterMonitor: type[_core.FilterMonitor] = bind(_core.FilterMonitor, "pytorch_lightning")
GradCAMMonitor: type[_core.GradCAMMonitor] = bind(_core.GradCAMMonitor, "pytorch_lightning")
TrainingDiagnostics: type[_core.TrainingDiagnostics] = bind(_core.TrainingDiagnostics, "pytorch_lightning")
# the base of a custom monitor: subclass it and override needs() and compute()
ProbeMonitor: type[_core.ProbeMonitor] = bind(_core.ProbeMonitor, "pytorch_lightning")
