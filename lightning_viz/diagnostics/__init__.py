"""Diagnostics as pure functions: tensors -> numbers. No Lightning, no TensorBoard."""

from lightning_viz.diagnostics.stability import rank_correlation

__all__ = ["rank_correlation"]
