"""Changing what the backward pass does at every ReLU, however the network calls it.

The rule is applied at the torch-function level for the duration of a forward pass, so ``nn.ReLU`` modules (also
in-place, also one module called several times, as in torchvision's ResNet) and functional ``F.relu``,
``torch.relu``, ``Tensor.relu`` and their in-place forms are all covered. Hooks on ``nn.ReLU`` modules, as in
captum's ``Deconvolution``, miss the functional calls and silently fall back to the plain gradient there.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["RULES", "Rule", "RuleSwitch", "linearized", "relu_rule", "switchable_relu"]

Rule = Literal["deconvnet", "guided", "gradient"]
RULES: tuple[Rule, ...] = ("deconvnet", "guided", "gradient")

_RELU = {F.relu, torch.relu, Tensor.relu}
_RELU_INPLACE = {torch.relu_, Tensor.relu_, F.relu_}
_MAX_POOL = {F.max_pool2d, torch.max_pool2d}
# Other elementwise activations: identities in the linearized network (their derivative may vanish at its zero input)
_ELEMENTWISE = {
    F.relu6,
    F.hardtanh,
    F.hardtanh_,
    F.leaky_relu,
    F.leaky_relu_,
    F.elu,
    F.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.sigmoid,
    F.tanh,
    torch.sigmoid,
    torch.tanh,
    Tensor.sigmoid,
    Tensor.tanh,
}
_CONV = {F.conv2d}
_BATCH_NORM = {F.batch_norm}


def _relu_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, bool] | None:
    """(input, inplace) if ``func(*args, **kwargs)`` is a ReLU, else None."""
    if func in _RELU:
        return args[0], bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
    if func in _RELU_INPLACE:
        return args[0], True
    return None


class _RuleReLU(torch.autograd.Function):
    """ReLU forward; backward by the chosen rule (Zeiler & Fergus 2014; Springenberg et al. 2015)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, rule: str | RuleSwitch, inplace: bool) -> Tensor:
        if inplace:
            ctx.mark_dirty(x)
            out = x.clamp_(min=0)
        else:
            out = x.clamp(min=0)
        ctx.rule = rule
        ctx.passed = out > 0  # kept as an attribute: a later in-place op on `out` must not matter
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        rule = ctx.rule.rule if isinstance(ctx.rule, RuleSwitch) else ctx.rule  # a switch is read at backward time
        if rule == "deconvnet":  # the signal is rectified, the forward pass's mask is not used
            return grad.clamp(min=0), None, None
        if rule == "guided":  # both: the forward mask and a rectified signal
            return grad.clamp(min=0) * ctx.passed, None, None
        return grad * ctx.passed, None, None


class RuleSwitch:
    """The ReLU rule of a graph recorded under :class:`switchable_relu`, read by each backward pass: one forward
    pass then serves Grad-CAM (``"gradient"``) and deconvnet or guided backpropagation alike."""

    def __init__(self, rule: Rule = "gradient") -> None:
        self.rule: Rule = rule

    def set(self, rule: Rule) -> RuleSwitch:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.rule = rule
        return self


class relu_rule(TorchFunctionMode):
    """Within the context, every ReLU's backward follows ``rule``:

    - ``"deconvnet"``: ReLU of the incoming signal (Zeiler & Fergus 2014, "Visualizing and Understanding
      Convolutional Networks");
    - ``"guided"``: guided backpropagation, the incoming signal rectified and masked by the forward pass
      (Springenberg et al. 2015, "Striving for Simplicity");
    - ``"gradient"``: the ordinary gradient.

    A :class:`RuleSwitch` instead of a rule is read when each backward pass runs (see :class:`switchable_relu`).
    """

    def __init__(self, rule: Rule | RuleSwitch) -> None:
        super().__init__()
        if not isinstance(rule, RuleSwitch) and rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.rule = rule

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        relu = _relu_call(func, args, kwargs)
        if relu is not None and isinstance(relu[0], Tensor) and relu[0].requires_grad:
            return _RuleReLU.apply(relu[0], self.rule, relu[1])
        return func(*args, **kwargs)


class switchable_relu(relu_rule):
    """Like :class:`relu_rule`, but every ReLU's backward follows ``switch.rule`` as it is when the backward pass
    runs, so a graph recorded once can be differentiated under each rule in turn."""

    def __init__(self, switch: RuleSwitch) -> None:
        super().__init__(switch)


class linearized(TorchFunctionMode):
    """Within the context, the network becomes a positive linear map of its input, whose gradient support is the
    receptive field: ReLU and BatchNorm are identities, max-pooling becomes average pooling over the same windows,
    and convolutions use ``|W|``, so no two paths can cancel. Geometry only: the result does not depend on the
    input or, except for exact zeros, on the weights. Other elementwise activations (ReLU6, GELU, SiLU, ...) are
    identities too; the ReLU rules themselves apply to ReLU only."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if _relu_call(func, args, kwargs) is not None or func in _BATCH_NORM or func in _ELEMENTWISE:
            return args[0]
        if func in _CONV:
            weight = kwargs.pop("weight", args[1] if len(args) > 1 else None)
            rest = args[2:] if len(args) > 2 else ()
            return func(args[0], weight.abs(), *rest, **kwargs)
        if func in _MAX_POOL:
            return _max_as_average(*args, **kwargs)
        return func(*args, **kwargs)


def _max_as_average(
    x: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    if dilation not in (1, (1, 1)) or return_indices:
        return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)  # type: ignore[call-overload]
    return F.avg_pool2d(x, kernel_size, stride or kernel_size, padding, ceil_mode, count_include_pad=True)
