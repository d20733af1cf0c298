"""Embedded synthetic dataset ``Shapes``: procedural, seeded, offline.

Every sample is a 64x64 RGB image showing one object (a disk, a square or an equilateral triangle) in front of a
natural-looking 1/f^2 noise background, together with the object's ground-truth mask.

Generation, per image:

* **Background.** White Gaussian noise is drawn in the Fourier domain (equivalent to the FFT of white noise in
  space), multiplied by an amplitude ~ 1/f (f the radial spatial frequency, no DC term) and transformed back, so the
  fields have a power spectrum ~ 1/f^2 like natural images. One complex inverse FFT gives two independent real
  fields: a luminance field L shared by the three channels and a chroma field C applied along a random unit colour
  axis w, i.e. channel c is (L + 0.7 w_c C) / sqrt(1 + 0.49 w_c^2) (unit expected variance). A sum of 1/f^2 fields is
  a 1/f^2 field, so every channel keeps the 1/f^2 spectrum. This is scaled by a random contrast (standard
  deviation in [0.08, 0.16]) and added to a random mean colour in [0.3, 0.7]^3; values are clamped to [0, 1].
* **Object.** Shape type and grating frequency come from the class label. The circumradius is uniform in [9, 15]
  pixels, the rotation uniform in [0, 2 pi), and the centre is uniform over the positions that keep the object at
  least one pixel away from the image border (so the whole object is visible). The object is filled with a
  sinusoidal grating of spatial frequency 1/8 ("coarse") or 1/3 ("fine") cycles per pixel with uniformly random
  orientation and phase: a random mean colour in [0.3, 0.7]^3 plus an achromatic sinusoid of amplitude 0.3, which
  is large compared with the background contrast so the object is clearly visible. Edges are hard (no
  anti-aliasing), so the mask is exactly the set of object pixels.

Images are stored as ``uint8`` (values ``round(255 * x)``) to keep memory low: 6000 images take 74 MB. Everything is
drawn from one ``torch.Generator`` seeded with ``seed``, so the same seed gives bit-identical data.

Example:
    >>> ds = Shapes(size=60, seed=0)
    >>> image, label, mask = ds[0]
    >>> image.shape, label.dtype, mask.shape
    (torch.Size([3, 64, 64]), torch.int64, torch.Size([64, 64]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SHAPES_MEAN", "SHAPES_STD", "Shapes", "ShapesStyle", "denormalize"]

# Per-channel mean/std of the raw images in [0, 1] (after uint8 quantisation), measured once over all pixels of
# Shapes(size=60_000, seed=12345, normalize=False) and rounded to 3 decimals.
SHAPES_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.499)
SHAPES_STD: tuple[float, float, float] = (0.174, 0.175, 0.175)

_IMAGE_SIZE = 64
_CHUNK = 512
_MIN_CROP = 32  # the window an object is rendered in: > 2 * max radius + 1, so it always contains the whole object
_SHAPE_NAMES = ("disk", "square", "triangle")
_FREQUENCY_NAMES = {1.0 / 8.0: "coarse", 1.0 / 3.0: "fine"}
_BORDER = 1.0
_BACKGROUND_MEAN_RANGE = (0.3, 0.7)
_BACKGROUND_CHROMA_WEIGHT = 0.7
_OBJECT_MEAN_RANGE = (0.3, 0.7)
_GRATING_AMPLITUDE = 0.3


@dataclass(frozen=True)
class ShapesStyle:
    """What a variant of :class:`Shapes` draws differently: object sizes, grating frequencies, background contrast.

    The defaults are the embedded dataset's. Variants keep the image size (64 x 64), the three shapes and the
    normalisation constants, so one network can be trained on any of them.

    Args:
        radius_range: Range of the objects' circumradius in pixels; ``1 <= low <= high <= 30``.
        frequencies: Grating frequencies in cycles per pixel, each in (0, 0.5]; one class per shape and frequency.
        background_contrast: Range of the 1/f^2 background's standard deviation, ``0 <= low <= high``.

    Example:
        >>> small_fine = ShapesStyle(radius_range=(5.0, 9.0), frequencies=(1 / 6, 1 / 2.5))
    """

    radius_range: tuple[float, float] = (9.0, 15.0)
    frequencies: tuple[float, ...] = (1.0 / 8.0, 1.0 / 3.0)
    background_contrast: tuple[float, float] = (0.08, 0.16)

    def __post_init__(self) -> None:
        low, high = self.radius_range
        if not 1.0 <= low <= high <= (_IMAGE_SIZE - 4) / 2:
            raise ValueError(f"radius_range must satisfy 1 <= low <= high <= 30, got {self.radius_range!r}")
        if not self.frequencies or any(not 0.0 < f <= 0.5 for f in self.frequencies):
            raise ValueError(f"frequencies must be a non-empty tuple of values in (0, 0.5], got {self.frequencies!r}")
        if not 0.0 <= self.background_contrast[0] <= self.background_contrast[1]:
            raise ValueError(f"background_contrast must satisfy 0 <= low <= high, got {self.background_contrast!r}")

    @property
    def classes(self) -> list[str]:
        """``"<shape>/<frequency>"``: the default frequencies are named coarse and fine, others by their value."""
        names = [_FREQUENCY_NAMES.get(f, f"{f:.3g}cpp") for f in self.frequencies]
        return [f"{shape}/{name}" for shape in _SHAPE_NAMES for name in names]


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    """Draws float32 values uniformly from an interval.

    Args:
        shape: Shape of the result.
        low: Lower bound of the interval.
        high: Upper bound of the interval.
        generator: Source of randomness.

    Returns:
        Tensor of the given shape, values in [low, high).
    """
    return low + (high - low) * torch.rand(shape, generator=generator)


def _pink_noise_pair(n: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Generates two independent Gaussian noise fields per image with a 1/f^2 power spectrum.

    White Gaussian noise is drawn directly in the Fourier domain (equivalent to the FFT of white noise in space),
    multiplied by the amplitude 1/f (f the radial frequency, DC set to 0, normalised so each field has expected
    variance 1) and transformed back with a complex inverse FFT. The real and imaginary parts of the result are two
    independent real fields with power spectrum ~ 1/f^2.

    Args:
        n: Number of images.
        size: Height and width of each field in pixels.
        generator: Source of randomness.

    Returns:
        Two tensors of shape (n, 1, size, size), float32, each with spatial mean exactly 0 and expected variance 1.
    """
    white = torch.view_as_complex(torch.randn((n, 1, size, size, 2), generator=generator))
    freq = torch.fft.fftfreq(size)
    radial = torch.sqrt(freq.view(-1, 1) ** 2 + freq.view(1, -1) ** 2)
    amplitude = 1.0 / radial.clamp_min(1.0 / size)  # power ~ 1/f^2
    amplitude[0, 0] = 0.0  # no DC component
    amplitude /= amplitude.square().sum().sqrt()  # unit expected variance of the real and imaginary parts
    field = torch.fft.ifft2(white.mul_(amplitude), norm="forward")
    return field.real, field.imag


def _background(n: int, size: int, contrast_range: tuple[float, float], generator: torch.Generator) -> Tensor:
    """Generates coloured 1/f^2 noise backgrounds (see the module docstring), not clamped.

    Args:
        n: Number of images.
        size: Height and width of each image in pixels.
        contrast_range: Range of the background's standard deviation.
        generator: Source of randomness.

    Returns:
        Tensor of shape (n, 3, size, size), float32, values mostly in [0, 1].
    """
    luminance, chroma = _pink_noise_pair(n, size, generator)
    axis = torch.randn((n, 3, 1, 1), generator=generator)
    axis /= torch.linalg.vector_norm(axis, dim=1, keepdim=True).clamp_min(1e-12)
    contrast = _uniform((n, 1, 1, 1), *contrast_range, generator)
    colour = _uniform((n, 3, 1, 1), *_BACKGROUND_MEAN_RANGE, generator)
    chroma_weight = _BACKGROUND_CHROMA_WEIGHT * axis
    luminance_scale = contrast / torch.sqrt(1.0 + chroma_weight**2)
    return torch.addcmul(colour, luminance_scale, luminance).addcmul_(luminance_scale * chroma_weight, chroma)


def _render_chunk(labels: Tensor, size: int, style: ShapesStyle, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Renders one chunk of images for the given class labels.

    Args:
        labels: Tensor of shape (B,), int64, class indices in [0, 3 * len(style.frequencies)).
        size: Height and width of each image in pixels.
        style: Object sizes, grating frequencies and background contrast.
        generator: Source of randomness.

    Returns:
        Images as a tensor of shape (B, 3, size, size), uint8, and object masks as a tensor of shape
        (B, size, size), bool.
    """
    b = labels.shape[0]
    frequencies = style.frequencies
    shape_index = (labels // len(frequencies)).view(b, 1, 1)
    frequency = torch.tensor(frequencies, dtype=torch.float32)[labels % len(frequencies)].view(b, 1, 1)

    images = _background(b, size, style.background_contrast, generator)

    radius = _uniform((b, 1, 1), *style.radius_range, generator)
    low = radius + _BORDER
    high = (size - 1) - radius - _BORDER
    cx = low + (high - low) * torch.rand((b, 1, 1), generator=generator)
    cy = low + (high - low) * torch.rand((b, 1, 1), generator=generator)
    rotation = _uniform((b, 1, 1), 0.0, 2.0 * math.pi, generator)
    orientation = _uniform((b, 1, 1), 0.0, math.pi, generator)
    phase = _uniform((b, 1, 1), 0.0, 2.0 * math.pi, generator)
    object_mean = _uniform((b, 3, 1, 1), *_OBJECT_MEAN_RANGE, generator)

    # The object is rendered in a crop x crop window that contains it and then pasted into the background.
    crop = min(size, max(_MIN_CROP, 2 * math.ceil(style.radius_range[1]) + 4))
    offsets = torch.arange(crop)
    x0 = (cx.floor().to(torch.int64) - (crop // 2 - 1)).clamp(0, size - crop)
    y0 = (cy.floor().to(torch.int64) - (crop // 2 - 1)).clamp(0, size - crop)
    xs = x0 + offsets.view(1, 1, crop)  # (B, 1, crop)
    ys = y0 + offsets.view(1, crop, 1)  # (B, crop, 1)
    dx = xs.to(torch.float32) - cx
    dy = ys.to(torch.float32) - cy

    # Object-aligned coordinates (u, v). A regular polygon with circumradius r is the set where the projections on
    # all edge normals are at most the apothem r * cos(pi / n); with normals at angles 0, 90, 180, 270 degrees
    # (square) or 0, 120, 240 degrees (triangle) in the rotated frame.
    cos_r, sin_r = torch.cos(rotation), torch.sin(rotation)
    u = dx * cos_r + dy * sin_r
    v = dy * cos_r - dx * sin_r
    abs_v = v.abs()
    inside_disk = dx**2 + dy**2 <= radius**2
    inside_square = torch.maximum(u.abs(), abs_v) <= radius * math.cos(math.pi / 4)
    inside_triangle = torch.maximum(u, abs_v.mul_(math.sqrt(3) / 2).sub_(u / 2)) <= radius * math.cos(math.pi / 3)
    inside = torch.where(shape_index == 0, inside_disk, torch.where(shape_index == 1, inside_square, inside_triangle))

    wave = 2.0 * math.pi * frequency
    grating = torch.sin((dx * (wave * torch.cos(orientation)) + phase) + dy * (wave * torch.sin(orientation)))
    foreground = torch.addcmul(object_mean, grating.unsqueeze(1), torch.tensor(_GRATING_AMPLITUDE))

    index = (ys * size + xs).view(b, 1, crop * crop)
    index3 = index.expand(b, 3, crop * crop)
    flat = images.view(b, 3, size * size)
    window = torch.where(inside.view(b, 1, crop * crop), foreground.view(b, 3, crop * crop), flat.gather(2, index3))
    flat.scatter_(2, index3, window)
    masks = torch.zeros((b, size * size), dtype=torch.bool)
    masks.scatter_(1, index.view(b, crop * crop), inside.view(b, crop * crop))

    images = images.mul_(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
    return images, masks.view(b, size, size)


def _check_mean_std(mean: Sequence[float], std: Sequence[float], channels: int) -> None:
    """Validates per-channel mean and standard deviation.

    Args:
        mean: Per-channel mean.
        std: Per-channel standard deviation.
        channels: Expected number of channels.

    Raises:
        ValueError: If the lengths do not match ``channels`` or a standard deviation is not positive.
    """
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std must have {channels} entries each, got mean={mean!r}, std={std!r}")
    if any(not s > 0 for s in std):
        raise ValueError(f"std entries must be positive, got {std!r}")


def denormalize(images: Tensor, mean: Sequence[float] = SHAPES_MEAN, std: Sequence[float] = SHAPES_STD) -> Tensor:
    """Undoes per-channel normalisation for display; the input is never modified.

    Args:
        images: Normalised images, tensor of shape (3, H, W) or (N, 3, H, W), floating point.
        mean: Per-channel mean used for normalisation (3 values).
        std: Per-channel standard deviation used for normalisation (3 positive values).

    Returns:
        New tensor of the same shape, dtype and device as ``images``, ``images * std + mean`` clamped to [0, 1].

    Raises:
        TypeError: If ``images`` is not a floating-point tensor.
        ValueError: If ``images`` does not have shape (3, H, W) or (N, 3, H, W), or ``mean``/``std`` are invalid.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got dtype {images.dtype}")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"images must have shape (3, H, W) or (N, 3, H, W), got {tuple(images.shape)}")
    _check_mean_std(mean, std, 3)
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * std_t + mean_t).clamp(0.0, 1.0)


class Shapes(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Synthetic 6-class dataset: 3 shapes x 2 grating frequencies on a 1/f^2 noise background.

    ``style`` draws variants with other object sizes, grating frequencies (3 classes per frequency) and background
    contrast, for testing that what works here works on other data too. All images are generated at construction
    (vectorised, 512 at a time) from a ``torch.Generator`` seeded with ``seed``; the same seed gives bit-identical
    tensors. Labels are balanced: ``arange(size) % 6`` permuted with the generator, so each class has ``size // 6``
    or ``size // 6 + 1`` samples. See the module docstring for how images are drawn.

    Attributes:
        classes: Class names, ``"<shape>/<frequency>"`` with coarse = 1/8 and fine = 1/3 cycles per pixel; index
            ``label`` is ``2 * shape + frequency`` for shapes (disk, square, triangle) and frequencies (coarse, fine).
            A ``style`` with other frequencies names them by value and has ``3 * len(style.frequencies)`` classes.
        style: The variant drawn (:class:`ShapesStyle`).
        images: Tensor of shape (N, 3, 64, 64), uint8, values in [0, 255] (raw image times 255, rounded).
        targets: Tensor of shape (N,), int64, values in [0, 6).
        masks: Tensor of shape (N, 64, 64), bool, True on the object.
        mean: Per-channel mean used for normalisation (``SHAPES_MEAN``); None when ``normalize`` is False, so that
            nothing (a probe, a viewer) undoes a normalisation that was never applied.
        std: Per-channel standard deviation used for normalisation (``SHAPES_STD``); None when ``normalize`` is
            False.
        image_size: Height and width of the images in pixels (64).
        normalize: Whether ``__getitem__`` normalises images with ``mean`` and ``std``.
        seed: Seed of the generator.
    """

    classes: list[str]
    mean: tuple[float, float, float] | None = SHAPES_MEAN
    std: tuple[float, float, float] | None = SHAPES_STD
    image_size: int = _IMAGE_SIZE

    def __init__(
        self, size: int = 6000, seed: int = 0, normalize: bool = True, style: ShapesStyle | None = None
    ) -> None:
        """Generates the dataset.

        Args:
            size: Number of samples, positive.
            seed: Seed of the random generator, non-negative.
            normalize: If True, ``__getitem__`` returns images normalised with ``mean`` and ``std``; otherwise
                images in [0, 1].
            style: Object sizes, grating frequencies and background contrast; None: the embedded dataset's.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If ``size`` is not positive or ``seed`` is negative.
        """
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"size must be an int, got {size!r}")
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {normalize!r}")
        if style is not None and not isinstance(style, ShapesStyle):
            raise TypeError(f"style must be a ShapesStyle or None, got {type(style).__name__}")

        self.style = style or ShapesStyle()
        self.classes = self.style.classes
        self.seed = seed
        self.normalize = normalize

        generator = torch.Generator().manual_seed(seed)
        num_classes = len(self.classes)
        targets = torch.arange(size, dtype=torch.int64) % num_classes
        self.targets: Tensor = targets[torch.randperm(size, generator=generator)]

        self.images: Tensor = torch.empty((size, 3, _IMAGE_SIZE, _IMAGE_SIZE), dtype=torch.uint8)
        self.masks: Tensor = torch.empty((size, _IMAGE_SIZE, _IMAGE_SIZE), dtype=torch.bool)
        for start in range(0, size, _CHUNK):
            stop = min(start + _CHUNK, size)
            images, masks = _render_chunk(self.targets[start:stop], _IMAGE_SIZE, self.style, generator)
            self.images[start:stop] = images
            self.masks[start:stop] = masks

        self._mean = torch.tensor(SHAPES_MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(SHAPES_STD, dtype=torch.float32).view(3, 1, 1)
        if not normalize:
            self.mean = self.std = None

    def __len__(self) -> int:
        """Returns the number of samples."""
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """Returns one sample.

        Args:
            index: Sample index in [-N, N).

        Returns:
            ``(image, label, mask)``: image as a tensor of shape (3, 64, 64), float32, normalised with ``mean`` and
            ``std`` if ``normalize`` else with values in [0, 1]; label as a 0-dim int64 tensor with value in [0, 6);
            mask as a tensor of shape (64, 64), float32, values in {0, 1} (1 on the object).
        """
        image = self.images[index].to(torch.float32) / 255.0
        if self.normalize:
            image = (image - self._mean) / self._std
        return image, self.targets[index].clone(), self.masks[index].to(torch.float32)

    def denormalize(self, images: Tensor) -> Tensor:
        """Undoes this dataset's normalisation for display; the input is never modified.

        Args:
            images: Normalised images, tensor of shape (3, H, W) or (N, 3, H, W), floating point.

        Returns:
            New tensor of the same shape, values in [0, 1].
        """
        if self.mean is None or self.std is None:  # never normalised
            return images.clamp(0.0, 1.0)
        return denormalize(images, self.mean, self.std)
