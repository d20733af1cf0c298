"""The public API, the layering rule and the packaging files."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning_viz

PACKAGE = Path(lightning_viz.__file__).parent


def test_public_api_is_locked() -> None:
    assert lightning_viz.__all__ == [
        "DeconvNetMonitor",
        "ExplanationQualityMonitor",
        "FilterMonitor",
        "GradCAMMonitor",
        "ProbeBatch",
        "TrainingDiagnostics",
    ]
    for name in lightning_viz.__all__:
        assert getattr(lightning_viz, name).__module__.startswith("lightning_viz.")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_methods_and_data_are_pure_torch() -> None:
    """methods/, diagnostics/, the shared probe step (probing/) and data never import Lightning, TensorBoard or
    matplotlib: usable in a notebook on any nn.Module."""
    files = [
        *PACKAGE.glob("methods/*.py"),
        *PACKAGE.glob("diagnostics/*.py"),
        *PACKAGE.glob("probing/*.py"),
        PACKAGE / "data.py",
    ]
    assert len(files) >= 4
    for path in files:
        forbidden = _imports(path) & {
            "pytorch_lightning",
            "lightning",
            "lightning_fabric",
            "tensorboard",
            "matplotlib",
            "tensorboardX",
        }
        assert not forbidden, f"{path.name} imports {forbidden}"


def test_typed_marker_is_shipped() -> None:
    assert (PACKAGE / "py.typed").exists()
