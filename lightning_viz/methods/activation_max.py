"""Activation maximisation: an input optimised from noise to excite one channel (Erhan et al. 2009,
"Visualizing Higher-Layer Features of a Deep Network"), with the regularisers that make the result readable:

- random jitter of up to a few pixels at every step (Mordvintsev et al. 2015, "Inceptionism"; Olah et al. 2017,
  "Feature Visualization", Distill), so that the image cannot exploit the exact pixel grid;
- a total-variation penalty (Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by Inverting
  Them"), against high-frequency noise;
- an L2 penalty and a box constraint to the valid pixel range (Simonyan et al. 2014; Yosinski et al. 2015),
  so that the image stays a possible input.

All channels are optimised together, one image per channel, in one batch: each image's objective depends on its own
image only (eval mode), so the batch gives the same result as one channel at a time. Gradients are taken with
``torch.autograd.grad`` with respect to the images; parameters get no ``.grad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_viz.methods._hooks import forward_until
from lightning_viz.methods._layers import resolve_layer

__all__ = ["ActivationMaxConfig", "maximize_channels", "total_variation"]


@dataclass(frozen=True)
class ActivationMaxConfig:
    """Optimisation settings. ``steps`` Adam steps of size ``lr`` on images normalised like the training data;
    ``jitter`` pixels of random shift per step; penalty weights ``tv`` and ``l2``; ``low``/``high`` the valid
    range of a normalised pixel (per channel; scalars or sequences); ``noise`` the start noise's standard deviation
    as a fraction of the half range, around the middle of the range."""

    steps: int = 64
    lr: float = 0.1
    jitter: int = 3
    tv: float = 0.1
    l2: float = 1e-3
    noise: float = 0.5
    seed: int = 0


def total_variation(images: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels, per image: Tensor of shape (N,)."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(dim=1)
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(dim=1)
    return dy + dx


def maximize_channels(
    model: nn.Module,
    layer: str | nn.Module,
    channels: Tensor,
    image_shape: tuple[int, int, int],
    low: Tensor,
    high: Tensor,
    config: ActivationMaxConfig = ActivationMaxConfig(),
) -> tuple[Tensor, Tensor]:
    """Optimise one image per channel to maximise that channel's mean activation in ``layer``.

    Args:
        model: the network, usually in eval mode (see :func:`~lightning_viz.methods.isolated`).
        layer: the layer, by dotted name or module.
        channels: long tensor of shape (K,): the channel each image maximises.
        image_shape: (C, H, W) of an input image.
        low: Tensor of shape (C,): the smallest valid (normalised) value of each input channel.
        high: Tensor of shape (C,): the largest.
        config: the optimisation settings.

    Returns:
        The images, Tensor of shape (K, C, H, W) in the model's input space, and the start noise.
    """
    name, module = resolve_layer(model, layer)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    generator = torch.Generator().manual_seed(config.seed)
    k, (c, h, w) = len(channels), image_shape
    low_ = low.to(device, dtype).view(1, c, 1, 1)
    high_ = high.to(device, dtype).view(1, c, 1, 1)
    middle, half = (low_ + high_) / 2, (high_ - low_) / 2
    start = torch.randn(1, c, h, w, generator=generator).to(device, dtype)
    noise = (middle + config.noise * half * start).clamp(low_, high_).expand(k, -1, -1, -1)
    images = noise.clone().requires_grad_(True)
    state = {"m": torch.zeros_like(images), "v": torch.zeros_like(images)}
    rows = torch.arange(k, device=device)
    shifts = torch.randint(-config.jitter, config.jitter + 1, (config.steps, 2), generator=generator).tolist()
    for step, (dy, dx) in enumerate(shifts, start=1):
        shifted = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
        act = forward_until(model, shifted, {name: module})[name]
        objective = act[rows, channels.to(device)].flatten(1).mean(dim=1)
        penalty = config.tv * total_variation(images) + config.l2 * ((images - middle) / half).pow(2).flatten(1).mean(1)
        (grad,) = torch.autograd.grad((objective - penalty).sum(), [images])
        with torch.no_grad():  # Adam ascent, written out: no optimizer object, nothing else it could touch
            state["m"].mul_(0.9).add_(grad, alpha=0.1)
            state["v"].mul_(0.999).addcmul_(grad, grad, value=0.001)
            m_hat = state["m"] / (1 - 0.9**step)
            v_hat = state["v"] / (1 - 0.999**step)
            images.add_(config.lr * m_hat / (v_hat.sqrt() + 1e-8))
            images.copy_(torch.maximum(torch.minimum(images, high_), low_))
    return images.detach(), noise.detach()
