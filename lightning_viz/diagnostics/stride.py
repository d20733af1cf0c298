"""Stride diagnostics: is the first layer's sampling aliasing?

- Uneven overlap (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts", Distill): when the stride s does
  not divide the kernel size k, input positions are covered by ceil(k/s) or floor(k/s) windows, an uneven grid.
- Lattice-peak ratio of deconvnet projections: a stride-s layer imprints a period-s pattern on what is projected
  through it (ZF Fig. 6 shows the resulting "aliasing artifacts"): spectral power at the lattice frequencies
  (i/s, j/s) against the power around them.
- Shift consistency (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): how much the output
  distribution moves when the input shifts by a few pixels, as a total variation distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["lattice_peak_ratio", "shift_consistency", "uneven_overlap"]


def uneven_overlap(kernel: int, stride: int) -> float:
    """(ceil(k/s) / floor(k/s))^2, or 1 when s divides k: 11/4 -> 2.25, 7/2 -> 1.78, 3/1 -> 1.

    Raises:
        ValueError: unless 1 <= stride <= kernel.
    """
    if not 1 <= stride <= kernel:
        raise ValueError(f"need 1 <= stride <= kernel, got kernel {kernel}, stride {stride}")
    return (math.ceil(kernel / stride) / (kernel // stride)) ** 2


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
