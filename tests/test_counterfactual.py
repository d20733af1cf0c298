"""Counterfactual checks: exact surgery, faithful optimizer copies, no trace on the run, and judgements whose
margins are far beyond the noise (a rate far too low, a rate already good, no change at all)."""

from __future__ import annotations

import copy
import doctest
import gc
import itertools
import math
import weakref
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_viz.diagnostics import counterfactual as cf
from lightning_viz.diagnostics import shift_consistency
from lightning_viz.diagnostics.counterfactual import Result, Scores, check_memory, counterfactual, judge
from lightning_viz.methods.surgery import (
    BlurredConv2d,
    blurred_first_layer,
    grown_kernel,
    optimizer_for,
    try_blur,
    try_kernel,
    try_rate,
    with_rate,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyNet(nn.Module):
    """A strided first conv, BatchNorm, Dropout, global pooling: what a check must copy and leave alone."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, stride=2, padding=2)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(F.relu(self.bn(self.conv(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _images(count: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, 12, 12, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(count)]


def _cross_entropy(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _mse(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return F.mse_loss(model(batch[0]), batch[1])


def _regression(rate: float, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, list[Any], list[Any]]:
    """Noise-free linear regression in 16 dimensions, batches of 32, from zero weights: plain SGD contracts the
    error by about (1 - 2 rate) per step, so 0.003 barely moves in 30 steps, 0.03 nearly solves it, and 1.0 is
    past the stability limit (2 / the largest curvature, about 2 / 5.8 on batches this size)."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(16, 1, generator=g)
    inputs = [torch.randn(32, 16, generator=g) for _ in range(8)]
    data = [(x, x @ truth) for x in inputs]
    model = nn.Linear(16, 1, bias=False)
    nn.init.zeros_(model.weight)
    return model, torch.optim.SGD(model.parameters(), lr=rate), data[:4], data[4:]


# -- surgery ---------------------------------------------------------------------------------------------------------


def test_blurred_layer_keeps_the_output_shape() -> None:
    for kernel, stride, size in itertools.product(range(1, 12), range(2, 5), (13, 16)):
        for padding in sorted({0, kernel // 2, 1}):
            model = nn.Sequential(nn.Conv2d(2, 3, kernel, stride, padding))
            x = torch.randn(1, 2, size, size + 1)  # odd and even sides at once
            assert blurred_first_layer(model, "0")(x).shape == model(x).shape, (kernel, stride, padding, size)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, (2, 3), 1))  # a different stride per axis
    for size in (1, 2, 7, 8):  # maps too small to reflect are replicated
        x = torch.randn(1, 2, size, size)
        assert blurred_first_layer(model, "0")(x).shape == model(x).shape


def test_blurred_layer_equals_the_strided_conv_on_a_constant_image() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4))
    x = torch.full((1, 3, 17, 17), 0.7)
    blurred = blurred_first_layer(model, "0")
    torch.testing.assert_close(blurred(x), model(x))  # a normalised blur leaves a constant response alone
    assert isinstance(blurred[0], BlurredConv2d)
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    torch.testing.assert_close(blurred[0].blur[2, 0], taps.outer(taps))


def test_blurred_layer_keeps_the_parameters_in_their_place_and_the_original_alone() -> None:
    model = TinyNet()
    before = copy.deepcopy(model.state_dict())
    blurred = blurred_first_layer(model, "conv")
    assert [p.shape for p in blurred.parameters()] == [p.shape for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(blurred.parameters(), model.parameters(), strict=True))
    assert model.conv.stride == (2, 2) and isinstance(model.conv, nn.Conv2d)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    taps = blurred.conv.blur[0, 0]
    torch.testing.assert_close(taps, torch.tensor([1.0, 2.0, 1.0]).outer(torch.tensor([1.0, 2.0, 1.0])) / 16)


@pytest.mark.parametrize(
    ("kernel", "size", "options"),
    [
        (3, 5, {"padding": 1}),
        (3, 7, {"stride": 2}),
        (5, 7, {"padding": "same"}),
        (2, 3, {"stride": 2}),  # an odd growth: unequal padding
        (1, 4, {"stride": 3, "padding": 1}),
        (3, 5, {"padding": 2, "dilation": 2, "groups": 2}),
        (3, 5, {"padding": 1, "padding_mode": "circular"}),
        (4, 5, {"padding": 2, "padding_mode": "reflect", "stride": 2}),
    ],
)
def test_grown_kernel_computes_the_same_function(kernel: int, size: int, options: dict[str, Any]) -> None:
    model = nn.Sequential(nn.Conv2d(4, 6, kernel, **options).double(), nn.ReLU())
    x = torch.randn(2, 4, 15, 16, dtype=torch.float64)
    grown = grown_kernel(model, "0", size)
    conv = next(m for m in grown.modules() if isinstance(m, nn.Conv2d))
    assert conv.kernel_size == (size, size) and conv.stride == model[0].stride
    torch.testing.assert_close(grown(x), model(x), atol=1e-6, rtol=0)
    assert model[0].kernel_size == (kernel, kernel)  # the original is untouched


def test_grown_kernel_keeps_the_parameter_order() -> None:
    model = TinyNet()
    grown = grown_kernel(model, "conv", 7)
    assert [name for name, _ in grown.named_parameters()] == [name for name, _ in model.named_parameters()]
    assert grown.conv.weight.shape == (4, 3, 7, 7) and grown.conv.bias is not None


# -- optimizer copies ------------------------------------------------------------------------------------------------


def _stepped(optimizer_class: type[torch.optim.Optimizer], **options: Any) -> tuple[nn.Module, Any]:
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = optimizer_class(model.parameters(), **options)
    for batch in _images(2, seed=1):
        optimizer.zero_grad()
        _cross_entropy(model, batch).backward()
        optimizer.step()
    return model, optimizer


def test_optimizer_copy_has_the_state_and_shares_no_tensor() -> None:
    model, optimizer = _stepped(torch.optim.SGD, lr=0.1, momentum=0.9)
    twin = copy.deepcopy(model)
    twin_optimizer = optimizer_for(optimizer, model, twin)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        old, new = optimizer.state[p]["momentum_buffer"], twin_optimizer.state[q]["momentum_buffer"]
        assert torch.equal(old, new) and old.data_ptr() != new.data_ptr()
    saved = [b.clone() for b in (optimizer.state[p]["momentum_buffer"] for p in model.parameters())]
    twin_optimizer.step()  # the copy's buffers move, the original's do not
    assert all(
        torch.equal(s, optimizer.state[p]["momentum_buffer"]) for s, p in zip(saved, model.parameters(), strict=True)
    )


def test_with_rate_scales_or_sets_the_rate_of_every_group() -> None:
    model = TinyNet()
    optimizer = torch.optim.SGD([{"params": model.conv.parameters(), "lr": 0.1}, {"params": model.fc.parameters()}])
    assert [g["lr"] for g in with_rate(optimizer, 10).param_groups] == pytest.approx([1.0, 0.01])
    assert [g["lr"] for g in with_rate(optimizer, rate=0.002).param_groups] == [0.002, 0.002]
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.001]


@pytest.mark.parametrize("optimizer_class", [torch.optim.SGD, torch.optim.Adam])
def test_grown_kernel_grows_the_optimizer_state_with_zeros(optimizer_class: type[torch.optim.Optimizer]) -> None:
    model, optimizer = _stepped(
        optimizer_class, lr=0.01, **({"momentum": 0.9} if optimizer_class is torch.optim.SGD else {})
    )
    twin = copy.deepcopy(model)
    grown, grown_optimizer = try_kernel("conv", 7)(twin, optimizer_for(optimizer, model, twin))
    old, new = optimizer.state[model.conv.weight], grown_optimizer.state[grown.conv.weight]
    for key, value in old.items():
        if value.shape == model.conv.weight.shape:
            assert new[key].shape == (4, 3, 7, 7)
            assert torch.equal(new[key][..., 1:6, 1:6], value) and new[key].abs().sum() == value.abs().sum()
        else:
            assert torch.equal(new[key], value)  # step counts


def test_grown_kernel_state_follows_the_weight_it_grew() -> None:
    model, optimizer = _stepped(torch.optim.SGD, lr=0.01, momentum=0.9)
    twin = copy.deepcopy(model)
    twin_optimizer = optimizer_for(optimizer, model, twin)
    grown, grown_optimizer = try_kernel("conv", 6)(twin, twin_optimizer)  # an odd growth: extra zeros after
    buffer = grown_optimizer.state[grown.conv.conv.weight]["momentum_buffer"]
    assert torch.equal(buffer[..., 0:5, 0:5], optimizer.state[model.conv.weight]["momentum_buffer"])
    assert torch.equal(grown.conv.conv.weight[..., 0:5, 0:5], model.conv.weight)


# -- the check leaves no trace ---------------------------------------------------------------------------------------


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "model": copy.deepcopy(model.state_dict()),
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "rng": torch.get_rng_state(),
        "modes": [m.training for m in model.modules()],
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_a_check_leaves_the_model_optimizer_grads_and_generators_as_they_were() -> None:
    model, optimizer = _stepped(torch.optim.SGD, lr=0.05, momentum=0.9)
    _cross_entropy(model, _images(1, seed=9)[0]).backward()  # gradients of the next step, not yet taken
    model.drop.eval()  # a module the user keeps in eval mode
    copies: list[weakref.ref[nn.Module]] = []

    def watched(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        copies.append(weakref.ref(model))
        return try_blur("conv")(model, optimizer)

    variants = {"x10": try_rate(10), "blur": watched, "kernel 7": try_kernel("conv", 7)}
    before = _snapshot(model, optimizer)
    result = counterfactual(model, optimizer, _images(3, 2), _images(2, 3), _cross_entropy, variants, steps=4,
                            metric=lambda m, b: shift_consistency(m, b[0]))  # fmt: skip
    assert _same(before, _snapshot(model, optimizer))
    gc.collect()
    assert copies and copies[0]() is None  # the copies are freed
    for scores in (result.control, result.second_control, *result.variants.values()):
        assert scores.diverged is None and len(scores.held_out_loss) == 2 and scores.metric is not None
        assert len(scores.train_loss) == 4
    assert result.judge("blur", on="metric", what="shift distance").outcome in {
        "confirmed",
        "not confirmed",
        "inconclusive",
    }


def test_a_check_works_from_inference_mode_and_an_eval_model() -> None:
    model, optimizer, batches, held_out = _regression(0.01)
    model.eval()
    with torch.inference_mode():
        result = counterfactual(model, optimizer, batches, held_out, _mse, {"x2": try_rate(2)}, steps=3)
    assert len(result.variants["x2"].train_loss) == 3 and not model.training


def test_copies_train_in_train_mode_and_are_scored_in_eval_mode() -> None:
    model, optimizer, batches, held_out = _regression(0.01)
    modes: list[bool] = []

    def recording(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        modes.append(model.training)
        return _mse(model, batch)

    counterfactual(model, optimizer, batches, held_out, recording, {"x2": try_rate(2)}, steps=5)
    assert modes == 3 * ([True] * 5 + [False] * 4)  # control, second control, variant: 5 steps, 4 held-out batches


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_check_on_cuda_leaves_the_cuda_generator_alone() -> None:
    torch.manual_seed(0)
    model = TinyNet().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = [(x.cuda(), y.cuda()) for x, y in _images(4, seed=2)]
    cuda_rng = torch.cuda.get_rng_state_all()
    before = _snapshot(model, optimizer)
    result = counterfactual(model, optimizer, data[:2], data[2:], _cross_entropy, {"blur": try_blur("conv")}, steps=3)
    assert _same(before, _snapshot(model, optimizer)) and _same(cuda_rng, torch.cuda.get_rng_state_all())
    assert result.variants["blur"].diverged is None


# -- judgements ------------------------------------------------------------------------------------------------------


def test_a_rate_far_too_low_raised_tenfold_is_confirmed() -> None:
    model, optimizer, batches, held_out = _regression(0.003)
    result = counterfactual(model, optimizer, batches, held_out, _mse, {"x10": try_rate(10)}, steps=30)
    judgement = result.judge("x10")
    # about 0.7 of the loss left at 0.003 against 0.03 at 0.03 (see _regression): a margin no processor changes
    assert judgement.outcome == "confirmed" and judgement.difference < -0.5
    assert (
        judgement.text.startswith("confirmed: x10 had ")
        and "lower held-out loss than the control after 30" in judgement.text
    )


def test_a_good_rate_raised_tenfold_is_not_confirmed() -> None:
    model, optimizer, batches, held_out = _regression(0.1)
    result = counterfactual(model, optimizer, batches, held_out, _mse, {"x10": try_rate(10)}, steps=30)
    assert result.control.diverged is None
    assert result.judge("x10").outcome == "not confirmed"
    model, optimizer, batches, held_out = _regression(0.1)
    result = counterfactual(model, optimizer, batches, held_out, _mse, {"x100": try_rate(100)}, steps=30)
    assert result.variants["x100"].diverged is not None
    assert result.judge("x100").text.startswith("not confirmed: x100 diverged (training loss")


def test_no_change_is_inconclusive_and_an_optimizer_copy_is_faithful() -> None:
    model, optimizer, batches, held_out = _regression(0.01)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    variants = {"nothing": lambda m, o: (m, o), "x1": try_rate(1.0), "rate 0.01": try_rate(rate=0.01)}
    result = counterfactual(model, optimizer, batches, held_out, _mse, variants, steps=20)
    for name in variants:  # the same steps on the same batches: bit for bit the control
        assert result.variants[name] == result.control
        judgement = result.judge(name)
        assert judgement.outcome == "inconclusive" and judgement.difference == 0
        assert "within the noise" in judgement.text
    assert result.second_control.held_out_loss != result.control.held_out_loss  # another order


@pytest.mark.parametrize(
    ("optimizer_class", "options"),
    [(torch.optim.Adam, {"lr": 0.01}), (torch.optim.LBFGS, {"lr": 0.5, "max_iter": 2})],
)
def test_other_optimizers_are_copied_faithfully(optimizer_class: Any, options: dict[str, Any]) -> None:
    model, _, batches, held_out = _regression(0.01)
    optimizer = optimizer_class(model.parameters(), **options)
    result = counterfactual(model, optimizer, batches, held_out, _mse, {"x1": try_rate(1.0)}, steps=3)
    assert result.variants["x1"] == result.control


def test_judge_rule() -> None:
    control, second = [1.0, 1.1, 0.9, 1.0], [1.01, 1.11, 0.91, 1.01]  # noise: 1% between controls
    assert judge([0.5, 0.56, 0.44, 0.5], control, second).outcome == "confirmed"
    assert judge([1.5, 1.6, 1.4, 1.5], control, second).outcome == "not confirmed"
    within = judge([0.99, 1.12, 0.87, 1.0], control, second)
    assert within.outcome == "inconclusive" and "within the noise" in within.text
    tiny = judge([0.995, 1.095, 0.895, 0.995], control, control)  # beyond a zero noise, under the 1% that counts
    assert tiny.outcome == "inconclusive" and "under the 1.0% that counts" in tiny.text
    wild = judge([0.5, 1.6, 0.3, 1.0], control, second)  # 15% lower on average, but not batch by batch
    assert wild.outcome == "inconclusive" and wild.noise > 0.2
    text = judge([0.69, 0.76, 0.62, 0.69], control, second, "a blurred conv1", "shift distance", 50).text
    assert text.startswith("confirmed: a blurred conv1 had 31% lower shift distance than the control after 50 steps")


def test_divergence_is_judged_before_the_numbers() -> None:
    ok = Scores((1.0, 1.0), None, (1.0,))
    gone = Scores((), None, (math.nan,), "training loss nan at step 1")
    assert Result(1, ok, ok, {"v": gone}).judge("v").outcome == "not confirmed"
    assert Result(1, gone, ok, {"v": ok}).judge("v").outcome == "confirmed"
    assert Result(1, ok, gone, {"v": ok}).judge("v").outcome == "inconclusive"


def test_check_memory_counts_one_copy_and_two_optimizer_states() -> None:
    model = nn.Linear(10, 1)  # 11 parameters
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 10)).sum().backward()
    optimizer.step()
    assert check_memory(model, optimizer) == 4 * (11 + 11 + 2 * 11)


def test_docstring_example_runs() -> None:
    assert doctest.testmod(cf, raise_on_error=True).attempted > 0


# -- errors ----------------------------------------------------------------------------------------------------------


def test_errors() -> None:
    model, optimizer, batches, held_out = _regression(0.01)
    net = TinyNet()
    with pytest.raises(ValueError, match="unknown layer 'cnv'. Close matches: \\['conv'\\]"):
        blurred_first_layer(net, "cnv")
    with pytest.raises(ValueError, match="layer 'fc' is a Linear, not an nn.Conv2d"):
        grown_kernel(net, "fc", 5)
    with pytest.raises(ValueError, match="layer '0' has stride 1: there is no subsampling to blur"):
        blurred_first_layer(nn.Sequential(nn.Conv2d(1, 1, 3)), "0")
    with pytest.raises(ValueError, match="size must be at least the kernel of 'conv' \\(5, 5\\), got 3"):
        grown_kernel(net, "conv", 3)
    with pytest.raises(ValueError, match="size must be a positive int, got 0"):
        try_kernel("conv", 0)
    with pytest.raises(ValueError, match="give exactly one of factor and rate, got factor=2, rate=0.1"):
        with_rate(optimizer, 2, rate=0.1)
    with pytest.raises(ValueError, match="the factor must be positive and finite, got -1"):
        try_rate(-1)
    with pytest.raises(
        ValueError, match="the optimizer holds a parameter of shape \\(1, 16\\) that is not the model's"
    ):
        optimizer_for(optimizer, net, copy.deepcopy(net))
    with pytest.raises(ValueError, match="need at least two batches and two held-out batches, got 1 and 4"):
        counterfactual(model, optimizer, batches[:1], held_out, _mse, {"x2": try_rate(2)}, steps=2)
    with pytest.raises(ValueError, match="variants is empty"):
        counterfactual(model, optimizer, batches, held_out, _mse, {}, steps=2)
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        counterfactual(model, optimizer, batches, held_out, _mse, {"x2": try_rate(2)}, steps=0)
    stranger = nn.Linear(16, 1, bias=False)
    with pytest.raises(
        ValueError, match="variant 'odd' returned an optimizer over parameters that are not its model's"
    ):
        counterfactual(model, optimizer, batches, held_out, _mse, {"odd": lambda m, o: (stranger, o)}, steps=1)
    result = counterfactual(model, optimizer, batches, held_out, _mse, {"x2": try_rate(2)}, steps=1)
    with pytest.raises(ValueError, match="unknown variant 'x3'; the check tried \\['x2'\\]"):
        result.judge("x3")
    with pytest.raises(ValueError, match="the check measured no metric"):
        result.judge("x2", on="metric")
    with pytest.raises(ValueError, match="need the same number \\(at least two\\) of scores each, got \\[1, 2\\]"):
        judge([1.0], [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="scores must be finite"):
        judge([1.0, math.inf], [1.0, 2.0], [1.0, 2.0])
