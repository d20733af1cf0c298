"""Run a visualization on a model that is being trained without changing anything training will see.

What a probe could change, and how :func:`isolated` prevents it:

- ``training`` flags: every module is put in eval mode (no BatchNorm statistics update, no Dropout) and each
  module's own flag is restored afterwards, including modules the user keeps in eval on purpose;
- random number generators (torch CPU and CUDA, numpy, python): saved and restored, so the next Dropout mask and
  the next shuffle are the ones training would have drawn;
- ``requires_grad`` of parameters and ``inplace`` of activations: saved and restored, whatever a method does;
- autograd mode: the probe runs with gradients enabled and outside inference mode, because Lightning calls
  validation hooks under ``torch.inference_mode``;
- ``torch.compile``d modules run eagerly, so hooks work and the compiled graphs training uses are not
  recompiled.

Parameter ``.grad`` is not saved: methods never write it, they take gradients with ``torch.autograd.grad``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["isolated", "rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """Return the states of the torch (CPU and initialised CUDA devices), numpy and python generators."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy

        state["numpy"] = numpy.random.get_state()
    except ImportError:  # numpy is optional for torch
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])


@contextmanager
def isolated(model: nn.Module) -> Iterator[nn.Module]:
    """Context in which ``model`` can be probed with forward and backward passes, leaving no trace.

    Inside, the model is in eval mode, gradients are enabled (also under an outer ``torch.inference_mode``) and
    compiled modules run eagerly; on exit, even by an exception, every flag and generator state is restored.

    Args:
        model: the model to probe.

    Yields:
        The same model, in eval mode.

    Example::

        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Dropout())
        >>> with torch.inference_mode(), isolated(model):
        ...     model(torch.ones(1, 3, 8, 8)).requires_grad
        True
        >>> model.training
        True
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    inplace = [(m, flag) for m in modules if isinstance(flag := getattr(m, "inplace", None), bool)]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    generators = rng_state()
    try:
        model.eval()
        with ExitStack() as stack:
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
            set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
            if set_stance is not None:
                stack.enter_context(set_stance("force_eager"))
            yield model
    finally:
        for module, flag in zip(modules, training, strict=True):
            module.training = flag
        for module, flag in inplace:
            setattr(module, "inplace", flag)  # noqa: B010 (the attribute is typed as a module attribute)
        for param, flag in zip(params, requires_grad, strict=True):
            param.requires_grad_(flag)
        set_rng_state(generators)
