"""Activation maximisation: the Fourier parameterisation's known answers, the colour matrix, the transformations,
determinism and isolation, and the activation reached on the committed trained network."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import trained_shapes_net
from torch import nn

from lightning_viz.data import SHAPES_MEAN, SHAPES_STD, Shapes
from lightning_viz.methods import (
    IMAGENET_COLOUR_SQRT,
    ActivationMaxConfig,
    colour_matrix,
    fourier_images,
    maximize_channels,
)
from lightning_viz.methods._hooks import forward_until
from lightning_viz.methods.activation_max import _affine, _transformed

LOW, HIGH = torch.tensor([-1.0, -2.0, 0.5]), torch.tensor([3.0, 0.0, 1.5])


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1)).eval()


# -- the Fourier parameterisation ----------------------------------------------------------------------------------


def test_a_zero_spectrum_is_the_middle_of_the_range_whatever_the_colour_matrix() -> None:
    zero = torch.zeros(2, 3, 8, 10 // 2 + 1, 2)
    for colour in (torch.eye(3), IMAGENET_COLOUR_SQRT):
        images = fourier_images(zero, (8, 10), colour, LOW, HIGH)
        assert images.shape == (2, 3, 8, 10)
        torch.testing.assert_close(images, ((LOW + HIGH) / 2).view(1, 3, 1, 1).expand(2, 3, 8, 10))


def test_spectrum_coefficients_are_scaled_by_one_over_their_frequency() -> None:
    h, w = 16, 16
    spectrum = torch.zeros(3, 1, h, w // 2 + 1, 2, dtype=torch.float64)
    spectrum[0, 0, 0, 0, 0] = 0.01  # the constant term, weighted as the lowest frequency (1/16)
    spectrum[1, 0, 0, 1, 0] = 0.01  # cos(2 pi x / 16)
    spectrum[2, 0, 0, 2, 0] = 0.01  # cos(2 pi x / 8): half the amplitude
    low, high = torch.tensor([0.0]), torch.tensor([1.0])
    plain = torch.logit(fourier_images(spectrum, (h, w), torch.eye(1), low, high))  # undo the sigmoid
    x = torch.arange(w, dtype=torch.float64)
    ortho = 1 / math.sqrt(h * w)  # irfft2(norm="ortho") of one coefficient, times 2 for its mirror image
    torch.testing.assert_close(plain[0, 0], torch.full((h, w), 0.01 * 16 * ortho / 4, dtype=torch.float64))
    torch.testing.assert_close(plain[1, 0, 0], 2 * 0.01 * 16 * ortho / 4 * torch.cos(2 * math.pi * x / 16))
    torch.testing.assert_close(plain[2, 0, 0], 2 * 0.01 * 8 * ortho / 4 * torch.cos(2 * math.pi * x / 8))


def test_the_colour_matrix_squared_is_the_colour_covariance() -> None:
    g = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.3, 0.0], [0.5, -0.2, 0.4]])
    unit = 0.5 + 0.1 * torch.einsum("ij,njhw->nihw", mixing, torch.randn(4, 3, 16, 16, generator=g))
    images = LOW.view(1, 3, 1, 1) + (HIGH - LOW).view(1, 3, 1, 1) * unit  # covariance measured in [0, 1] units
    root = colour_matrix(images, LOW, HIGH)
    covariance = torch.cov(unit.transpose(0, 1).reshape(3, -1)).double()
    torch.testing.assert_close(root @ root, covariance)
    torch.testing.assert_close(root, root.T)
    one = colour_matrix(images[:, :1], LOW[:1], HIGH[:1])  # one channel: its standard deviation
    torch.testing.assert_close(one, unit[:, 0].double().std().view(1, 1))


def test_an_integer_shift_moves_pixels_exactly_and_brings_in_the_middle() -> None:
    config = ActivationMaxConfig(jitter=2, scale=0.0, rotate=0.0)
    theta = _affine(torch.tensor([0.5, 1.0 - 1e-6, 0.5, 0.5]), config, 6, 8)  # dy = 0, dx = +2
    images = torch.arange(2 * 3 * 6 * 8, dtype=torch.float64).view(2, 3, 6, 8)
    middle = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    shifted = _transformed(images, theta, middle)
    torch.testing.assert_close(shifted[..., :6], images[..., 2:])
    torch.testing.assert_close(shifted[..., 6:], middle.expand(2, 3, 6, 2))
    identity = _affine(torch.full((4,), 0.5), config, 6, 8)
    torch.testing.assert_close(_transformed(images, identity, middle), images)


# -- maximize_channels ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_images_stay_in_range_and_follow_the_seed(param: str) -> None:
    net, channels = _small_net(), torch.tensor([0, 5, 7])
    config = ActivationMaxConfig(param=param, steps=6, seed=3)
    first, start = maximize_channels(net, "2", channels, (3, 12, 12), LOW, HIGH, config)
    again, _ = maximize_channels(net, "2", channels, (3, 12, 12), LOW, HIGH, config)
    other, _ = maximize_channels(net, "2", channels, (3, 12, 12), LOW, HIGH, ActivationMaxConfig(param=param, steps=6))
    assert first.shape == start.shape == (3, 3, 12, 12)
    for images in (first, start):
        assert torch.all(images >= LOW.view(1, 3, 1, 1)) and torch.all(images <= HIGH.view(1, 3, 1, 1))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(start[0], start[2])  # one start for all channels


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_global_generator_and_parameters_are_left_alone(param: str) -> None:
    net = _small_net()
    before = {name: p.clone() for name, p in net.state_dict().items()}
    state = torch.get_rng_state()
    maximize_channels(net, "1", torch.tensor([2, 4]), (3, 10, 10), LOW, HIGH, ActivationMaxConfig(param=param, steps=3))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, before[name]) for name, p in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_first_pixel_step_is_the_step_size_in_the_gradients_sign() -> None:
    # a 1x1 convolution: the channel's mean rises with every pixel of an input channel whose weight is positive
    net = nn.Sequential(nn.Conv2d(3, 1, 1)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1))
    config = ActivationMaxConfig(param="pixel", steps=1, lr=0.25, jitter=0, tv=0.0, l2=0.0)
    low, high = torch.full((3,), -10.0), torch.full((3,), 10.0)
    images, start = maximize_channels(net, net[0], torch.tensor([0]), (3, 4, 4), low, high, config)
    step = torch.tensor([0.25, -0.25, 0.25]).view(1, 3, 1, 1)
    torch.testing.assert_close(images, (start + step).clamp(-10, 10))  # the box constraint


def test_on_step_follows_every_step_and_ends_at_the_result() -> None:
    seen: list[tuple[int, torch.Tensor]] = []
    images, _ = maximize_channels(
        _small_net(), "2", torch.tensor([1]), (3, 8, 8), LOW, HIGH, ActivationMaxConfig(steps=4),
        on_step=lambda step, current: seen.append((step, current.clone())),
    )  # fmt: skip
    assert [step for step, _ in seen] == [1, 2, 3, 4]
    assert torch.equal(seen[-1][1], images)
    assert not torch.equal(seen[0][1], images)


class FunctionalReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


@pytest.mark.parametrize("relu", [nn.ReLU, FunctionalReLU])
def test_a_channel_an_nn_relu_silences_at_the_start_is_still_reached(relu: type[nn.Module]) -> None:
    # conv 0 sums the input channels minus 1: zero after the ReLU on the whole start image (the middle of [-1, 1]
    # plus small noise), and so is its gradient; for an nn.ReLU the redirected gradient pushes the sum up until the
    # channel fires (largest possible mean: 2), another module stays where it started
    net = nn.Sequential(nn.Conv2d(3, 2, 1), relu()).eval()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(-1.0)
    low, high = torch.full((3,), -1.0), torch.full((3,), 1.0)
    config = ActivationMaxConfig(steps=24, noise=0.05)
    images, start = maximize_channels(net, "1", torch.tensor([0]), (3, 8, 8), low, high, config)
    with torch.no_grad():
        assert net(start).max() == 0
        if relu is nn.ReLU:
            assert net(images)[0, 0].mean() > 0.2  # 0.42 measured
        else:
            assert torch.equal(images, start)


def test_one_channel_inputs_get_no_colour_mixing() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1)).eval()
    low, high = torch.tensor([-1.0]), torch.tensor([1.0])
    images, _ = maximize_channels(net, "0", torch.tensor([0, 3]), (1, 8, 8), low, high, ActivationMaxConfig(steps=4))
    assert images.shape == (2, 1, 8, 8) and images.abs().max() <= 1
    config = ActivationMaxConfig(steps=4, decorrelate=False)
    plain, _ = maximize_channels(net, "0", torch.tensor([0, 3]), (1, 8, 8), low, high, config)
    assert torch.equal(images, plain)


def test_trained_channels_are_excited_far_beyond_the_probe() -> None:
    """Measured over seeds 0-4 (benchmarks/activation_max.md has the full run): each of these relu3 channels ends
    at 3.1 to 10 times its best probe image's mean activation with the default config; the bound is half the least."""
    net = trained_shapes_net().eval()
    mean, std = torch.tensor(SHAPES_MEAN), torch.tensor(SHAPES_STD)
    probe = torch.stack([Shapes(16, seed=5)[i][0] for i in range(16)])

    def channel_means(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return forward_until(net, images, {"relu3": net.relu3})["relu3"].mean(dim=(2, 3))

    best, channels = channel_means(probe).amax(dim=0).topk(4)
    images, _ = maximize_channels(net, "relu3", channels, (3, 64, 64), -mean / std, (1 - mean) / std)
    reached = channel_means(images)[torch.arange(4), channels]
    assert torch.all(reached > 1.5 * best), (reached, best)
    assert all(p.grad is None for p in net.parameters())


# -- argument checks --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"param": "fft"}, "param must be one of ('fourier', 'pixel'), got 'fft'"),
        ({"steps": 0}, "steps must be an int >= 1, got 0"),
        ({"lr": 0.0}, "lr must be > 0 or None, got 0.0"),
        ({"jitter": -1}, "jitter must be an int >= 0, got -1"),
        ({"scale": 1.0}, "scale must lie in [0, 1), got 1.0"),
        ({"rotate": 200.0}, "rotate must lie in [0, 180] degrees, got 200.0"),
    ],
)
def test_config_rejects_bad_values(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ActivationMaxConfig(**options)  # type: ignore[arg-type]


def test_maximize_channels_rejects_bad_shapes() -> None:
    net, ok = _small_net(), torch.tensor([0])
    with pytest.raises(
        ValueError, match=r"channels must be an integer tensor of shape \(K,\), got torch.float32 \(1,\)"
    ):
        maximize_channels(net, "2", torch.tensor([0.0]), (3, 8, 8), LOW, HIGH)
    with pytest.raises(ValueError, match=r"image_shape must be \(C, H, W\) of positive ints, got \(3, 8\)"):
        maximize_channels(net, "2", ok, (3, 8), LOW, HIGH)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"low must have shape \(3,\), got \(2,\)"):
        maximize_channels(net, "2", ok, (3, 8, 8), LOW[:2], HIGH)
    with pytest.raises(ValueError, match=r"low must be below high in every channel, got low \[1.0, 1.0, 1.0\]"):
        maximize_channels(net, "2", ok, (3, 8, 8), torch.ones(3), HIGH)
    with pytest.raises(ValueError, match=r"colour_images must have shape \(N, 3, H, W\), got \(2, 1, 8, 8\)"):
        maximize_channels(net, "2", ok, (3, 8, 8), LOW, HIGH, colour_images=torch.zeros(2, 1, 8, 8))


def test_fourier_images_and_colour_matrix_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"spectrum must have shape \(N, C, 8, 5, 2\), got \(1, 3, 8, 8, 2\)"):
        fourier_images(torch.zeros(1, 3, 8, 8, 2), (8, 8), torch.eye(3), LOW, HIGH)
    with pytest.raises(ValueError, match=r"colour must have shape \(3, 3\), got \(2, 2\)"):
        fourier_images(torch.zeros(1, 3, 8, 5, 2), (8, 8), torch.eye(2), LOW, HIGH)
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\) with N\*H\*W >= 2, got \(3, 8, 8\)"):
        colour_matrix(torch.zeros(3, 8, 8), LOW, HIGH)
