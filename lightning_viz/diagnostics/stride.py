"""Stride diagnostics: is the first layer's sampling aliasing?

- Uneven overlap (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts", Distill): when the stride s does
  not divide the kernel size k, input positions are covered by ceil(k/s) or floor(k/s) windows, an uneven grid.
- Lattice-peak ratio of deconvnet projections: a stride-s layer imprints a period-s pattern on what is projected
  through it (ZF Fig. 6 shows the resulting "aliasing artifacts"): spectral power at the lattice frequencies
  (i/s, j/s) against the power around them.
- Shift consistency (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): how much the output
  distribution moves when the input shifts by a few pixels, as a total variation distance.
- Alias fraction: the share of a strided convolution's response (on real images) at frequencies above the Nyquist
  limit of its output grid, which subsampling folds back onto lower frequencies (Azulay & Weiss 2019, "Why do deep
  convolutional networks generalize so poorly to small image transformations?").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["alias_fraction", "lattice_peak_ratio", "shift_consistency", "uneven_overlap"]


def uneven_overlap(kernel: int, stride: int) -> float:
    """(ceil(k/s) / floor(k/s))^2, or 1 when s divides k: 11/4 -> 2.25, 7/2 -> 1.78, 3/1 -> 1; infinite when the
    stride exceeds the kernel (some pixels are covered by no window: see
    :func:`~lightning_viz.diagnostics.coverage_gap`).

    Raises:
        ValueError: unless kernel and stride are positive.
    """
    if kernel < 1 or stride < 1:
        raise ValueError(f"need a positive kernel and stride, got kernel {kernel}, stride {stride}")
    if stride > kernel:
        return math.inf
    return (math.ceil(kernel / stride) / (kernel // stride)) ** 2


def alias_fraction(conv: nn.Conv2d, images: Tensor, weight: Tensor | None = None) -> float:
    """Share of a strided convolution's response power that its stride folds back (aliases).

    The convolution is applied at stride 1 (bias left out, each channel's mean removed) to the images, and the power
    spectrum summed over images and channels; the alias fraction is the share of that power at frequencies beyond
    the Nyquist limit 1/(2s) of the stride-s output grid along either axis. 0 at stride 1; for filters that do not
    low-pass their input it approaches the input's own share of power up there; a filter that follows a fine
    pattern the stride cannot carry drives it up.

    Args:
        conv: the convolution (its padding, dilation and groups are used, its stride defines the limit).
        images: its input, Tensor of shape (N, C, H, W).
        weight: weights to use instead of ``conv.weight``, for example the learned part ``weight - initial``.

    Returns:
        A float in [0, 1] (NaN when the response has no power).
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    stride = conv.stride[0]
    w = conv.weight if weight is None else weight
    with torch.no_grad():
        padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        response = F.conv2d(images.to(w.dtype), w.detach(), None, 1, padding, conv.dilation, conv.groups).double()
    if stride == 1:
        return 0.0
    response = response - response.mean(dim=(2, 3), keepdim=True)
    power = torch.fft.fft2(response).abs().pow(2).sum(dim=(0, 1))
    h, w_ = power.shape
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=power.device).abs()
    fx = torch.fft.fftfreq(w_, dtype=torch.float64, device=power.device).abs()
    limit = 1 / (2 * stride) + 1e-12
    beyond = (fy[:, None] > limit) | (fx[None, :] > limit)
    total = power.sum()
    return float(power[beyond].sum() / total) if total > 0 else float("nan")


def lattice_peak_ratio(images: Tensor, stride: int, ring: int = 2) -> float:
    """log10 of the mean power at the stride lattice frequencies over the mean power of the ring around them.

    The power spectrum is averaged over images and channels; the lattice frequencies are (i/s, j/s), i, j in
    0..s-1, DC excluded; the ring is every bin within ``ring`` bins of a lattice bin that is not itself one.

    Args:
        images: projections (or any images), Tensor of shape (N, C, H, W); H and W divisible by ``stride``.
        stride: the layer's stride.
        ring: the ring's half width, in frequency bins.

    Returns:
        A float: about 0 with no lattice, large when a period-``stride`` pattern dominates; 0 for stride 1.
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if stride == 1:
        return 0.0
    if h % stride or w % stride:
        raise ValueError(f"image size {h}x{w} must be divisible by the stride {stride}")
    x = images.detach().double()
    x = x - x.mean(dim=(2, 3), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).mean(dim=(0, 1))
    lattice = torch.zeros(h, w, dtype=torch.bool)
    lattice[:: h // stride, :: w // stride] = True
    lattice[0, 0] = False
    near = torch.zeros_like(lattice)
    for dy in range(-ring, ring + 1):
        for dx in range(-ring, ring + 1):
            near |= torch.roll(lattice, shifts=(dy, dx), dims=(0, 1))
    near &= ~lattice
    near[0, 0] = False
    peak, around = power[lattice].mean(), power[near].mean()
    return float(torch.log10(peak.clamp_min(1e-300) / around.clamp_min(1e-300)))


def shift_consistency(model: nn.Module, images: Tensor, shifts: Sequence[int] = (1, 2, 3)) -> float:
    """Mean total variation distance between the softmax outputs for an image and the image shifted by a few
    pixels (circularly, along each axis in both directions). 0 for a perfectly shift-invariant classifier.

    Args:
        model: a classifier returning logits; run as it is (put it in eval mode first).
        images: Tensor of shape (N, C, H, W).
        shifts: shift sizes in pixels.

    Returns:
        The mean over images and shifts, in [0, 1].
    """
    with torch.no_grad():
        reference = torch.softmax(model(images.clone()).double(), dim=1)
        distances = []
        for size in shifts:
            for dy, dx in ((size, 0), (-size, 0), (0, size), (0, -size)):
                moved = torch.softmax(model(torch.roll(images, shifts=(dy, dx), dims=(2, 3))).double(), dim=1)
                distances.append(0.5 * (moved - reference).abs().sum(dim=1))
    return float(torch.stack(distances).mean())
