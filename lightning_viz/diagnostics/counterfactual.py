"""Counterfactual checks: try a verdict's advice on copies of the model for a few steps, beside the real run.

A verdict says "try 0.002", "blur before subsampling" or "try kernel 5". :func:`counterfactual` tests such advice
without touching the run: it trains a control copy of the model and one copy per variant (the advice applied) for
the same few steps on the same buffered batches in the same order, a second control on those batches in another
order, and scores every copy on held-out batches none of them trained on. :func:`judge` then calls the advice
"confirmed", "not confirmed" or "inconclusive" against the noise measured in the same check.

The advice, applied to a copy (:mod:`lightning_viz.methods.surgery`: ``try_rate``, ``try_blur``, ``try_kernel``):

- a rate: the same optimizer with the same state (momentum, Adam's moments, step counts) at another rate
  (``with_rate``);
- an anti-aliased first layer (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): the same weights
  run at stride 1, then a fixed binomial blur subsamples by the stride (``blurred_first_layer``);
- a larger kernel: the old weights in the centre of a larger kernel, zeros around, so that the network computes the
  same function when the check starts (``grown_kernel``).

What a check can tell after a few dozen steps, and what it cannot:

- It can tell whether the change already makes a difference larger than the noise of the comparison, on this data,
  from this point of the run: a rate ten times too low is confirmed by a faster-falling held-out loss; a rate that
  is too high diverges; a blur changes how the first layer samples by its structure, not only by what it learns,
  so its effect on shift consistency (at a held-out loss that is no worse) can show early.
- It cannot tell where the run would end. A short horizon favours whatever lowers the loss soonest (Wu et al. 2018,
  "Understanding Short-Horizon Bias in Stochastic Meta-Optimization": it picks rates that are too small in the long
  run); a grown kernel starts from the same function and its new taps start at zero, so a few steps mostly show
  that it does no harm, not what it would learn; a scheduler's warm-up or decay, gradient clipping, accumulation and
  mixed precision are not reproduced (the copies train with a plain ``step`` at the rate they hold).
- The noise is measured once per check: one second control (another batch order, another seed) and the spread over
  the held-out batches. "Confirmed" at twice that noise is a rule of thumb, not a test at a stated error rate; an
  "inconclusive" says that these steps could not tell, not that the advice is wrong.

Memory: the copies are trained one after the other, and each is deleted before the next is made, so besides the
run itself a check holds one copy of the model (parameters, buffers, gradients), up to two copies of its optimizer
state while the variant's optimizer is built, and the activations of one training step (:func:`check_memory`
counts the tensors); plus the batches the caller buffers (``batches`` and ``held_out``). It costs
(2 + number of variants) x ``steps`` training steps and as many held-out evaluations.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_viz._checks import check_int
from lightning_viz.methods.surgery import Variant, optimizer_for

__all__ = ["Judgement", "Result", "Scores", "check_memory", "counterfactual", "judge"]

Batch = TypeVar("Batch")


# -- the experiment ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """What one copy scored.

    Args:
        held_out_loss: the mean loss on each held-out batch, in eval mode (empty if it diverged in training).
        metric: the metric on each held-out batch, or None where no metric was given or the copy diverged.
        train_loss: the training loss at each step it trained.
        diverged: what was not finite and when, or None.
    """

    held_out_loss: tuple[float, ...]
    metric: tuple[float, ...] | None
    train_loss: tuple[float, ...]
    diverged: str | None = None


@dataclass(frozen=True)
class Result:
    """The scores of one check: the control, the second control (another batch order and seed) and each variant,
    after ``steps`` training steps."""

    steps: int
    control: Scores
    second_control: Scores
    variants: Mapping[str, Scores]

    def judge(self, name: str, on: Literal["loss", "metric"] = "loss", what: str | None = None) -> Judgement:
        """:func:`judge` variant ``name`` against the controls on the held-out loss or the metric (lower is
        better), with divergence decided first: a variant that diverged is not confirmed (inconclusive where the
        control diverged too); one that ran where the control diverged is confirmed; a diverged second control
        leaves the noise unmeasured (inconclusive).

        Raises:
            ValueError: for an unknown variant, or ``on="metric"`` when the check had no metric.
        """
        if name not in self.variants:
            raise ValueError(f"unknown variant {name!r}; the check tried {sorted(self.variants)}")
        what = what or ("held-out loss" if on == "loss" else "held-out metric")
        after = f"after {self.steps} steps"
        variant, control, second = self.variants[name], self.control, self.second_control
        if variant.diverged is not None and control.diverged is not None:
            text = f"inconclusive: every copy diverged ({name}: {variant.diverged}; the control: {control.diverged})"
            return Judgement("inconclusive", math.nan, math.nan, text)
        if variant.diverged is not None:
            return Judgement(
                "not confirmed", math.inf, math.nan, f"not confirmed: {name} diverged ({variant.diverged})"
            )
        if control.diverged is not None:
            text = f"confirmed: the control diverged ({control.diverged}), {name} did not, {after}"
            return Judgement("confirmed", -math.inf, math.nan, text)
        if second.diverged is not None:
            text = f"inconclusive: the second control diverged ({second.diverged}), the noise is unmeasured"
            return Judgement("inconclusive", math.nan, math.nan, text)
        if on == "loss":
            return judge(variant.held_out_loss, control.held_out_loss, second.held_out_loss, name, what, self.steps)
        if variant.metric is None or control.metric is None or second.metric is None:
            raise ValueError("the check measured no metric: pass metric= to counterfactual")
        return judge(variant.metric, control.metric, second.metric, name, what, self.steps)


def _other_order(count: int, steps: int, seed: int) -> list[int]:
    """Batch indices for ``steps`` steps, a seeded shuffle of each pass over the ``count`` batches that is never the
    plain order ``0, 1, 2, ...``."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps:
        shuffled = torch.randperm(count, generator=generator).tolist()
        order += shuffled if shuffled != list(range(count)) else shuffled[1:] + shuffled[:1]
    return order[:steps]


def _train_step(
    model: nn.Module, optimizer: Optimizer, batch: Batch, loss_fn: Callable[[nn.Module, Batch], Tensor]
) -> float:
    """One step as a training loop takes it, through a closure (so optimizers that need one, such as LBFGS, work)."""
    losses: list[float] = []

    def closure() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        loss.backward()  # type: ignore[no-untyped-call]
        losses.append(float(loss.detach()))
        return losses[-1]

    optimizer.step(closure)
    return losses[0]


def _run(
    model: nn.Module,
    optimizer: Optimizer,
    variant: Variant | None,
    schedule: Sequence[Batch],
    held_out: Sequence[Batch],
    loss_fn: Callable[[nn.Module, Batch], Tensor],
    metric: Callable[[nn.Module, Batch], float] | None,
    seed: int,
    name: str,
    settle: Sequence[Batch] = (),
    settle_rate: float | None = None,
) -> Scores:
    """Train one copy on ``schedule`` (then on ``settle`` at ``settle_rate``) and score it on ``held_out``; the copy
    is gone when this returns."""
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.grad = None
    if not model.training:  # called from a validation hook: train as the run trains
        twin.train()
    twin_optimizer = optimizer_for(optimizer, model, twin)
    if variant is not None:
        twin, twin_optimizer = variant(twin, twin_optimizer)
        own = {id(p) for p in twin.parameters()}
        if any(id(p) not in own for group in twin_optimizer.param_groups for p in group["params"]):
            raise ValueError(f"variant {name!r} returned an optimizer over parameters that are not its model's")
    torch.manual_seed(seed)  # after the variant, so that its Dropout masks are the control's
    train_loss: list[float] = []
    for step, batch in enumerate([*schedule, *settle], start=1):
        if step == len(schedule) + 1 and settle_rate is not None:  # every group's rate scaled alike
            factor = settle_rate / twin_optimizer.param_groups[0]["lr"]
            for group in twin_optimizer.param_groups:
                group["lr"] *= factor
        train_loss.append(_train_step(twin, twin_optimizer, batch, loss_fn))
        if not math.isfinite(train_loss[-1]):
            return Scores((), None, tuple(train_loss), f"training loss {train_loss[-1]} at step {step}")
    del twin_optimizer
    twin.eval()
    with torch.no_grad():
        losses = tuple(float(loss_fn(twin, batch)) for batch in held_out)
    if not all(map(math.isfinite, losses)):
        return Scores(losses, None, tuple(train_loss), f"held-out loss not finite after {step} steps")
    values = None if metric is None else tuple(float(metric(twin, batch)) for batch in held_out)
    return Scores(losses, values, tuple(train_loss))


def counterfactual(
    model: nn.Module,
    optimizer: Optimizer,
    batches: Sequence[Batch],
    held_out: Sequence[Batch],
    loss_fn: Callable[[nn.Module, Batch], Tensor],
    variants: Mapping[str, Variant],
    steps: int,
    *,
    metric: Callable[[nn.Module, Batch], float] | None = None,
    seed: int = 0,
    settle: int = 0,
    settle_rate: float | None = None,
) -> Result:
    """Train copies of ``model`` for ``steps`` steps with the advice in ``variants`` applied and without, and score
    them on held-out batches (see the module docstring for what this can tell).

    Every copy starts from the model and optimizer state as they are now. The control and each variant train on
    ``batches`` in the same order (cycled when there are fewer batches than steps) with the same seed, so their
    difference is the advice's; the second control trains on the same batches in a seeded other order with another
    seed, and its difference from the control is the noise that any comparison here carries. Copies train with the
    model's module modes (train mode for a model in eval mode, as in a validation hook), and are scored in eval mode
    on ``held_out``, which none trained on; BatchNorm running statistics are each copy's own. A copy whose loss is
    not finite has diverged: that is a result, not an error.

    The model, its gradients, the optimizer and its state, and the torch random generators (CPU and CUDA) are as
    they were when this returns; the copies are deleted one by one (see the module docstring on memory).

    Args:
        model: the model being trained.
        optimizer: its optimizer; the copies start from its state.
        batches: batches to train the copies on, at least two (buffered from the run's recent batches; tensors
            made outside inference mode).
        held_out: batches to score them on, at least two (none of them in ``batches``).
        loss_fn: ``(model, batch) -> scalar loss``, differentiable, for example
            ``lambda m, b: F.cross_entropy(m(b[0]), b[1])``.
        variants: name -> advice applied to a copy (:func:`try_rate`, :func:`try_blur`, :func:`try_kernel`).
        steps: training steps per copy.
        metric: ``(model, batch) -> float`` measured on each held-out batch in eval mode, lower is better (for
            the stride advice, ``lambda m, b: shift_consistency(m, b[0])``).
        seed: seeds the copies' random generators (Dropout) and the second control's order.
        settle: more steps every copy trains after ``steps`` (on the next batches of its order), with its first
            group's rate set to ``settle_rate`` (the others scaled alike): where the advice is a rate, the lower of
            the two, so that a lower rate is not credited with the noise it removes at once (a lower rate lowers the
            loss within a few steps whether or not it learns better: short-horizon bias), and a higher rate is not
            charged with it.
        settle_rate: the rate of the settling steps (required with ``settle``).

    Returns:
        The scores; :meth:`Result.judge` turns them into a judgement per variant.

    Raises:
        ValueError: for fewer than two batches or held-out batches, no variants, a bad ``steps``, or a variant that
            returns an optimizer over another model's parameters.

    Example::

        >>> import torch.nn.functional as F
        >>> from lightning_viz.methods.surgery import try_rate
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> sgd = torch.optim.SGD(net.parameters(), lr=1e-4)
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(4)]
        >>> loss = lambda m, b: F.cross_entropy(m(b[0]), b[1])
        >>> result = counterfactual(net, sgd, data[:2], data[2:], loss, {"x10": try_rate(10)}, steps=5)
        >>> result.judge("x10").outcome in {"confirmed", "not confirmed", "inconclusive"}
        True
    """
    check_int("steps", steps)
    if len(batches) < 2 or len(held_out) < 2:
        raise ValueError(f"need at least two batches and two held-out batches, got {len(batches)} and {len(held_out)}")
    if not variants:
        raise ValueError("variants is empty: give at least one name -> advice")
    if settle and settle_rate is None:
        raise ValueError("settle needs settle_rate")
    check_int("settle", settle, least=0)
    plain = [batches[i % len(batches)] for i in range(steps + settle)]
    shuffled = [batches[i] for i in _other_order(len(batches), steps + settle, seed)]
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.enable_grad():
        common = (held_out, loss_fn, metric)
        rate = settle_rate if settle else None
        control = _run(model, optimizer, None, plain[:steps], *common, seed, "control", plain[steps:], rate)
        second = _run(model, optimizer, None, shuffled[:steps], *common, seed + 1, "second control", shuffled[steps:],
                      rate)  # fmt: skip
        scores = {
            name: _run(model, optimizer, v, plain[:steps], *common, seed, name, plain[steps:], rate)
            for name, v in variants.items()
        }
    return Result(steps, control, second, scores)


def check_memory(model: nn.Module, optimizer: Optimizer) -> int:
    """Bytes a check holds beside the run at its peak, activations and the buffered batches aside: one copy of the
    model's parameters and buffers, their gradients, and two copies of the optimizer's state (while a variant's
    optimizer is built from the control's)."""
    tensors = [*model.parameters(), *model.buffers()]
    grads = [p for p in model.parameters() if p.requires_grad]
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, Tensor)]
    size = sum(t.numel() * t.element_size() for t in (*tensors, *grads))
    return size + 2 * sum(t.numel() * t.element_size() for t in state)


# -- the judgement -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """Whether a check bore the advice out.

    Args:
        outcome: "confirmed", "not confirmed" or "inconclusive".
        difference: (variant - control) / control of the held-out means: negative where the variant is better.
        noise: the comparison's noise on the same scale (NaN where it was not measured).
        text: one line for people.
    """

    outcome: Literal["confirmed", "not confirmed", "inconclusive"]
    difference: float
    noise: float
    text: str


def _percent(share: float) -> str:
    value = 100 * abs(share)
    return f"{value:.1f}%" if value < 9.5 else f"{value:.0f}%" if value < 1e4 else f"{value:.1e}%"


def _compared(difference: float, what: str) -> str:
    """How the variant's score compares with the control's, in words."""
    if difference == 0:
        return f"the same {what} as the control"
    if difference >= 1:
        return f"{1 + difference:.3g} times the {what} of the control"
    return f"{_percent(difference)} {'lower' if difference < 0 else 'higher'} {what} than the control"


def judge(
    variant: Sequence[float],
    control: Sequence[float],
    second_control: Sequence[float],
    name: str = "the variant",
    what: str = "held-out loss",
    steps: int | None = None,
    *,
    ratio: float = 2.0,
    least: float = 0.01,
) -> Judgement:
    """Judge a variant against the control by scores on the same held-out batches, lower is better (a loss, a
    distance), against the noise measured in the same check.

    With c the control's mean over the batches, the difference is d = (mean(variant) - c) / |c|. The noise is
    sqrt(se^2 + o^2) on the same scale: se, the standard error of the paired per-batch differences variant - control
    (how much the finite held-out set alone could move d), and o, the gap between the two controls' means (how far
    two runs that differ only in batch order and seed end apart). The rule:

    - "confirmed" when the variant is better by more than ``ratio`` x noise and by more than ``least``;
    - "not confirmed" when it is worse by as much (divergence is decided before this, by :meth:`Result.judge`);
    - "inconclusive" otherwise: the difference is within what noise makes, or too small to count.

    Args:
        variant: the variant's score on each held-out batch.
        control: the control's, on the same batches in the same order.
        second_control: the second control's.
        name: the variant, for the text.
        what: the score, for the text.
        steps: the steps trained, for the text.
        ratio: how many times the noise a difference must exceed.
        least: the smallest relative difference that counts.

    Raises:
        ValueError: unless the three have the same length, at least two, and all scores are finite.
    """
    lengths = {len(variant), len(control), len(second_control)}
    if len(lengths) != 1 or min(lengths) < 2:
        raise ValueError(f"need the same number (at least two) of scores each, got {sorted(lengths)}")
    if not all(math.isfinite(x) for x in (*variant, *control, *second_control)):
        raise ValueError("scores must be finite (a diverged copy is judged by Result.judge)")
    centre = statistics.fmean(control)
    scale = abs(centre) if abs(centre) > 1e-12 else 1.0
    difference = (statistics.fmean(variant) - centre) / scale
    se = statistics.stdev(v - c for v, c in zip(variant, control, strict=True)) / math.sqrt(len(control)) / scale
    order = abs(statistics.fmean(second_control) - centre) / scale
    noise = math.hypot(se, order)
    beyond = abs(difference) > ratio * noise and abs(difference) > least
    after = "" if steps is None else f" after {steps} steps"
    where = f"(noise {_percent(noise)}: controls {_percent(order)} apart, held-out batches ±{_percent(se)})"
    compared = f"{name} had {_compared(difference, what)}{after}"
    if beyond:
        outcome: Literal["confirmed", "not confirmed"] = "confirmed" if difference < 0 else "not confirmed"
        return Judgement(outcome, difference, noise, f"{outcome}: {compared} {where}")
    small = f"under the {_percent(least)} that counts" if abs(difference) > ratio * noise else "within the noise"
    return Judgement("inconclusive", difference, noise, f"inconclusive: {compared}, {small} {where}")
