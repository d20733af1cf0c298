"""Deconvnet projections: Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014.

A unit's activation is projected back to pixel space by a backward pass in which max-pooling routes the signal
through the forward pass's switches (autograd's max-pool backward), convolutions apply the transposed filters
(autograd's convolution backward) and every ReLU follows a rule (see :mod:`._relu_rules`): ``"deconvnet"``
rectifies the signal, ``"guided"`` (Springenberg et al. 2015) also masks it by the forward pass, ``"gradient"`` is
the plain gradient. Without ReLUs the three are the same.

Top-k projections (ZF Fig. 2): rank a layer's channels by their maximum activation over a batch, keep for each of
the ``k`` strongest its maximum (image, position), and project that single activation, all ``k`` in one batched
forward and backward pass, one image per unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_viz.methods._hooks import forward_until
from lightning_viz.methods._layers import resolve_layer
from lightning_viz.methods._relu_rules import Rule, linearized, relu_rule

__all__ = ["TopUnits", "deconvnet", "project_units", "receptive_fields", "top_images", "top_k_units"]


@dataclass(frozen=True)
class TopUnits:
    """The strongest unit of each of a layer's top channels: rows of ``(image, channel, y, x)`` and the
    activation there, strongest first."""

    index: Tensor  # (k, 4) long: image, channel, y, x
    value: Tensor  # (k,)


def top_k_units(activations: Tensor, k: int) -> TopUnits:
    """The ``k`` channels with the largest maximum activation over a batch, each at its maximum.

    Args:
        activations: Tensor of shape (N, C, H, W).
        k: number of channels (fewer if the layer has fewer).

    Returns:
        :class:`TopUnits` with ``index`` of shape (k, 4) as (image, channel, y, x).
    """
    if activations.dim() != 4:
        raise ValueError(f"activations must have shape (N, C, H, W), got {tuple(activations.shape)}")
    _, c, h, w = activations.shape
    per_channel = activations.detach().transpose(0, 1).reshape(c, -1)
    best, where = per_channel.max(dim=1)
    value, channel = best.topk(min(k, c))
    flat = where[channel]
    image, rest = flat // (h * w), flat % (h * w)
    index = torch.stack([image, channel, rest // w, rest % w], dim=1)
    return TopUnits(index=index, value=value)


def top_images(activations: Tensor, channel: int, count: int) -> Tensor:
    """The ``count`` probe images where ``channel`` peaks highest, each at its own peak (ZF Fig. 2's "top 9
    activations", one per image so that nine patches show nine different inputs), strongest first; images where
    the channel is silent are left out. Returns rows of (image, channel, y, x), Tensor of shape (<= count, 4)."""
    maps = activations[:, channel].detach()
    peak, where = maps.flatten(1).max(dim=1)
    order = peak.argsort(descending=True, stable=True)[:count]
    keep = peak[order] != 0
    keep[0] = True
    order = order[keep]
    width = maps.shape[-1]
    rows = [order, torch.full_like(order, channel), where[order] // width, where[order] % width]
    return torch.stack(rows, dim=1).cpu()


def project_units(
    model: nn.Module,
    images: Tensor,
    units: Mapping[str, tuple[Tensor, Tensor]],
    rule: Rule = "deconvnet",
) -> Tensor:
    """Project single units back to pixel space, several layers in one forward and one backward pass.

    Each image of the batch carries at most one unit: ``units[layer] = (rows, cyx)`` says that image ``rows[i]``
    projects unit ``cyx[i] = (channel, y, x)`` of ``layer``. The forward pass stops at the deepest layer.
    Gradients come from ``torch.autograd.grad``; no parameter ``.grad`` is written.

    Args:
        model: the network; its ``forward(images)`` is run once, up to the deepest of the layers.
        images: Tensor of shape (B, C, H, W), one image per unit (repeat an image to project two of its units).
        units: layer name -> (rows (M,), channel/y/x (M, 3)), long tensors.
        rule: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.

    Returns:
        Tensor of shape (B, C, H, W): the projections; rows that carry no unit are zero.
    """
    layers = dict(resolve_layer(model, name) for name in units)
    inputs = images.detach().clone().requires_grad_(True)
    with relu_rule(rule):  # a non-leaf copy goes in: a forward pass may modify its input in place
        acts = forward_until(model, inputs.clone(), layers)  # nothing after the deepest layer is computed
    outputs, seeds = [], []
    for name, (rows, cyx) in units.items():
        act = acts[name]
        seed = torch.zeros_like(act)
        seed[rows.to(act.device), cyx[:, 0], cyx[:, 1], cyx[:, 2]] = 1.0
        outputs.append(act)
        seeds.append(seed)
    (grad,) = torch.autograd.grad(outputs, [inputs], grad_outputs=seeds, allow_unused=True)
    return torch.zeros_like(inputs) if grad is None else grad.detach()


def deconvnet(
    model: nn.Module,
    images: Tensor,
    layer: str | nn.Module | None = None,
    unit: int | tuple[int, int, int] | Tensor | None = None,
    target: int | Tensor | None = None,
    rule: Rule = "deconvnet",
) -> Tensor:
    """Project a class score or one unit per image back to pixel space.

    Args:
        model: a network; with ``layer=None`` its ``forward(images)`` must return logits (N, num_classes).
        images: Tensor of shape (N, C, H, W).
        layer: None to project the class score ``target`` (as captum's ``Deconvolution``), else the layer whose
            unit is projected, by dotted name or module.
        unit: with a layer: a channel (projected from its strongest position in each image), a
            ``(channel, y, x)`` for every image, or a long tensor of shape (N, 3) with one per image.
        target: with ``layer=None``: None for the predicted class, an int, or a tensor of shape (N,).
        rule: ``"deconvnet"`` (Zeiler & Fergus), ``"guided"`` (guided backpropagation) or ``"gradient"``.

    Returns:
        Tensor of shape (N, C, H, W), the projection in input space (signed, unnormalised).

    Raises:
        ValueError: for an unknown layer or rule, or a unit that does not fit the layer.

    Example::

        >>> import torchvision
        >>> model = torchvision.models.vgg11(weights=None).eval()
        >>> deconvnet(model, torch.randn(2, 3, 64, 64), "features.8", unit=5).shape
        torch.Size([2, 3, 64, 64])
    """
    n = images.shape[0]
    if layer is None:
        inputs = images.detach().clone().requires_grad_(True)
        with relu_rule(rule):
            logits = model(inputs.clone())
        if target is None:
            target = logits.argmax(dim=1)
        classes = torch.as_tensor(target, device=logits.device).expand(n) if not isinstance(target, Tensor) else target
        score = logits.gather(1, classes.view(-1, 1).to(logits.device)).sum()
        (grad,) = torch.autograd.grad(score, [inputs])
        return grad.detach()
    name, module = resolve_layer(model, layer)
    if unit is None:
        raise ValueError("give the unit to project: a channel, a (channel, y, x) tuple or an (N, 3) tensor")
    if isinstance(unit, int):
        with torch.no_grad():
            act = forward_until(model, images, {name: module})[name][:, unit]
        flat = act.flatten(1).argmax(dim=1)
        w = act.shape[-1]
        cyx = torch.stack([torch.full_like(flat, unit), flat // w, flat % w], dim=1)
    elif isinstance(unit, tuple):
        cyx = torch.tensor(unit, dtype=torch.long).expand(n, 3)
    else:
        cyx = unit.long()
    if cyx.shape != (n, 3):
        raise ValueError(f"unit must give (channel, y, x) for each of the {n} images, got shape {tuple(cyx.shape)}")
    return project_units(model, images, {name: (torch.arange(n), cyx.cpu())}, rule)


def receptive_fields(model: nn.Module, image_shape: tuple[int, ...], layer: str, yx: Tensor) -> Tensor:
    """The input region each unit of ``layer`` at positions ``yx`` can see, traced through the network.

    The support of the unit's gradient in the :class:`~._relu_rules.linearized` network (positive weights,
    average instead of max pooling, identity ReLU and BatchNorm), so padding, strides, dilation, pooling and
    residual branches are all accounted for, and any projection of the unit is zero outside it.

    Args:
        model: the network.
        image_shape: (C, H, W) of the input.
        layer: the layer's dotted name.
        yx: long tensor of shape (M, 2): positions in the layer's output.

    Returns:
        Long tensor of shape (M, 4): ``(y0, y1, x0, x1)``, rows ``y0:y1`` and columns ``x0:x1`` of the input,
        clipped to the image.
    """
    name, module = resolve_layer(model, layer)
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    inputs = torch.zeros(len(yx), *image_shape, dtype=dtype, device=device, requires_grad=True)
    with linearized():
        act = forward_until(model, inputs.clone(), {name: module})[name]
    seed = torch.zeros_like(act)
    seed[torch.arange(len(yx)), :, yx[:, 0], yx[:, 1]] = 1.0
    (grad,) = torch.autograd.grad(act, [inputs], grad_outputs=seed)
    support = grad.abs().sum(dim=1) > 0
    rows, cols = support.any(dim=2), support.any(dim=1)
    boxes = []
    height, width = image_shape[-2:]
    for r, c in zip(rows, cols, strict=True):
        ys, xs = r.nonzero()[:, 0], c.nonzero()[:, 0]
        if len(ys) == 0 or len(xs) == 0:  # an op the linearization does not know cut every path: the whole image
            boxes.append([0, int(height), 0, int(width)])
        else:
            boxes.append([int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1])
    return torch.tensor(boxes, dtype=torch.long)
