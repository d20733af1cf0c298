"""Logits from whatever a model's ``forward`` returns, for the duration of a probe.

Every method here calls ``model(images)`` and expects class scores of shape (N, K). Real models return dicts,
tuples, output objects or one logit per image (binary classifiers trained with BCE); :func:`as_classifier` makes
``model(x)`` return (N, K) logits while it is active, with a forward hook on the root module (so every layer keeps
its name), and can call a submodule in place of a ``forward`` the model does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["OutputSpec", "as_classifier", "describe_output", "select_logits", "suggest_output"]

OutputSpec = str | int | Callable[[Any], Tensor] | None
"""How to get logits from a forward's result: None (the result itself), a key (a dict's item or an attribute such
as ``out.logits``), an index (a tuple's item) or a function of the result."""


def select_logits(output: Any, spec: OutputSpec = None) -> Any:
    """The logits in ``output`` as ``spec`` says; one logit per image, (N, 1), becomes the two-class scores
    (-z/2, z/2), whose softmax is (1 - sigmoid(z), sigmoid(z)), so a BCE classifier is explained like any other."""
    if callable(spec):
        output = spec(output)
    elif isinstance(spec, str):
        output = output[spec] if isinstance(output, Mapping) else getattr(output, spec)
    elif isinstance(spec, int):
        output = output[spec]
    if isinstance(output, Tensor) and output.dim() == 2 and output.shape[1] == 1 and output.is_floating_point():
        output = torch.cat([-output / 2, output / 2], dim=1)
    return output


def describe_output(output: Any) -> str:
    """A short description of a forward's result, for error messages."""
    if isinstance(output, Tensor):
        return f"a {str(output.dtype).removeprefix('torch.')} tensor of shape {tuple(output.shape)}"
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {list(output)}"
    if isinstance(output, Sequence) and not isinstance(output, str):
        items = ", ".join(describe_output(x) for x in list(output)[:4])
        return f"a {type(output).__name__} of {len(output)} ({items}{', ...' if len(output) > 4 else ''})"
    return f"a {type(output).__name__}"


def suggest_output(output: Any) -> str:
    """What to pass as ``output=`` for this result (a best guess, for error messages)."""
    if isinstance(output, Mapping):
        keys = [k for k, v in output.items() if isinstance(v, Tensor) and v.dim() == 2]
        return f'output="{keys[0] if keys else next(iter(output), "logits")}"'
    if isinstance(output, Sequence) and not isinstance(output, str):
        index = next((i for i, v in enumerate(output) if isinstance(v, Tensor) and v.dim() == 2), 0)
        return f"output={index}"
    if hasattr(output, "logits"):
        return 'output="logits"'
    return "output=lambda out: <the (N, K) logits in out>"


@contextmanager
def as_classifier(model: nn.Module, spec: OutputSpec = None, network: nn.Module | None = None) -> Iterator[None]:
    """While active, ``model(x)`` returns ``select_logits(result, spec)``; with ``network``, ``model(x)`` calls
    ``network(x)`` (for a module whose steps call a submodule and which has no ``forward`` of its own)."""
    replaced = network if network is not model else None
    if replaced is not None:
        model.forward = replaced.__call__  # an instance attribute, deleted below
    handle = model.register_forward_hook(lambda module, args, output: select_logits(output, spec))
    try:
        yield
    finally:
        handle.remove()
        if replaced is not None:
            del model.forward
