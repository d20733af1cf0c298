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

__all__ = [
    "alias_fraction",
    "alias_fractions",
    "beyond_nyquist",
    "lattice_peak_ratio",
    "nyquist_half_width",
    "shift_consistency",
    "uneven_overlap",
]


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


def nyquist_half_width(size: int, stride: int) -> float:
    """Half the side, in DFT bins of a ``size``-point centred spectrum, of the band a stride passes without
    aliasing: frequencies up to 1 / (2 * stride) cycles per pixel in each direction."""
    return size / (2 * stride)


def beyond_nyquist(spectra: Tensor, stride: int) -> float:
    """Share of the energy of centred amplitude spectra (N, size, size) outside the box of a stride's Nyquist
    limit (energy that the stride folds back onto lower frequencies); 0 for stride 1."""
    size = spectra.shape[-1]
    f = (torch.arange(size) - size // 2).abs().double()
    half = nyquist_half_width(size, stride)
    inside = (f[:, None] <= half) & (f[None, :] <= half)
    power = spectra.double().pow(2).sum(dim=0)
    total = float(power.sum())
    return float(power[~inside].sum()) / total if total > 0 else 0.0


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
    return alias_fractions(conv, images, [weight])[0]


def alias_fractions(conv: nn.Conv2d, images: Tensor, weights: Sequence[Tensor | None]) -> list[float]:
    """:func:`alias_fraction` for several sets of weights (None: ``conv.weight``) in one convolution and one FFT."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    stride = conv.stride[0]
    if stride == 1:
        return [0.0 for _ in weights]
    stacked = torch.cat([(conv.weight if w is None else w).detach() for w in weights])
    groups = conv.groups
    if groups > 1 and len(weights) > 1:  # grouped: the weight sets cannot share one convolution
        return [alias_fractions(conv, images, [w])[0] for w in weights]
    with torch.no_grad():
        padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        # channels-last: oneDNN's direct convolution of a 3-channel input then took a third of the time on a CPU
        last = torch.channels_last
        inputs, stacked = (
            images.to(stacked.dtype).contiguous(memory_format=last),
            stacked.contiguous(memory_format=last),
        )
        response = F.conv2d(inputs, stacked, None, 1, padding, conv.dilation, groups).float().contiguous()
        response = response - response.mean(dim=(2, 3), keepdim=True)
        coefficients = torch.fft.rfft2(response)
        power = coefficients.real.square() + coefficients.imag.square()  # |X|^2 without a square root
    h, w_ = response.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=power.device).abs()
    fx = torch.fft.rfftfreq(w_, dtype=torch.float64, device=power.device)
    limit = 1 / (2 * stride) + 1e-12
    beyond = (fy[:, None] > limit) | (fx[None, :] > limit)
    # the half spectrum counts each column but the first (and the Nyquist column of an even width) twice
    twice = torch.full((w_ // 2 + 1,), 2.0, dtype=torch.float64, device=power.device)
    twice[0] = 1.0
    if w_ % 2 == 0:
        twice[-1] = 1.0
    fractions = []
    for part in torch.split(power, conv.out_channels, dim=1):
        spectrum = part.sum(dim=(0, 1)).double() * twice
        total = spectrum.sum()
        fractions.append(float(spectrum[beyond].sum() / total) if total > 0 else float("nan"))
    return fractions


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


def shift_consistency(
    model: nn.Module, images: Tensor, shifts: Sequence[int] = (1, 2, 3), reference: Tensor | None = None
) -> float:
    """Mean total variation distance between the softmax outputs for an image and the image shifted by a few
    pixels (circularly, along each axis in both directions). 0 for a perfectly shift-invariant classifier.

    All shifted copies go through one batched forward pass.

    Args:
        model: a classifier returning logits; run as it is (put it in eval mode first).
        images: Tensor of shape (N, C, H, W).
        shifts: shift sizes in pixels.
        reference: the model's logits for ``images`` when already at hand (saves their forward pass).

    Returns:
        The mean over images and shifts, in [0, 1].
    """
    moves = [(dy, dx) for size in shifts for dy, dx in ((size, 0), (-size, 0), (0, size), (0, -size))]
    with torch.no_grad():
        if reference is None:
            reference = model(images.clone())
        expected = torch.softmax(reference.detach().double(), dim=1)
        moved = torch.cat([torch.roll(images, shifts=move, dims=(2, 3)) for move in moves])
        outputs = torch.softmax(model(moved).double(), dim=1).view(len(moves), *expected.shape)
        distances = 0.5 * (outputs - expected).abs().sum(dim=2)
    return float(distances.mean())
