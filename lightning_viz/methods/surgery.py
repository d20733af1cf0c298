"""Model surgery for counterfactual checks: a verdict's advice applied to a copy of the model and its optimizer.

- a rate: the same optimizer with the same state (momentum, Adam's moments, step counts) at another rate
  (:func:`with_rate`);
- an anti-aliased first layer (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): the same weights
  run at stride 1, then a fixed binomial blur subsamples by the stride, the output's shape unchanged
  (:func:`blurred_first_layer`);
- a larger kernel: the old weights in the centre of a larger kernel, zeros around, so that the network computes the
  same function when the check starts (:func:`grown_kernel`).

Every function works on a deep copy (or on a copy the caller owns, for the ``try_*`` variants) and keeps the order of
the parameters, so an optimizer's state maps onto the copy by position (:func:`optimizer_for`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_viz._checks import check_int
from lightning_viz.methods._layers import resolve_layer

__all__ = [
    "BlurredConv2d",
    "Variant",
    "blurred_first_layer",
    "grown_kernel",
    "optimizer_for",
    "try_blur",
    "try_kernel",
    "try_rate",
    "with_rate",
]

Variant = Callable[[nn.Module, Optimizer], tuple[nn.Module, Optimizer]]
"""Advice applied to a copy: (model copy, its optimizer) -> (changed model, an optimizer over its parameters). The
check owns both copies, so a variant may change them in place."""

_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


# -- model surgery -------------------------------------------------------------------------------------------------


class BlurredConv2d(nn.Module):
    """A convolution run at stride 1, then a fixed binomial low-pass per channel subsampled by the stride (Zhang
    2019): the anti-aliased form of a strided convolution.

    The blur's taps along an axis of stride s are comb(s, i) for i = 0..s, normalised (s = 1: no blur). The blur's
    input is padded by s // 2 before and s - s // 2 after, by reflection (by replication where the map is too small
    to reflect), so that its output has the strided convolution's shape for every input size, and output j is
    centred on the dense position j * s (half a pixel after it for odd s).

    Args:
        conv: the convolution, already at stride 1; it keeps its own padding, dilation and groups.
        stride: the stride (height, width) of the convolution this replaces.
    """

    def __init__(self, conv: nn.Conv2d, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv = conv
        self.stride = stride
        rows, cols = (_binomial(s, conv.weight) for s in stride)
        kernel = (rows[:, None] * cols[None, :]).expand(conv.out_channels, 1, len(rows), len(cols))
        self.blur: Tensor
        self.register_buffer("blur", kernel.contiguous(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        dense = self.conv(x)
        (sh, sw), (h, w) = self.stride, dense.shape[-2:]
        pads = (sw // 2, sw - sw // 2, sh // 2, sh - sh // 2)
        mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
        return F.conv2d(F.pad(dense, pads, mode=mode), self.blur, stride=self.stride, groups=dense.shape[1])


class _PaddedConv2d(nn.Module):
    """A convolution with unequal padding on its two sides (which ``nn.Conv2d`` cannot hold): a kernel grown by an
    odd number of taps keeps its old taps' alignment only this way."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int], mode: str) -> None:
        super().__init__()
        self.conv: nn.Conv2d = conv
        self.pads, self.mode = pads, mode

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(F.pad(x, self.pads, mode=self.mode))
        return out


def _binomial(stride: int, like: Tensor) -> Tensor:
    if stride == 1:
        return torch.ones(1, dtype=like.dtype, device=like.device)
    taps = torch.tensor([math.comb(stride, i) for i in range(stride + 1)], dtype=like.dtype, device=like.device)
    return taps / taps.sum()


def _conv(model: nn.Module, name: str) -> nn.Conv2d:
    """The named layer, which must be an ``nn.Conv2d`` (unknown names are answered with close matches)."""
    layer = resolve_layer(model, name)[1]
    if not isinstance(layer, nn.Conv2d):
        raise ValueError(f"layer {name!r} is a {type(layer).__name__}, not an nn.Conv2d")
    return layer


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` wherever ``model`` holds ``old``, in the same place of its parent, so that the order of
    ``model.parameters()`` is kept (assigning an existing child keeps its position)."""
    places = [(parent, key) for parent in model.modules() for key, child in parent.named_children() if child is old]
    for parent, key in places:
        setattr(parent, key, new)


def _blur_in_place(model: nn.Module, name: str) -> nn.Module:
    conv = _conv(model, name)
    stride = (int(conv.stride[0]), int(conv.stride[1]))
    if stride == (1, 1):
        raise ValueError(f"layer {name!r} has stride 1: there is no subsampling to blur")
    conv.stride = (1, 1)
    _replace(model, conv, BlurredConv2d(conv, stride))
    return model


def blurred_first_layer(model: nn.Module, name: str) -> nn.Module:
    """A copy of ``model`` whose strided convolution ``name`` is anti-aliased: the same weights at stride 1, then a
    fixed binomial blur subsampling by the stride (:class:`BlurredConv2d`).

    The output has the original layer's shape for every input size, so everything after the layer is unchanged;
    only what the stride folded back (aliasing) is filtered out. The convolution costs stride^2 times the
    multiply-adds. The copy's parameters are the original's, in the same order (the blur has none), so the
    optimizer's state carries over (:func:`optimizer_for`).

    Args:
        model: the model; it is not changed.
        name: the dotted name of an ``nn.Conv2d`` with a stride above 1 (usually the first layer).

    Returns:
        The changed copy.

    Raises:
        ValueError: for an unknown layer (with close matches), a layer that is not an ``nn.Conv2d``, or stride 1.
    """
    return _blur_in_place(copy.deepcopy(model), name)


def _centred(tensor: Tensor, shape: Sequence[int]) -> Tensor:
    """``tensor`` in the centre of a zero tensor of ``shape`` (each dimension at least as large); an odd growth puts
    the extra zero after it. Weights and their optimizer state grow by this one rule, so they stay aligned."""
    grown = tensor.new_zeros(tuple(shape))
    grown[tuple(slice((n - o) // 2, (n - o) // 2 + o) for n, o in zip(shape, tensor.shape, strict=True))] = tensor
    return grown


def _side_pads(conv: nn.Conv2d) -> list[tuple[int, int]]:
    """The zeros (or reflected pixels) the convolution adds before and after each axis (height, width)."""
    if conv.padding == "valid":
        return [(0, 0), (0, 0)]
    if conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(int(p), int(p)) for p in conv.padding]


def _grow_in_place(model: nn.Module, name: str, size: int) -> nn.Module:
    conv = _conv(model, name)
    check_int("size", size)
    if size < max(conv.kernel_size):
        raise ValueError(f"size must be at least the kernel of {name!r} {tuple(conv.kernel_size)}, got {size}")
    weight = conv.weight
    grown = _centred(weight.detach(), (*weight.shape[:2], size, size))
    pads = []
    for (before, after), k, d in zip(_side_pads(conv), conv.kernel_size, conv.dilation, strict=True):
        extra = size - k
        pads.append((before + d * (extra // 2), after + d * (extra - extra // 2)))
    symmetric = all(before == after for before, after in pads)
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        size,
        stride=(conv.stride[0], conv.stride[1]),
        padding=(pads[0][0], pads[1][0]) if symmetric else 0,
        dilation=(conv.dilation[0], conv.dilation[1]),
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode if symmetric else "zeros",
        device=weight.device,
        dtype=weight.dtype,
    )
    new.weight = nn.Parameter(grown, requires_grad=weight.requires_grad)
    new.bias = conv.bias
    new.train(conv.training)
    (top, bottom), (left, right) = pads
    replacement = new if symmetric else _PaddedConv2d(new, (left, right, top, bottom), _PAD_MODES[conv.padding_mode])
    _replace(model, conv, replacement)
    return model


def grown_kernel(model: nn.Module, name: str, size: int) -> nn.Module:
    """A copy of ``model`` whose convolution ``name`` has a ``size`` x ``size`` kernel: the old weights in its
    centre, zeros around, and the padding grown by as many taps, so that the copy computes the same function (and
    the same output shape) at first; only training can use the new taps. The stride, dilation, groups and padding
    mode are kept.

    A kernel grown by an even number of taps (5 -> 7) stays an ``nn.Conv2d``; one grown by an odd number (2 -> 3)
    puts the extra zeros after the old taps and pads one pixel more after the image than before it, in a small
    wrapper (``nn.Conv2d`` pads both sides alike). The grown weight replaces the old one in the same place of
    ``parameters()``, so :func:`optimizer_for` can grow its optimizer state the same way.

    Args:
        model: the model; it is not changed.
        name: the dotted name of an ``nn.Conv2d``.
        size: the new kernel side, at least the old one.

    Returns:
        The changed copy.

    Raises:
        ValueError: for an unknown layer (with close matches), a layer that is not an ``nn.Conv2d``, or a size
            smaller than the kernel.
    """
    return _grow_in_place(copy.deepcopy(model), name, size)


# -- optimizer copies ----------------------------------------------------------------------------------------------


def _rebuilt(
    optimizer: Optimizer,
    old: Sequence[Tensor],
    new: Sequence[Tensor],
    factor: float | None = None,
    rate: float | None = None,
) -> Optimizer:
    """An optimizer of the same class over ``new``: the parameter at each position of ``old`` replaced by the one at
    the same position of ``new``, the state deep-copied (``load_state_dict`` alone would share the state tensors
    with ``optimizer``) and grown with zeros where a parameter grew."""
    if len(old) != len(new):
        raise ValueError(f"the models have {len(old)} and {len(new)} parameters: surgery must keep their number")
    position = {id(p): i for i, p in enumerate(old)}
    groups: list[dict[str, Any]] = []
    pairs: list[tuple[Tensor, Tensor]] = []
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            if id(p) not in position:
                raise ValueError(f"the optimizer holds a parameter of shape {tuple(p.shape)} that is not the model's")
            params.append(new[position[id(p)]])
            pairs.append((p, params[-1]))
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    state = copy.deepcopy(optimizer.state_dict())
    for i, (before, after) in enumerate(pairs):
        if before.shape == after.shape:
            continue
        if before.dim() != after.dim() or any(b > a for b, a in zip(before.shape, after.shape, strict=True)):
            raise ValueError(f"a parameter changed shape from {tuple(before.shape)} to {tuple(after.shape)}")
        for key, value in state["state"].get(i, {}).items():
            if isinstance(value, Tensor) and value.shape == before.shape:
                state["state"][i][key] = _centred(value, after.shape)
    factory: Callable[..., Optimizer] = type(optimizer)
    try:
        rebuilt = factory(groups)
    except TypeError:  # an optimizer that requires its hyperparameters as arguments
        rebuilt = factory(groups, **optimizer.defaults)
    rebuilt.load_state_dict(state)
    for group in rebuilt.param_groups:
        group["lr"] = rate if rate is not None else group["lr"] * (1.0 if factor is None else factor)
    return rebuilt


def optimizer_for(optimizer: Optimizer, model: nn.Module, new_model: nn.Module) -> Optimizer:
    """A copy of ``optimizer`` for ``new_model``, a copy of ``model`` (or a copy after surgery), with the same
    hyperparameters and a copy of its state: momentum buffers, Adam's moments, step counts.

    Parameters are matched by their position in ``parameters()``, which ``copy.deepcopy`` and the surgery here keep:
    :func:`blurred_first_layer` keeps the convolution's parameters in their place, :func:`grown_kernel` puts the
    grown weight in the old one's place, and its state (a momentum buffer, ``exp_avg``, ``exp_avg_sq``) is grown
    with zeros as the weight was. (Under Adam the new taps' moments start at zero while the bias correction assumes
    the run's long history, so for their first few dozen steps they move up to several times the rate.)

    Args:
        optimizer: an optimizer over parameters of ``model``; it is not changed.
        model: the model it trains.
        new_model: the copy the new optimizer trains.

    Returns:
        The new optimizer, sharing no tensor with ``optimizer``.

    Raises:
        ValueError: if the optimizer holds a parameter that is not the model's, or the two models' parameters
            differ in number or changed shape other than by growing.
    """
    return _rebuilt(optimizer, list(model.parameters()), list(new_model.parameters()))


def _check_rate(factor: float | None, rate: float | None) -> None:
    if (factor is None) == (rate is None):
        raise ValueError(f"give exactly one of factor and rate, got factor={factor!r}, rate={rate!r}")
    value = factor if factor is not None else rate
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"the {'factor' if rate is None else 'rate'} must be positive and finite, got {value!r}")


def with_rate(optimizer: Optimizer, factor: float | None = None, *, rate: float | None = None) -> Optimizer:
    """A copy of ``optimizer`` over the same parameters, with a copy of its state and its rate multiplied by
    ``factor`` (every group) or set to ``rate``: the advice "try 0.002" applied without losing momentum.

    Raises:
        ValueError: unless exactly one of ``factor`` and ``rate`` is given, positive and finite.
    """
    _check_rate(factor, rate)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return _rebuilt(optimizer, params, params, factor=factor, rate=rate)


def try_rate(factor: float | None = None, *, rate: float | None = None) -> Variant:
    """The variant "the same run at another rate" (see :func:`with_rate`)."""
    _check_rate(factor, rate)
    return lambda model, optimizer: (model, with_rate(optimizer, factor, rate=rate))


def try_blur(name: str) -> Variant:
    """The variant "anti-alias layer ``name``" (see :func:`blurred_first_layer`)."""

    def variant(model: nn.Module, optimizer: Optimizer) -> tuple[nn.Module, Optimizer]:
        return _blur_in_place(model, name), optimizer  # its parameters are the same objects

    return variant


def try_kernel(name: str, size: int) -> Variant:
    """The variant "grow the kernel of layer ``name`` to ``size``" (see :func:`grown_kernel`)."""
    check_int("size", size)

    def variant(model: nn.Module, optimizer: Optimizer) -> tuple[nn.Module, Optimizer]:
        before = list(model.parameters())
        _grow_in_place(model, name, size)
        return model, _rebuilt(optimizer, before, list(model.parameters()))

    return variant
