"""Visualization methods as pure functions on any ``nn.Module``: no Lightning, no TensorBoard."""

from lightning_viz.methods._hooks import capture_outputs, forward_until
from lightning_viz.methods._isolation import isolated, rng_state, set_rng_state
from lightning_viz.methods._layers import conv_layer_names, default_cam_layer, named_layers, resolve_layer, stage_layers
from lightning_viz.methods._outputs import OutputSpec, as_classifier, describe_output, select_logits, suggest_output
from lightning_viz.methods._relu_rules import RULES, Rule, RuleSwitch, relu_rule, switchable_relu
from lightning_viz.methods.activation_max import (
    IMAGENET_COLOUR_SQRT,
    ActivationMaxConfig,
    colour_matrix,
    fourier_images,
    maximize_channels,
)
from lightning_viz.methods.deconvnet import (
    TopUnits,
    deconvnet,
    project_units,
    receptive_fields,
    top_images,
    top_k_units,
)
from lightning_viz.methods.grad_cam import cam_from, grad_cam, grad_cam_maps, normalize_maps
from lightning_viz.methods.randomization import parametrized_layers, reinitialized

__all__ = [
    "IMAGENET_COLOUR_SQRT",
    "RULES",
    "ActivationMaxConfig",
    "OutputSpec",
    "Rule",
    "RuleSwitch",
    "TopUnits",
    "as_classifier",
    "cam_from",
    "capture_outputs",
    "colour_matrix",
    "conv_layer_names",
    "deconvnet",
    "default_cam_layer",
    "describe_output",
    "forward_until",
    "fourier_images",
    "grad_cam",
    "grad_cam_maps",
    "isolated",
    "maximize_channels",
    "named_layers",
    "normalize_maps",
    "parametrized_layers",
    "project_units",
    "receptive_fields",
    "reinitialized",
    "relu_rule",
    "resolve_layer",
    "rng_state",
    "select_logits",
    "set_rng_state",
    "stage_layers",
    "suggest_output",
    "switchable_relu",
    "top_images",
    "top_k_units",
]
