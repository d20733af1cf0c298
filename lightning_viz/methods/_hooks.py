"""Forward-hook context managers: every hook is removed in ``finally``, even when the forward pass raises."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import Tensor, nn

__all__ = ["capture_outputs", "forward_outputs", "forward_until"]


@contextmanager
def _hooked(modules: Sequence[nn.Module], hook: Any) -> Iterator[None]:
    with ExitStack() as stack:
        for module in modules:
            stack.callback(module.register_forward_hook(hook).remove)
        yield


@contextmanager
def forward_outputs(
    model: nn.Module, named: Sequence[tuple[str, nn.Module]]
) -> Iterator[list[tuple[str, nn.Module, Any]]]:
    """Record ``(name, module, output)`` for each call of the given modules, in the order the calls finish.

    A module called twice (the ReLU a torchvision ResNet block reuses) is recorded twice.
    """
    del model  # the hooks live on the modules; the argument keeps call sites readable
    names = {id(module): name for name, module in named}
    order: list[tuple[str, nn.Module, Any]] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        order.append((names[id(module)], module, output))

    with _hooked([module for _, module in named], hook):
        yield order


@contextmanager
def capture_outputs(layers: dict[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """Capture the output tensor of each named layer during the forward passes run inside the context.

    The hook hands a clone downstream and keeps the original, so an in-place op that follows the layer (the
    ``ReLU(inplace=True)`` after AlexNet's ``features.10``) changes the clone and not the stored activation, and
    gradients taken with respect to the stored tensor are gradients with respect to the layer's true output.
    For a module called several times, the last call's output is kept.

    Args:
        layers: name -> module.

    Yields:
        name -> output tensor, filled in by the forward pass.

    Raises:
        TypeError: from the forward pass, if a layer's output is not a tensor.
    """
    outputs: dict[str, Tensor] = {}
    by_id = {id(module): name for name, module in layers.items()}

    def hook(module: nn.Module, args: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError(f"layer {by_id[id(module)]!r} returns {type(output).__name__}, not a tensor")
        outputs[by_id[id(module)]] = output
        return output.clone()

    with _hooked(list(layers.values()), hook):
        yield outputs


class _Captured(Exception):
    """Raised by a hook to end a forward pass once every wanted layer has produced its output."""


def forward_until(model: nn.Module, inputs: Tensor, layers: dict[str, nn.Module]) -> dict[str, Tensor]:
    """Run ``model(inputs)`` only as far as needed: the pass stops once every layer in ``layers`` has produced
    its output, so nothing after the deepest one is computed. Each layer's first call is the one kept.

    Args:
        model: the network.
        inputs: its input batch.
        layers: name -> module.

    Returns:
        name -> output tensor, as :func:`capture_outputs` (in-place ops after a layer do not change it).
    """
    outputs: dict[str, Tensor] = {}
    by_id = {id(module): name for name, module in layers.items()}

    def hook(module: nn.Module, args: Any, output: Any) -> Tensor:
        name = by_id[id(module)]
        if not isinstance(output, Tensor):
            raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
        outputs.setdefault(name, output)
        if len(outputs) == len(layers):
            raise _Captured
        return output.clone()

    try:
        with _hooked(list(layers.values()), hook):
            model(inputs)
    except _Captured:
        pass
    missing = set(layers) - set(outputs)
    if missing:
        raise ValueError(f"the forward pass never called the layer(s) {sorted(missing)}")
    return outputs
