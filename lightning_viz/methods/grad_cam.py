"""Grad-CAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017.

For a layer with activations A (channels k) and a class score y_c, the weights are the spatially averaged
gradients a_k = mean_ij dy_c/dA_kij and the map is ReLU(sum_k a_k A_k), upsampled to the input and min-max
normalised per image. For a conv -> global-average-pool -> linear network this equals CAM (Zhou et al., CVPR 2016)
up to a positive factor, which the normalisation removes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_viz.methods._hooks import capture_outputs
from lightning_viz.methods._layers import resolve_layer

__all__ = ["cam_from", "grad_cam", "grad_cam_maps", "normalize_maps"]


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each map of a (N, H, W) tensor to [0, 1] (a constant map becomes zeros), as a new tensor."""
    flat = maps.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    span = (flat.max(dim=1).values[:, None, None] - low).clamp_min(torch.finfo(maps.dtype).tiny)
    return ((maps - low) / span).clamp(0.0, 1.0)


def cam_from(activation: Tensor, gradient: Tensor, size: Sequence[int]) -> Tensor:
    """Grad-CAM maps from a layer's activations and the gradient of the class score with respect to them.

    Args:
        activation: Tensor of shape (N, C, h, w), the layer's output.
        gradient: Tensor of the same shape, d(class score)/d(activation).
        size: the (H, W) of the maps, usually the input images'.

    Returns:
        Tensor of shape (N, H, W), values in [0, 1], float32 whatever the inputs' dtype.

    Raises:
        ValueError: if ``activation`` is not 4-D or ``gradient`` has another shape.
    """
    if activation.dim() != 4 or gradient.shape != activation.shape:
        raise ValueError(
            "cam_from needs an activation and a gradient of one shape (N, C, H, W), "
            f"got {tuple(activation.shape)} and {tuple(gradient.shape)}"
        )
    weights = gradient.detach().float().mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation.detach().float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)
    return normalize_maps(cam[:, 0])


def _as_targets(target: int | Tensor | None, logits: Tensor) -> Tensor:
    n = logits.shape[0]
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=logits.device)
    if not isinstance(target, Tensor) or target.shape != (n,):
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"target must be None, an int or a tensor of shape ({n},), got {shape}")
    return target.to(device=logits.device, dtype=torch.long)


def grad_cam_maps(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str | nn.Module],
    targets: Sequence[int | Tensor | None] = (None,),
) -> tuple[Tensor, dict[str, list[Tensor]]]:
    """Grad-CAM maps for several layers and several targets from one forward pass.

    Gradients come from ``torch.autograd.grad`` with respect to the captured activations, so no parameter's
    ``.grad`` is written. The model is used as it is: put it in eval mode first if that is what you want.

    Args:
        model: a classifier whose ``forward(images)`` returns logits of shape (N, num_classes).
        images: Tensor of shape (N, C, H, W).
        layers: layers given by dotted name or module, each with a 4-D output.
        targets: one entry per wanted map: None for the predicted class, an int, or a tensor of shape (N,).

    Returns:
        The logits (detached) and, for each layer name, one Tensor of shape (N, H, W) with values in [0, 1] per
        target, in the order of ``targets``.

    Raises:
        ValueError: if the output is not (N, num_classes) logits, a layer's output is not 4-D, or a target is bad.
    """
    resolved = dict(resolve_layer(model, layer) for layer in layers)
    inputs = images.detach().clone().requires_grad_(True)  # a path to every activation, even with frozen layers
    with capture_outputs(resolved) as acts:
        logits = model(inputs.clone())  # a non-leaf copy: a forward pass may modify its input in place
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != images.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (N, num_classes) for N={images.shape[0]}, got {got}")
    for name in resolved:
        if name not in acts or acts[name].dim() != 4:
            got = tuple(acts[name].shape) if name in acts else "no call"
            raise ValueError(f"Grad-CAM needs a 4-D (N, C, H, W) output from layer {name!r}, got {got}")
    names = list(resolved)
    maps: dict[str, list[Tensor]] = {name: [] for name in names}
    for i, target in enumerate(targets):
        classes = _as_targets(target, logits)
        score = logits.gather(1, classes[:, None]).sum()
        grads = torch.autograd.grad(score, [acts[n] for n in names], retain_graph=i < len(targets) - 1)
        for name, grad in zip(names, grads, strict=True):
            maps[name].append(cam_from(acts[name], grad, images.shape[-2:]))
    return logits.detach(), maps


def grad_cam(model: nn.Module, images: Tensor, layer: str | nn.Module, target: int | Tensor | None = None) -> Tensor:
    """Grad-CAM maps of one layer for one target class.

    Args:
        model: a classifier whose ``forward(images)`` returns logits of shape (N, num_classes).
        images: Tensor of shape (N, C, H, W).
        layer: the layer, by dotted name (``"layer4"``, ``"features.10"``) or module.
        target: None for each image's predicted class, an int for one class, or a tensor of shape (N,).

    Returns:
        Tensor of shape (N, H, W) at the input resolution, values in [0, 1].

    Raises:
        ValueError: for an unknown layer (with close matches), a non-4-D layer output, or a bad target.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(weights=None).eval()
        >>> grad_cam(model, torch.randn(2, 3, 64, 64), "layer4").shape
        torch.Size([2, 64, 64])
    """
    _, maps = grad_cam_maps(model, images, [layer], [target])
    return next(iter(maps.values()))[0]
