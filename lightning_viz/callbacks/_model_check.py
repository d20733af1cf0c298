"""Once per fit, before the first probe: the model takes the probe images and returns class scores, or a message
that says what it got and what to pass."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_viz.methods import OutputSpec, as_classifier, describe_output, isolated, select_logits, suggest_output
from lightning_viz.probe import ProbeBatch

__all__ = ["check_classifier"]


def check_classifier(model: nn.Module, images: Tensor, given: ProbeBatch, output: OutputSpec,
                     network: nn.Module | None, name: str, error: type[Exception]) -> None:  # fmt: skip
    """Raise ``error`` (a ``MisconfigurationException``) unless ``model`` returns (N, K) logits for ``images``.

    Args:
        model: the ``LightningModule``.
        images: the probe images as the probes feed them (float copies on the model's device).
        given: the probe batch as drawn or given (its dtype may be the loader's).
        output: where the logits are in what ``forward`` returns (see ``ProbeMonitor``'s ``output``).
        network: the submodule to call as the model, or None for ``model`` itself.
        name: the monitor's name, for the message.
        error: the exception class to raise.
    """
    where = (f"the probe batch (images of shape {tuple(images.shape)}, {str(given.images.dtype)[6:]}, drawn "
             "from the validation loader, else the train loader, unless given as probe=)")  # fmt: skip
    raw: list[Any] = []  # what forward returned, for the message

    def remember(result: Any) -> Any:
        raw.append(result)
        return select_logits(result, output)

    with isolated(model), torch.no_grad():
        try:
            with as_classifier(model, remember, network):
                logits = model(images.clone())
        except NotImplementedError as problem:
            if 'missing the required "forward" function' not in str(problem):
                raise error(f"{name}: the model fails on {where}: NotImplementedError: {problem}") from problem
            message = (f"{name}: {type(model).__name__} has no forward ({problem}); pass network='<the "
                       "submodule its steps call>', for example network='net', or define forward")  # fmt: skip
            raise error(message) from problem
        except Exception as problem:
            message = (f"{name}: the model fails on {where}: {type(problem).__name__}: {problem}; pass "
                       "probe= with images the model takes, or output= if it does not return logits")  # fmt: skip
            raise error(message) from problem
        ok = isinstance(logits, Tensor) and logits.dim() == 2 and logits.shape[0] == len(images)
        if not (ok and logits.is_floating_point() and logits.shape[1] >= 2):
            got = describe_output(raw[0] if raw else logits)
            fix = f"pass {suggest_output(raw[0] if raw else logits)}" if output is None else "check output="
            picked = "" if output is None else f" (output={output!r} picks {describe_output(logits)})"
            raise error(f"{name}: the model returns {got}{picked} for {where}; the monitors need class scores "
                        f"of shape ({len(images)}, K): {fix}")  # fmt: skip
        if not given.images.is_floating_point():  # the probes run on float copies: gradients need them
            _check_dtype_independent(model, images, given, output, network, logits, where, name, error)


def _check_dtype_independent(model: nn.Module, images: Tensor, given: ProbeBatch, output: OutputSpec,
                             network: nn.Module | None, logits: Tensor, where: str, name: str,
                             error: type[Exception]) -> None:  # fmt: skip
    try:
        with as_classifier(model, output, network):
            as_given = model(given.images.to(images.device))
    except Exception:
        return  # the model does not take the loader's dtype itself: nothing to compare
    if isinstance(as_given, Tensor) and not torch.allclose(as_given.float(), logits.float(), atol=1e-4):
        raise error(f"{name}: the model's output depends on the dtype of {where}: the probes run on "
                    "float copies with the same values (0-255), which gradients need; convert the "
                    "images to float in the loader or the model's first line (x = x.float() / 255), "
                    "or pass probe=ProbeBatch(float images)")  # fmt: skip
