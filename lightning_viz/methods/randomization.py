"""Re-initialised layers for the model-randomisation sanity check: Adebayo et al., "Sanity Checks for Saliency
Maps", NeurIPS 2018.

An explanation of what a model learned must change when what it learned is destroyed. The check re-initialises
the top layers (the first step of Adebayo's cascade, which goes down from the logits) and compares the maps
before and after. Methods that mostly reflect the input (edge detectors in disguise: guided backpropagation,
deconvnet) survive it; Grad-CAM does not.

The training model is never modified: :func:`reinitialized` returns a module that runs the model with fresh
tensors in place of the chosen layers' parameters (``torch.func.functional_call``), so the model's own tensors,
optimizer state and generators are untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lightning_viz.methods._hooks import forward_outputs
from lightning_viz.methods._layers import named_layers, resolve_layer

__all__ = ["parametrized_layers", "reinitialized"]


def _has_own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def parametrized_layers(model: nn.Module, images: Tensor) -> list[str]:
    """The modules holding parameters of their own, in the order a forward pass of ``images`` finishes them.

    Args:
        model: the network.
        images: a batch to trace the forward pass with, Tensor of shape (N, C, H, W).

    Returns:
        Dotted names, the layer nearest the input first and the classifier head last; modules the forward pass
        does not call are left out. A module called twice is placed by its first call.
    """
    named = [(n, m) for n, m in named_layers(model) if _has_own_parameters(m)]
    with forward_outputs(model, named) as order, torch.no_grad():
        model(images.clone())
    return list(dict.fromkeys(n for n, _, _ in order))


class _Reinitialized(nn.Module):
    """Runs ``model`` with some of its parameters and buffers replaced by other tensors."""

    def __init__(self, model: nn.Module, replaced: dict[str, Tensor]) -> None:
        super().__init__()
        self.model = model
        self.replaced = replaced

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.model, self.replaced, args, kwargs, strict=False)


def reinitialized(model: nn.Module, layers: Sequence[str | nn.Module], seed: int = 0) -> nn.Module:
    """A module that computes as ``model`` with the parameters and buffers of ``layers`` freshly initialised.

    Each layer is deep-copied on the CPU and re-initialised there by its modules' ``reset_parameters`` under a
    forked generator seeded with ``seed`` (a parameter no ``reset_parameters`` changed is drawn from a normal
    distribution with its own standard deviation). The copies' tensors are swapped in for each forward pass; the
    model's own tensors are never written, and the global generators are left as they were.

    Args:
        model: the network.
        layers: the layers to re-initialise, by dotted name or module.
        seed: seeds the new values.

    Returns:
        An ``nn.Module`` whose ``forward`` runs ``model`` with the new values. Hooks on ``model``'s submodules
        fire as usual, so the methods of this package work on it unchanged.
    """
    raw_names = {id(m): n for n, m in model.named_modules()}
    replaced: dict[str, Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in layers:
            _, module = resolve_layer(model, layer)
            prefix = raw_names[id(module)]
            fresh = copy.deepcopy(module).cpu()
            for sub in fresh.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
            originals: dict[str, Tensor] = {**dict(module.named_parameters()), **dict(module.named_buffers())}
            with torch.no_grad():
                for key, value in fresh.named_parameters():
                    before = originals[key].detach()
                    if torch.equal(value, before.cpu()):
                        value.normal_(0.0, float(before.float().std()) if before.numel() > 1 else 1.0)
            fresh_tensors: list[tuple[str, Tensor]] = [*fresh.named_parameters(), *fresh.named_buffers()]
            for key, tensor in fresh_tensors:
                original = originals[key]
                replaced[f"{prefix}.{key}"] = tensor.detach().to(original.device, original.dtype)
    return _Reinitialized(model, replaced)
