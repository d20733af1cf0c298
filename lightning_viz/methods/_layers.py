"""Finding layers by name, and choosing sensible default layers.

Names are the dotted paths of ``model.named_modules()`` (``"features.3"``, ``"layer4.1"``). The prefixes that
``torch.compile`` adds (``_orig_mod.``) are optional, so a name written for the plain model also finds the layer
in a model that holds compiled submodules.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from lightning_viz.methods._hooks import forward_outputs

__all__ = ["conv_layer_names", "default_cam_layer", "named_layers", "resolve_layer", "stage_layers"]


# Pooling halves the resolution Grad-CAM can show (and VGG's AdaptiveAvgPool2d(7) at a 64 px input blows a 2x2
# map up to 7x7), so the map is taken before it; Dropout and Identity outputs are not feature maps of their own.
_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d, nn.FractionalMaxPool2d)
_NOT_FEATURE_MAPS = (*_POOLING, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten)


def _clean(name: str) -> str:
    return ".".join(part for part in name.split(".") if part != "_orig_mod")


def named_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(name, module)`` for every submodule, with wrapper prefixes removed from the names.

    Args:
        model: any module.

    Yields:
        The clean dotted name and the module, in registration order, the root excluded.
    """
    seen: set[int] = set()
    for name, module in model.named_modules():
        clean = _clean(name)
        if not clean or id(module) in seen:
            continue
        seen.add(id(module))
        yield clean, module


def conv_layer_names(model: nn.Module) -> list[str]:
    """Return the names of all 2-D convolution layers of ``model``, in registration order."""
    return [name for name, module in named_layers(model) if isinstance(module, nn.Conv2d)]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` for a layer given by dotted name or by module.

    Args:
        model: the model that holds the layer.
        layer: a dotted name such as ``"features.3"`` or ``"layer4.1"``, or a submodule of ``model``.

    Returns:
        The clean dotted name and the module.

    Raises:
        ValueError: if no such layer exists; the message lists the closest names and the convolution layers.
        TypeError: if ``layer`` is neither a string nor a module.
    """
    layers = dict(named_layers(model))
    if isinstance(layer, nn.Module):
        for name, module in layers.items():
            if module is layer:
                return name, module
        raise ValueError(f"the module {type(layer).__name__} given as layer is not a submodule of the model")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a dotted name or an nn.Module, got {type(layer).__name__}")
    clean = _clean(layer)
    if clean in layers:
        return clean, layers[clean]
    close = difflib.get_close_matches(clean, list(layers), n=5, cutoff=0.5)
    convs = conv_layer_names(model)
    raise ValueError(
        f"unknown layer {layer!r}. Close matches: {close or 'none'}. "
        f"Convolution layers of this model: {convs or 'none'}."
    )


def _image_grid(size: Sequence[int], image: Sequence[int]) -> bool:
    """Whether the last two dimensions of a 4-D output, ``size``, can be the grid of a feature map of an input of
    ``image`` (H, W): they keep the input's aspect, give or take what padding and rounding change. A channels-last
    tensor inside a block (ConvNeXt's and Swin's ``(N, H, W, C)`` between their permutes) reads as (W, C) and does
    not; taken for a feature map, its channels were traced as thousands of positions."""
    (h, w), (height, width) = size, image
    return abs(h - w * height / width) <= max(2.0, 0.15 * h)


def _feature_maps(model: nn.Module, images: Tensor) -> list[tuple[str, tuple[int, int]]]:
    """``(name, (H, W))`` of every module whose output is a convolutional feature map, in the order the calls
    finish: 4-D outputs with more than one position on a grid of the input's aspect (not channels-last), after the
    first convolution, skipping pooling layers, blocks whose output is a pooling layer's output, Dropout and Identity,
    and modules called more than once (a ReLU a block reuses has no single output to show)."""
    return _feature_maps_and_grids(model, images)[0]


def _feature_maps_and_grids(
    model: nn.Module, images: Tensor
) -> tuple[list[tuple[str, tuple[int, int]]], dict[str, tuple[int, int]]]:
    """:func:`_feature_maps`, and the grid (H, W) of every module whose output is 4-D on the input's grid."""
    if not conv_layer_names(model):
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer: lightning_viz needs a convolutional network")
    named = list(named_layers(model))
    with torch.no_grad(), forward_outputs(model, named) as order:
        model(images.clone())  # a copy: a forward pass may modify its input in place
    maps: list[tuple[str, tuple[int, int]]] = []
    grids: dict[str, tuple[int, int]] = {}
    conv_seen = False
    pooled: set[int] = set()  # ids of pooling outputs; `order` keeps the tensors alive, so ids stay unique
    for name, module, output in order:
        conv_seen = conv_seen or isinstance(module, nn.Conv2d)
        if isinstance(module, _POOLING):
            pooled.add(id(output))
        if not (isinstance(output, Tensor) and output.dim() == 4 and _image_grid(output.shape[-2:], images.shape[-2:])):
            continue
        grids[name] = (int(output.shape[-2]), int(output.shape[-1]))
        if (
            conv_seen
            and output.shape[-1] * output.shape[-2] > 1
            and not isinstance(module, _NOT_FEATURE_MAPS)
            and id(output) not in pooled
        ):
            maps.append((name, grids[name]))
    calls = Counter(name for name, _, _ in order)
    maps = [(name, size) for name, size in maps if calls[name] == 1]
    if not maps:
        raise ValueError(
            f"no convolutional feature map larger than 1x1 in {type(model).__name__} at input size "
            f"{tuple(images.shape[-2:])}; pass layers=[...] explicitly, for example one of {conv_layer_names(model)}"
        )
    return maps, grids


def default_cam_layer(model: nn.Module, images: Tensor) -> str:
    """Choose the layer Grad-CAM should look at: the last convolutional feature map before global pooling.

    One forward pass records, in execution order, every module whose output is a 4-D feature map with more than
    one position. The last of those that finish after a convolution has run is chosen, skipping pooling layers and
    blocks whose output is a pooling layer's output (the resolution before pooling is what Grad-CAM should show);
    where a block and its last child give the same output, the block finishes last and its (shorter, more
    familiar) name wins: ``layer4`` on a ResNet, the ReLU after the last convolution on VGG and AlexNet.

    Args:
        model: a classifier whose ``forward(images)`` returns logits.
        images: Tensor of shape (N, C, H, W), a batch the model accepts.

    Returns:
        The clean dotted name of the chosen layer.

    Raises:
        ValueError: if the model has no convolution, or no convolutional feature map with more than one position.
    """
    return _feature_maps(model, images)[-1][0]


def stage_layers(model: nn.Module, images: Tensor, max_stages: int = 5) -> list[str]:
    """Each convolutional stage's output: the last feature map at each resolution, the deepest ``max_stages``.

    On a ResNet these are the stem's ReLU and ``layer1`` ... ``layer4`` (a bottleneck block's layers before its strided
    convolution belong to the next stage); on VGG and AlexNet the ReLU before each max-pooling; on the ZF-style example
    net ``relu1``, ``relu2``, ``relu3``.

    Args:
        model: the network.
        images: Tensor of shape (N, C, H, W), a batch the model accepts.
        max_stages: how many stages at most, counted from the deepest.

    Returns:
        Layer names, shallowest first.
    """
    maps, grids = _feature_maps_and_grids(model, images)
    first: dict[tuple[int, int], str] = {}  # the first feature map of each grid
    for name, size in maps:
        first.setdefault(size, name)
    stages: list[tuple[str, tuple[int, int]]] = []
    for name, size in maps:
        if _opens_next_stage(name, first[size], size, grids):
            continue
        if stages and stages[-1][1] == size:
            stages[-1] = (name, size)
        else:
            stages.append((name, size))
    # a grid met again ends its stage there (a branch that downsamples before its sibling has: ShuffleNet's units)
    last = {size: i for i, (_, size) in enumerate(stages)}
    stages = [stage for i, stage in enumerate(stages) if last[stage[1]] == i]
    return [name for name, _ in stages[-max_stages:]]


def _opens_next_stage(name: str, first: str, size: tuple[int, int], grids: dict[str, tuple[int, int]]) -> bool:
    """Whether feature map ``name`` (of grid ``size``) lies in a block whose output has another grid and that
    ``first``, the first feature map of this grid, is not in: the layers a downsampling block runs before it
    downsamples (a ResNet-50 bottleneck's 1x1 convolution and BatchNorm before its strided 3x3, ConvNeXt's LayerNorm
    before its strided convolution, a ShuffleNet unit's second branch), which open the next stage rather than end
    this one."""
    parts = name.split(".")
    for depth in range(1, len(parts)):
        block = ".".join(parts[:depth])
        if block in grids and grids[block] != size and first != block and not first.startswith(block + "."):
            return True
    return False
