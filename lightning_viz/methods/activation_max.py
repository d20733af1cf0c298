"""Activation maximisation: an input optimised to excite one channel (Erhan et al. 2009, "Visualizing Higher-Layer
Features of a Deep Network"), in one of two parameterisations (``ActivationMaxConfig.param``):

- ``"fourier"``, the default: the feature visualisation of Olah et al. 2017 ("Feature Visualization", Distill) as
  lucid and torch-lucent implement it (``param.fft_image`` and ``to_valid_rgb(decorrelate=True)``). The image's
  spectrum is optimised, each coefficient scaled by 1/frequency so that a step of the optimiser moves low and high
  frequencies alike (pixel gradients favour high frequencies, the colour texture that pixel-space results show);
  the colours are decorrelated by the square root of the colour covariance (estimated from example images when
  given, otherwise lucid's ImageNet matrix); a sigmoid maps the result into the valid pixel range. Every step sees
  a randomly jittered, scaled and rotated copy of the images (transformation robustness), so that only patterns
  that survive these small changes grow. The start is 1/f noise; where the objective's layer is an ``nn.ReLU``, an
  image whose channel is silent everywhere follows the gradient of the ReLU's input instead of a zero one (lucid's
  redirected ReLU gradient), so that a channel the start does not excite still grows.
- ``"pixel"``: the pixels themselves, with random jitter by a few pixels (Mordvintsev et al. 2015,
  "Inceptionism"), a total-variation penalty (Mahendran & Vedaldi 2015, "Understanding Deep Image Representations
  by Inverting Them"), an L2 penalty and a box constraint to the valid range (Simonyan et al. 2014; Yosinski et al.
  2015).

All channels are optimised together, one image per channel, in one batch, from one start and with one random
transformation per step for the whole batch: each image's objective depends on its own image only (eval mode), so
the batch gives the same result as one channel at a time. Randomness comes from a local ``torch.Generator`` seeded
with ``config.seed``, never the global one. Gradients are taken with ``torch.autograd.grad`` with respect to the
image parameters; the model's parameters get no ``.grad``.

The comparison with torch-lucent on a trained network, and the pictures: ``benchmarks/activation_max.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_viz.methods._hooks import forward_until
from lightning_viz.methods._layers import resolve_layer

__all__ = [
    "IMAGENET_COLOUR_SQRT",
    "ActivationMaxConfig",
    "colour_matrix",
    "fourier_images",
    "maximize_channels",
    "total_variation",
]

# lucid's square root of ImageNet's RGB colour covariance (lucid/optvis/param/color.py, also in torch-lucent): the
# fallback colour decorrelation for 3-channel inputs when no example images are given
IMAGENET_COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])

_PARAMS = ("fourier", "pixel")
_DEFAULT_LR = {"fourier": 0.2, "pixel": 0.1}


@dataclass(frozen=True)
class ActivationMaxConfig:
    """Optimisation settings.

    ``param`` chooses the parameterisation (see the module docstring); ``steps`` Adam steps of size ``lr`` (None:
    the parameterisation's default, 0.2 for ``"fourier"``, 0.1 for ``"pixel"``); ``noise`` the start's standard
    deviation as a fraction of the half range, around the middle of the range (``"fourier"``: 1/f noise, measured
    before the sigmoid); ``seed`` seeds the start and the random transformations. How the defaults were chosen:
    ``benchmarks/activation_max.md``.

    ``"fourier"``: each step the images are shifted by up to ``jitter`` pixels, scaled by a factor in
    [1 - ``scale``, 1 + ``scale``] and rotated by up to ``rotate`` degrees, all three drawn uniformly (bilinear
    resampling; what moves in from outside is the middle of the valid range); ``decorrelate`` turns the colour
    decorrelation on.

    ``"pixel"``: each step the images are rolled by up to ``jitter`` pixels; penalty weights ``tv`` and ``l2``.
    """

    param: str = "fourier"
    steps: int = 64
    lr: float | None = None
    jitter: int = 3
    scale: float = 0.1
    rotate: float = 10.0
    decorrelate: bool = True
    tv: float = 0.1
    l2: float = 1e-3
    noise: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.param not in _PARAMS:
            raise ValueError(f"param must be one of {_PARAMS}, got {self.param!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {self.steps!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0 or None, got {self.lr!r}")
        if not isinstance(self.jitter, int) or isinstance(self.jitter, bool) or self.jitter < 0:
            raise ValueError(f"jitter must be an int >= 0, got {self.jitter!r}")
        if not 0 <= self.scale < 1:
            raise ValueError(f"scale must lie in [0, 1), got {self.scale!r}")
        if not 0 <= self.rotate <= 180:
            raise ValueError(f"rotate must lie in [0, 180] degrees, got {self.rotate!r}")

    @property
    def step_size(self) -> float:
        """``lr``, or the parameterisation's default when ``lr`` is None."""
        return _DEFAULT_LR[self.param] if self.lr is None else self.lr


def total_variation(images: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels, per image: Tensor of shape (N,)."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(dim=1)
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(dim=1)
    return dy + dx


def _check_range(low: Tensor, high: Tensor, channels: int) -> None:
    for name, value in (("low", low), ("high", high)):
        if value.shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},), got {tuple(value.shape)}")
    if not torch.all(low < high):
        raise ValueError(f"low must be below high in every channel, got low {low.tolist()}, high {high.tolist()}")


def colour_matrix(images: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """The symmetric square root of the colour covariance of ``images``: Tensor of shape (C, C), ``M @ M`` the
    covariance of the channels over all pixels, each channel first mapped from [low, high] to [0, 1].

    Args:
        images: Tensor of shape (N, C, H, W) in the model's input space.
        low: Tensor of shape (C,): the smallest valid value of each channel.
        high: Tensor of shape (C,): the largest.

    Returns:
        The matrix, float64 on the CPU (eigenvalues below zero from rounding count as zero).

    Raises:
        ValueError: if ``images`` is not 4-D with at least two pixels, or ``low``/``high`` do not fit it.
    """
    if images.dim() != 4 or images.shape[0] * images.shape[2] * images.shape[3] < 2:
        raise ValueError(f"images must have shape (N, C, H, W) with N*H*W >= 2, got {tuple(images.shape)}")
    c = images.shape[1]
    low, high = low.detach().double().cpu(), high.detach().double().cpu()
    _check_range(low, high, c)
    unit = (images.detach().double().cpu() - low[:, None, None]) / (high - low)[:, None, None]
    flat = unit.transpose(0, 1).reshape(c, -1)
    values, vectors = torch.linalg.eigh(torch.cov(flat).reshape(c, c))
    root: Tensor = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    return root


def _frequency_scale(h: int, w: int) -> Tensor:
    """1 / radial frequency (cycles per pixel) of each coefficient of an ``rfft2`` spectrum of an (h, w) image,
    the constant term given the lowest frequency's weight: Tensor of shape (h, w // 2 + 1)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    scale: Tensor = 1.0 / (fx**2 + fy**2).sqrt().clamp_min(1.0 / max(h, w))
    return scale


def _spatial(spectrum: Tensor, h: int, w: int) -> Tensor:
    """``irfft2(spectrum / f) / 4``: the images before colour mixing and sigmoid, Tensor of shape (N, C, H, W)."""
    scale = _frequency_scale(h, w).to(spectrum.device, spectrum.dtype)
    plain: Tensor = torch.fft.irfft2(torch.view_as_complex(spectrum.contiguous()) * scale, s=(h, w), norm="ortho")
    return plain / 4


def fourier_images(spectrum: Tensor, size: tuple[int, int], colour: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Images from their scaled spectrum, decorrelated colours and a sigmoid into the valid range, as lucid's
    ``fft_image`` and ``to_valid_rgb``: pixel ``low + (high - low) * sigmoid(colour @ irfft2(spectrum / f) / 4)``,
    with ``f`` the radial frequency and ``colour`` normalised to a largest column norm of 1 (the 4 is lucid's).

    Args:
        spectrum: Tensor of shape (N, C, H, W // 2 + 1, 2): real and imaginary parts.
        size: (H, W) of the images.
        colour: Tensor of shape (C, C): the colour decorrelation (the identity: none).
        low: Tensor of shape (C,): the smallest valid value of each channel.
        high: Tensor of shape (C,): the largest.

    Returns:
        Tensor of shape (N, C, H, W), values in [low, high] per channel; a zero spectrum gives the middle.
    """
    h, w = size
    if spectrum.dim() != 5 or spectrum.shape[2:] != (h, w // 2 + 1, 2):
        raise ValueError(f"spectrum must have shape (N, C, {h}, {w // 2 + 1}, 2), got {tuple(spectrum.shape)}")
    c = spectrum.shape[1]
    if colour.shape != (c, c):
        raise ValueError(f"colour must have shape ({c}, {c}), got {tuple(colour.shape)}")
    plain = _spatial(spectrum, h, w)
    normalised = colour / torch.linalg.vector_norm(colour, dim=0).amax().clamp_min(1e-12)
    mixed = torch.einsum("ij,njhw->nihw", normalised.to(plain), plain)
    low_ = low.to(plain).view(1, c, 1, 1)
    return low_ + (high.to(plain).view(1, c, 1, 1) - low_) * torch.sigmoid(mixed)


def _affine(draw: Tensor, config: ActivationMaxConfig, h: int, w: int) -> Tensor:
    """The (2, 3) ``affine_grid`` matrix of one random shift, scale and rotation, from four uniform [0, 1) draws."""
    dy, dx = ((2 * draw[:2] - 1) * (config.jitter + 0.5)).round().clamp(-config.jitter, config.jitter).tolist()
    factor = 1 + config.scale * (2 * float(draw[2]) - 1)
    angle = math.radians(config.rotate * (2 * float(draw[3]) - 1))
    cos, sin = math.cos(angle) / factor, math.sin(angle) / factor
    # pixel-space rotation and scale about the centre, in affine_grid's coordinates ([-1, 1] along each side)
    return torch.tensor([[cos, -sin * h / w, 2 * dx / w], [sin * w / h, cos, 2 * dy / h]], dtype=torch.float64)


def _transformed(images: Tensor, theta: Tensor, middle: Tensor) -> Tensor:
    """``images`` resampled through ``theta`` (one matrix for the batch), the middle of the range outside."""
    grid = F.affine_grid(theta.to(images)[None].expand(len(images), -1, -1), list(images.shape), align_corners=False)
    return F.grid_sample(images - middle, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + middle


def _channel_means(
    model: nn.Module, images: Tensor, name: str, module: nn.Module, rows: Tensor, channels: Tensor, redirect: bool
) -> Tensor:
    """Image i's mean activation of ``channels[i]`` in the layer: Tensor of shape (N,). With ``redirect`` (the
    layer an ``nn.ReLU``), an image whose channel is zero everywhere, where the gradient is zero too, gets the mean
    of the ReLU's input instead, so that it moves towards activating the channel: lucid's redirected ReLU gradient
    (``relu_gradient_override``), for the objective's layer only."""
    inputs: list[Tensor] = []
    handle = module.register_forward_pre_hook(lambda _, args: inputs.append(args[0].clone())) if redirect else None
    try:
        act = forward_until(model, images, {name: module})[name][rows, channels].flatten(1)
    finally:
        if handle is not None:
            handle.remove()
    if not inputs:
        return act.mean(dim=1)
    before = inputs[0][rows, channels].flatten(1).mean(dim=1)
    return torch.where(act.amax(dim=1) > 0, act.mean(dim=1), before)


def maximize_channels(
    model: nn.Module,
    layer: str | nn.Module,
    channels: Tensor,
    image_shape: tuple[int, int, int],
    low: Tensor,
    high: Tensor,
    config: ActivationMaxConfig = ActivationMaxConfig(),
    *,
    colour_images: Tensor | None = None,
    on_step: Callable[[int, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Optimise one image per channel to maximise that channel's mean activation in ``layer``.

    Args:
        model: the network, usually in eval mode (see :func:`~lightning_viz.methods.isolated`).
        layer: the layer, by dotted name or module.
        channels: integer tensor of shape (K,): the channel each image maximises.
        image_shape: (C, H, W) of an input image.
        low: Tensor of shape (C,): the smallest valid (normalised) value of each input channel.
        high: Tensor of shape (C,): the largest.
        config: the optimisation settings.
        colour_images: ``"fourier"`` only: images (N, C, H', W') in the model's input space whose colour covariance
            the decorrelation uses (:func:`colour_matrix`, e.g. the probe batch). None: lucid's ImageNet matrix
            for 3 channels, no decorrelation otherwise.
        on_step: called after each step with the step (1 to ``config.steps``) and the images as they are then,
            detached (to follow the optimisation; costs one more rendering per step).

    Returns:
        The images, Tensor of shape (K, C, H, W) in the model's input space, values in [low, high] per channel,
        and the start images (for ``"pixel"`` the start noise, for ``"fourier"`` the images of the start spectrum),
        Tensor of the same shape.

    Raises:
        ValueError: if ``channels``, ``image_shape``, ``low``, ``high`` or ``colour_images`` have the wrong shape.
    """
    if channels.dim() != 1 or channels.dtype.is_floating_point or channels.dtype == torch.bool:
        raise ValueError(
            f"channels must be an integer tensor of shape (K,), got {channels.dtype} {tuple(channels.shape)}"
        )
    if len(image_shape) != 3 or not all(isinstance(n, int) and n >= 1 for n in image_shape):
        raise ValueError(f"image_shape must be (C, H, W) of positive ints, got {image_shape!r}")
    k, (c, h, w) = len(channels), image_shape
    _check_range(low, high, c)
    if colour_images is not None and (colour_images.dim() != 4 or colour_images.shape[1] != c):
        raise ValueError(f"colour_images must have shape (N, {c}, H, W), got {tuple(colour_images.shape)}")
    name, module = resolve_layer(model, layer)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    generator = torch.Generator().manual_seed(config.seed)
    low_ = low.to(device, dtype).view(1, c, 1, 1)
    high_ = high.to(device, dtype).view(1, c, 1, 1)
    middle, half = (low_ + high_) / 2, (high_ - low_) / 2

    render: Callable[[], Tensor]
    transform: Callable[[Tensor, int], Tensor]
    penalty: Callable[[Tensor], Tensor]
    if config.param == "pixel":
        start = torch.randn(1, c, h, w, generator=generator).to(device, dtype)
        variable = (middle + config.noise * half * start).clamp(low_, high_).expand(k, -1, -1, -1).clone()
        shifts = torch.randint(-config.jitter, config.jitter + 1, (config.steps, 2), generator=generator).tolist()

        def render() -> Tensor:
            return variable

        def transform(images: Tensor, step: int) -> Tensor:
            return torch.roll(images, shifts=tuple(shifts[step - 1]), dims=(2, 3))

        def penalty(images: Tensor) -> Tensor:
            tv = config.tv * total_variation(images)
            return tv + config.l2 * ((images - middle) / half).pow(2).flatten(1).mean(1)

    else:
        if not config.decorrelate or (colour_images is None and c != 3):
            colour = torch.eye(c, device=device, dtype=dtype)
        elif colour_images is None:
            colour = IMAGENET_COLOUR_SQRT.to(device, dtype)
        else:
            colour = colour_matrix(colour_images, low, high).to(device, dtype)
        start = torch.randn(1, c, h, w // 2 + 1, 2, generator=generator, dtype=torch.float64)
        # 1/f noise whose pixels (before the sigmoid, whose slope is 1/4 at 0) deviate by ``noise`` half ranges
        start *= 2 * config.noise / _spatial(start, h, w).pow(2).mean().sqrt().clamp_min(1e-12)
        variable = start.to(device, dtype).expand(k, -1, -1, -1, -1).clone()
        thetas = [_affine(draw, config, h, w) for draw in torch.rand(config.steps, 4, generator=generator)]

        def render() -> Tensor:
            return fourier_images(variable, (h, w), colour, low, high)

        def transform(images: Tensor, step: int) -> Tensor:
            return _transformed(images, thetas[step - 1], middle)

        def penalty(images: Tensor) -> Tensor:
            return images.new_zeros(len(images))

    first = render().detach().clone()
    variable.requires_grad_(True)
    state = {"m": torch.zeros_like(variable), "v": torch.zeros_like(variable)}
    rows, targets = torch.arange(k, device=device), channels.to(device)
    redirect = config.param == "fourier" and isinstance(module, nn.ReLU)
    for step in range(1, config.steps + 1):
        images = render()
        objective = _channel_means(model, transform(images, step), name, module, rows, targets, redirect)
        (grad,) = torch.autograd.grad((objective - penalty(images)).sum(), [variable])
        with torch.no_grad():  # Adam ascent, written out: no optimizer object, nothing else it could touch
            state["m"].mul_(0.9).add_(grad, alpha=0.1)
            state["v"].mul_(0.999).addcmul_(grad, grad, value=0.001)
            m_hat = state["m"] / (1 - 0.9**step)
            v_hat = state["v"] / (1 - 0.999**step)
            variable.add_(config.step_size * m_hat / (v_hat.sqrt() + 1e-8))
            if config.param == "pixel":
                variable.copy_(torch.maximum(torch.minimum(variable, high_), low_))
            if on_step is not None:
                on_step(step, render().detach())
    with torch.no_grad():
        return render().detach(), first
