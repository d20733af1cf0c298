"""The monitors for the Lightning package the user chose: ``pytorch_lightning`` or ``lightning.pytorch``.

Lightning ships the same code under two names, and its ``Trainer`` and ``LightningCLI`` accept only callbacks that
subclass their own ``Callback``. The monitors are written once, on no Lightning base (``lightning_viz.callbacks``);
:func:`bind` makes each one a ``Callback`` of one package, importing that package only, and
``lightning_viz.pytorch_lightning`` and ``lightning_viz.lightning`` hold the bound classes.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["PACKAGES", "Namespace", "bind", "chosen", "namespace"]

# the Trainer's package -> the module that holds its bound monitors
PACKAGES = {"pytorch_lightning": "lightning_viz.pytorch_lightning", "lightning.pytorch": "lightning_viz.lightning"}
_FABRIC = {"pytorch_lightning": "lightning_fabric", "lightning.pytorch": "lightning.fabric"}


@dataclass(frozen=True)
class Namespace:
    """The classes a monitor needs from one Lightning package."""

    name: str
    Callback: Any
    Trainer: Any
    TensorBoardLogger: Any
    MisconfigurationException: Any


_namespaces: dict[str, Namespace] = {}
_bound: dict[tuple[type, str], type] = {}


def namespace(name: str) -> Namespace:
    """The classes of ``name`` (``"pytorch_lightning"`` or ``"lightning.pytorch"``), importing that package only."""
    if name not in _namespaces:
        if name not in PACKAGES:
            raise ValueError(f"unknown Lightning package {name!r}; expected one of {sorted(PACKAGES)}")
        package = importlib.import_module(name)
        _namespaces[name] = Namespace(
            name=name,
            Callback=importlib.import_module(f"{name}.callbacks").Callback,
            Trainer=package.Trainer,
            TensorBoardLogger=importlib.import_module(f"{name}.loggers").TensorBoardLogger,
            MisconfigurationException=importlib.import_module(
                f"{_FABRIC[name]}.utilities.exceptions"
            ).MisconfigurationException,
        )
    return _namespaces[name]


def chosen() -> str:
    """The package ``lightning_viz.GradCAMMonitor`` and its siblings bind to: ``lightning.pytorch`` when it is
    imported and ``pytorch_lightning`` is not, else ``pytorch_lightning``."""
    if "lightning.pytorch" in sys.modules and "pytorch_lightning" not in sys.modules:
        return "lightning.pytorch"
    return "pytorch_lightning"


def bind(monitor: type, name: str) -> type:
    """``monitor`` (a namespace-free monitor class) as a ``Callback`` of package ``name``; one class per pair.

    The class keeps the monitor's name and qualified name, so its ``state_key`` (and a checkpoint's callback state)
    is the same in both packages."""
    key = (monitor, name)
    if key not in _bound:
        ns = namespace(name)
        attributes: dict[str, Any] = {
            "_lightning": ns,
            "__module__": PACKAGES[name],
            "__qualname__": monitor.__qualname__,
            "__doc__": monitor.__doc__,
        }
        _bound[key] = type(monitor.__name__, (monitor, ns.Callback), attributes)
    return _bound[key]
