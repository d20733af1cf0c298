"""Visualization methods as pure functions on any ``nn.Module``: no Lightning, no TensorBoard."""

from lightning_viz.methods._isolation import isolated
from lightning_viz.methods._layers import conv_layer_names, default_cam_layer, resolve_layer
from lightning_viz.methods.grad_cam import grad_cam, grad_cam_maps, normalize_maps

__all__ = [
    "conv_layer_names",
    "default_cam_layer",
    "grad_cam",
    "grad_cam_maps",
    "isolated",
    "normalize_maps",
    "resolve_layer",
]
