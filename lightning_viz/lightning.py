"""The monitors as ``lightning.pytorch`` callbacks (``from lightning_viz.lightning import GradCAMMonitor``).

Importing this module imports ``lightning.pytorch`` and never ``pytorch_lightning``."""

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

DeconvNetMonitor: type[_core.DeconvNetMonitor] = bind(_core.DeconvNetMonitor, "lightning.pytorch")
ExplanationQualityMonitor: type[_core.ExplanationQualityMonitor] = bind(
    _core.ExplanationQualityMonitor, "lightning.pytorch"
)
FilterMonitor: type[_core.FilterMonitor] = bind(_core.FilterMonitor, "lightning.pytorch")
GradCAMMonitor: type[_core.GradCAMMonitor] = bind(_core.GradCAMMonitor, "lightning.pytorch")
TrainingDiagnostics: type[_core.TrainingDiagnostics] = bind(_core.TrainingDiagnostics, "lightning.pytorch")
# the base of a custom monitor: subclass it and override needs() and compute()
ProbeMonitor: type[_core.ProbeMonitor] = bind(_core.ProbeMonitor, "lightning.pytorch")
