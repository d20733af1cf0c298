"""First-layer kernel diagnostics, from the weights alone (nearly free).

Zeiler & Fergus (2014, Sec. 5.1) saw AlexNet's 11x11 stride-4 first layer mix "extremely high and low frequency
information, with little coverage of the mid frequencies", with dead filters; 7x7 stride 2 fixed it. These
functions put numbers on what they looked at: the spectral content of each filter, how smooth it is compared with
noise, and whether filters are dead or dominate the layer (their Fig. 6: filters past RMS 0.1 were renormalised).

Whether the kernel's size fits what it learns: how much of the learned energy sits on the kernel's rim
(:func:`rim_share`), the window that holds most of it (:func:`energy_window`), and the pixels a kernel smaller than
its stride never sees (:func:`coverage_gap`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "BANDS",
    "band_energies",
    "coverage_gap",
    "dead_filters",
    "dominance",
    "dominant_band_shares",
    "energy_window",
    "filter_rms",
    "filter_spectra",
    "kernel_energy",
    "rim_share",
    "smoothness_index",
]

# Radial frequency bands in cycles per pixel: low < 1/8 <= mid < 1/4 <= high (Nyquist is 1/2).
BANDS = ("low", "mid", "high")
_EDGES = (1 / 8, 1 / 4)


def _check(weight: Tensor) -> Tensor:
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape (out, in, kh, kw), got {tuple(weight.shape)}")
    return weight.detach().double()


def _band_index(size: int, device: torch.device) -> Tensor:
    f = torch.fft.fftfreq(size, device=device, dtype=torch.float64)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    band = torch.zeros_like(radius, dtype=torch.long)
    band[radius >= _EDGES[0]] = 1
    band[radius >= _EDGES[1]] = 2
    band[0, 0] = -1  # the mean (DC) belongs to no band: a filter's offset is not a frequency
    return band


def _filter_power(weight: Tensor, size: int) -> Tensor:
    """Each filter's DFT power, zero-padded to ``size`` x ``size`` and summed over input channels: Tensor of shape
    (out, size, size), zero frequency at index 0. |X|^2 as real^2 + imag^2 (ten times faster than abs()^2)."""
    spectrum = torch.fft.fft2(weight, s=(size, size))
    power: Tensor = (spectrum.real.square() + spectrum.imag.square()).sum(dim=1)
    return power


def filter_spectra(weight: Tensor, size: int) -> Tensor:
    """Amplitude spectra of convolution filters: each filter's 2-D DFT zero-padded to ``size`` x ``size``, power
    summed over input channels, square-rooted, zero frequency in the centre (index ``size // 2``). Tensor of
    shape (out, size, size), float32."""
    centred: Tensor = torch.fft.fftshift(_filter_power(_check(weight), size), dim=(-2, -1))
    return centred.sqrt().float()


def band_energies(weight: Tensor, size: int = 64) -> Tensor:
    """Share of each filter's spectral energy in the low, mid and high radial bands.

    Each filter's 2-D DFT is taken zero-padded to ``size`` x ``size`` and its power summed over input channels;
    the mean (DC) term is left out.

    Args:
        weight: convolution weights, Tensor of shape (out, in, kh, kw).
        size: DFT size (a finer frequency grid than the kernel's own).

    Returns:
        Tensor of shape (out, 3), float64, rows summing to 1 (a filter with no energy outside DC gets zeros).

    Example: white-noise filters have the band shares of the frequency plane's area (about 0.05, 0.15, 0.80 at
    size 64); a Gaussian blob of width 2 px is almost all low band.
    """
    w = _check(weight)
    power = _filter_power(w, size)
    band = _band_index(size, w.device)
    energies = torch.stack([power[:, band == b].sum(dim=1) for b in range(3)], dim=1)
    total = energies.sum(dim=1, keepdim=True)
    return torch.where(total > 0, energies / total.clamp_min(1e-300), torch.zeros_like(energies))


def dominant_band_shares(weight: Tensor, size: int = 64, energies: Tensor | None = None) -> Tensor:
    """Fraction of filters whose largest band (of :func:`band_energies`) is low, mid and high: Tensor of shape (3,).

    ZF's symptom of a too-large first-layer kernel and stride is many low and many high filters, few mid ones.
    ``energies``: ``band_energies(weight, size)`` when already computed."""
    dominant = (band_energies(weight, size) if energies is None else energies).argmax(dim=1)
    return torch.bincount(dominant, minlength=3).double() / len(dominant)


def smoothness_index(weight: Tensor) -> Tensor:
    """SI = 1 - D / D_noise per filter: how much smoother than noise a filter is.

    D = sum |grad w|^2 / sum |w|^2 with forward differences along both axes (all input channels), and
    D_noise = 4 (k - 1) / k is D's expected value for i.i.d. noise of a k x k kernel. SI is about 0 for noise
    (as at initialisation), 1 for a constant filter, and negative for a checkerboard.

    Returns:
        Tensor of shape (out,), float64.
    """
    w = _check(weight)
    k_h, k_w = w.shape[-2:]
    if k_h != k_w or k_h < 2:
        raise ValueError(f"smoothness_index needs square kernels of size >= 2, got {k_h}x{k_w}")
    dy = (w[..., 1:, :] - w[..., :-1, :]).pow(2).flatten(1).sum(dim=1)
    dx = (w[..., :, 1:] - w[..., :, :-1]).pow(2).flatten(1).sum(dim=1)
    d = (dy + dx) / w.pow(2).flatten(1).sum(dim=1).clamp_min(1e-300)
    return 1 - d / (4 * (k_h - 1) / k_h)


def filter_rms(weight: Tensor) -> Tensor:
    """Root mean square of each filter's weights: Tensor of shape (out,), float64."""
    return _check(weight).flatten(1).pow(2).mean(dim=1).sqrt()


def dead_filters(weight: Tensor, ratio: float = 0.1) -> Tensor:
    """Filters whose RMS is below ``ratio`` times the layer's median RMS: bool Tensor of shape (out,)."""
    rms = filter_rms(weight)
    return rms < ratio * rms.median()


def dominance(weight: Tensor) -> float:
    """Largest filter RMS over the median filter RMS (ZF Fig. 6: a few filters dominating the layer)."""
    rms = filter_rms(weight)
    return float(rms.max() / rms.median().clamp_min(1e-300))


def coverage_gap(kernel: int, stride: int) -> float:
    """Share of input pixels that no window of a ``kernel`` x ``kernel`` convolution at ``stride`` covers:
    1 - (min(k, s) / s)^2; 0 whenever the kernel is at least as large as the stride (1x1 at stride 2: 0.75).

    Raises:
        ValueError: unless kernel and stride are positive.
    """
    if kernel < 1 or stride < 1:
        raise ValueError(f"need a positive kernel and stride, got kernel {kernel}, stride {stride}")
    return 1.0 - (min(kernel, stride) / stride) ** 2


def _position_energy(weight: Tensor) -> Tensor:
    """The filters' energy at each kernel position, summed over filters and input channels: Tensor (kh, kw)."""
    return _check(weight).pow(2).sum(dim=(0, 1))


def kernel_energy(weight: Tensor) -> Tensor:
    """The filters' energy at each kernel position, summed over filters and input channels, as a share of the
    total: Tensor of shape (kh, kw) summing to 1 (zeros for all-zero weights)."""
    energy = _position_energy(weight)
    total = energy.sum()
    return (energy / total if total > 0 else energy).float()


def _ring_energies(weight: Tensor) -> Tensor:
    """Energy per concentric square ring of the kernel, outermost first: Tensor of shape (ceil(k / 2),)."""
    w = _check(weight)
    k_h, k_w = w.shape[-2:]
    if k_h != k_w:
        raise ValueError(f"need square kernels, got {k_h}x{k_w}")
    k = k_h
    index = torch.arange(k, device=w.device)
    depth = torch.minimum(index, k - 1 - index)  # distance from the kernel's edge: 0 on the outermost ring
    ring = torch.minimum(depth[:, None], depth[None, :])
    energy = _position_energy(w)
    return torch.stack([energy[ring == r].sum() for r in range((k + 1) // 2)])


def rim_share(weight: Tensor) -> float:
    """Share of the filters' energy on the kernel's outermost ring, over the ring's share of the kernel's area.

    1 when the energy is spread evenly over the kernel (as at initialisation, or for noise); below 1 when the
    filters keep their energy in the centre and leave the rim unused; above 1 when it piles up at the edge. Applied
    to the learned part of the weights (now minus initial), it says how much of the kernel training has used.

    Args:
        weight: convolution weights, Tensor of shape (out, in, k, k), k >= 3.

    Returns:
        A float >= 0 (NaN for all-zero weights).
    """
    k = weight.shape[-1]
    if k < 3:
        raise ValueError(f"rim_share needs kernels of size >= 3, got {k}x{k}")
    rings = _ring_energies(weight)
    area = (k * k - (k - 2) ** 2) / (k * k)
    return float(rings[0] / rings.sum() / area) if rings.sum() > 0 else float("nan")


def energy_window(weight: Tensor, share: float = 0.9) -> int:
    """Side of the smallest centred square window (same parity as the kernel) that holds ``share`` of the
    filters' energy: the kernel size the filters use. Equal to the kernel size when the rim is needed."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    rings = _ring_energies(weight)
    k = weight.shape[-1]
    total = float(rings.sum())
    if total == 0:
        return k
    inner = torch.cumsum(rings.flip(0), dim=0) / total  # energy within the innermost 1, 2, ... rings
    rings_needed = int((inner < share - 1e-12).sum()) + 1
    return min(k, 2 * rings_needed - (k % 2))
