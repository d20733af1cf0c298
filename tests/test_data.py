"""Tests for the synthetic ``Shapes`` dataset in ``lightning_viz.data``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_viz.data import SHAPES_MEAN, SHAPES_STD, Shapes, ShapesStyle, denormalize

SIZE = 600
SEED = 3
COARSE, FINE = 1.0 / 8.0, 1.0 / 3.0
# Area of a shape with circumradius r is AREA_FACTOR * r**2 (disk, square, triangle).
AREA_FACTOR = (math.pi, 2.0, 3.0 * math.sqrt(3.0) / 4.0)


@pytest.fixture(scope="module")
def raw() -> Shapes:
    return Shapes(size=SIZE, seed=SEED, normalize=False)


@pytest.fixture(scope="module")
def normalized() -> Shapes:
    return Shapes(size=SIZE, seed=SEED)


def _stack_images(dataset: Shapes) -> Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def _radial_frequency(size: int) -> Tensor:
    freq = torch.fft.fftfreq(size)
    return torch.sqrt(freq.view(-1, 1) ** 2 + freq.view(1, -1) ** 2)


def test_same_seed_gives_identical_data() -> None:
    # 700 > one generation chunk of 512, so the chunk loop is covered too.
    a = Shapes(size=700, seed=1)
    b = Shapes(size=700, seed=1)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.targets, b.targets)
    assert torch.equal(a.masks, b.masks)
    for i in (0, 511, 512, 699):
        for x, y in zip(a[i], b[i], strict=True):
            assert torch.equal(x, y)


def test_different_seeds_give_different_data() -> None:
    a = Shapes(size=100, seed=1)
    b = Shapes(size=100, seed=2)
    assert not torch.equal(a.images, b.images)
    assert not torch.equal(a.targets, b.targets)
    assert not torch.equal(a.masks, b.masks)


def test_attributes(raw: Shapes) -> None:
    assert len(raw) == SIZE
    assert raw.image_size == 64
    assert raw.classes == [
        "disk/coarse",
        "disk/fine",
        "square/coarse",
        "square/fine",
        "triangle/coarse",
        "triangle/fine",
    ]
    assert raw.mean is None and raw.std is None  # nothing to undo
    assert Shapes(size=6, seed=SEED).mean == SHAPES_MEAN and Shapes(size=6, seed=SEED).std == SHAPES_STD
    assert raw.images.shape == (SIZE, 3, 64, 64)
    assert raw.images.dtype == torch.uint8
    assert raw.targets.shape == (SIZE,)
    assert raw.targets.dtype == torch.int64
    assert raw.masks.shape == (SIZE, 64, 64)
    assert raw.masks.dtype == torch.bool
    assert len(SHAPES_MEAN) == len(SHAPES_STD) == 3
    assert all(0.0 < s < 1.0 for s in SHAPES_STD)


def test_item_shapes_and_dtypes(raw: Shapes, normalized: Shapes) -> None:
    for dataset in (raw, normalized):
        image, label, mask = dataset[5]
        assert image.shape == (3, 64, 64)
        assert image.dtype == torch.float32
        assert label.shape == ()
        assert label.dtype == torch.int64
        assert int(label) == int(dataset.targets[5])
        assert mask.shape == (64, 64)
        assert mask.dtype == torch.float32
        assert torch.all((mask == 0.0) | (mask == 1.0))
        assert mask.sum() > 0
        assert torch.equal(mask.bool(), dataset.masks[5])
    image, _, _ = raw[-1]
    assert image.min() >= 0.0
    assert image.max() <= 1.0
    assert torch.equal(image, raw.images[-1].float() / 255.0)
    with pytest.raises(IndexError):
        raw[SIZE]


def test_dataloader_batches(normalized: Shapes) -> None:
    images, labels, masks = next(iter(DataLoader(normalized, batch_size=4)))
    assert images.shape == (4, 3, 64, 64)
    assert labels.shape == (4,)
    assert labels.dtype == torch.int64
    assert masks.shape == (4, 64, 64)


def test_normalized_images_have_zero_mean_unit_std(normalized: Shapes) -> None:
    images = _stack_images(normalized)
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3))
    assert torch.all(mean.abs() < 0.15), mean
    assert torch.all((std - 1.0).abs() < 0.15), std


def test_denormalize_inverts_normalization(raw: Shapes, normalized: Shapes) -> None:
    expected = _stack_images(raw)[:64]
    images = _stack_images(normalized)[:64]
    before = images.clone()
    restored = denormalize(images)
    assert restored.shape == images.shape
    assert torch.equal(images, before)  # input not modified
    assert restored.data_ptr() != images.data_ptr()
    torch.testing.assert_close(restored, expected, atol=1e-5, rtol=0.0)
    # A single (3, H, W) image and the method agree with the function.
    torch.testing.assert_close(normalized.denormalize(images[7]), expected[7], atol=1e-5, rtol=0.0)
    torch.testing.assert_close(normalized.denormalize(images), restored)


def test_denormalize_clamps_and_respects_custom_stats() -> None:
    out = denormalize(torch.tensor([-100.0, 0.0, 100.0]).view(3, 1, 1).expand(3, 2, 2))
    assert out.min() == 0.0
    assert out.max() == 1.0
    custom = denormalize(torch.ones(2, 3, 4, 5), mean=(0.1, 0.2, 0.3), std=(0.1, 0.2, 0.3))
    torch.testing.assert_close(custom[:, :, 0, 0], torch.tensor([[0.2, 0.4, 0.6]] * 2))


def test_denormalize_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(N, 3, H, W\), got \(4, 8, 8\)"):
        denormalize(torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match=r"got \(8, 8\)"):
        denormalize(torch.zeros(8, 8))
    with pytest.raises(TypeError, match=r"torch\.uint8"):
        denormalize(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"std entries must be positive, got \(0\.2, 0\.0, 0\.2\)"):
        denormalize(torch.zeros(3, 8, 8), std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match=r"mean=\(0\.5, 0\.5\)"):
        denormalize(torch.zeros(3, 8, 8), mean=(0.5, 0.5))


def test_class_balance(raw: Shapes) -> None:
    assert torch.bincount(raw.targets, minlength=6).tolist() == [SIZE // 6] * 6
    small = Shapes(size=10, seed=0)
    counts = torch.bincount(small.targets, minlength=6)
    assert sorted(counts.tolist()) == [1, 1, 2, 2, 2, 2]
    assert not torch.equal(raw.targets, torch.arange(SIZE) % 6)  # labels are shuffled


def test_masks_match_object_size_and_are_inside_image(raw: Shapes) -> None:
    masks = raw.masks
    area = masks.sum(dim=(1, 2)).float()
    assert torch.all(area > 0)
    # Nothing touches the border: the whole object lies inside the image.
    assert not masks[:, 0, :].any()
    assert not masks[:, -1, :].any()
    assert not masks[:, :, 0].any()
    assert not masks[:, :, -1].any()
    # The circumradius implied by the pixel area lies in [9, 15] (up to pixelation) for every shape.
    shape = raw.targets // 2
    radius = torch.sqrt(area / torch.tensor(AREA_FACTOR)[shape])
    assert radius.min() > 8.5, radius.min()
    assert radius.max() < 15.5, radius.max()
    assert radius.min() < 10.0  # the whole range is used
    assert radius.max() > 14.0
    for s in range(3):  # each shape has its own area range, e.g. a disk is larger than a triangle of equal radius
        lo, hi = AREA_FACTOR[s] * 9.0**2, AREA_FACTOR[s] * 15.0**2
        assert torch.all((area[shape == s] > 0.9 * lo) & (area[shape == s] < 1.1 * hi))


def test_object_is_clearly_visible(raw: Shapes) -> None:
    gray = raw.images.float().mean(dim=1) / 255.0
    masks = raw.masks
    count = masks.sum(dim=(1, 2))
    inside_mean = (gray * masks).sum(dim=(1, 2)) / count
    inside_std = torch.sqrt((((gray - inside_mean.view(-1, 1, 1)) ** 2) * masks).sum(dim=(1, 2)) / count)
    # The grating has amplitude 0.3 (standard deviation ~0.21), far above the quantisation level.
    assert torch.all(inside_std > 0.15), inside_std.min()


def test_grating_frequency(raw: Shapes) -> None:
    gray = raw.images.float().mean(dim=1) / 255.0
    masks = raw.masks
    inside_mean = (gray * masks).sum(dim=(1, 2), keepdim=True) / masks.sum(dim=(1, 2), keepdim=True)
    centred = torch.where(masks, gray - inside_mean, torch.zeros(()))
    power = torch.fft.fft2(centred, s=(128, 128)).abs().square()  # zero-padded for a finer frequency grid
    peak = _radial_frequency(128).flatten()[power.flatten(1).argmax(dim=1)]
    fine = (raw.targets % 2).bool()
    assert ((peak[~fine] - COARSE).abs() < 0.02).float().mean() > 0.95
    assert ((peak[fine] - FINE).abs() < 0.02).float().mean() > 0.95


def test_background_has_1_over_f2_power_spectrum(raw: Shapes) -> None:
    # Collect 32x32 image quadrants that contain no object pixel.
    size = 32
    images = raw.images.float() / 255.0
    crops = [
        images[i, :, y : y + size, x : x + size]
        for i in range(len(raw))
        for y in (0, size)
        for x in (0, size)
        if not raw.masks[i, y : y + size, x : x + size].any()
    ]
    assert len(crops) > 200
    patches = torch.stack(crops)
    patches = patches - patches.mean(dim=(-2, -1), keepdim=True)
    hann = torch.hann_window(size, periodic=False)
    power = torch.fft.fft2(patches * hann.view(-1, 1) * hann.view(1, -1)).abs().square().mean(dim=(0, 1))
    bins = torch.round(_radial_frequency(size) * size).long()
    ring = torch.arange(2, size // 2 + 1)  # skip the lowest frequencies, distorted by the window
    radial_power = torch.stack([power[bins == k].mean() for k in ring.tolist()])
    design = torch.stack([torch.log(ring.float() / size), torch.ones(len(ring))], dim=1)
    slope = torch.linalg.lstsq(design, radial_power.log().unsqueeze(1)).solution[0, 0]
    assert abs(float(slope) + 2.0) < 0.4, slope


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"size": 0}, ValueError, "size must be positive, got 0"),
        ({"size": -5}, ValueError, "size must be positive, got -5"),
        ({"seed": -1}, ValueError, "seed must be non-negative, got -1"),
        ({"size": 2.5}, TypeError, "size must be an int, got 2.5"),
        ({"size": True}, TypeError, "size must be an int, got True"),
        ({"seed": "0"}, TypeError, "seed must be an int, got '0'"),
        ({"normalize": 1}, TypeError, "normalize must be a bool, got 1"),
        ({"style": {"radius_range": (3, 5)}}, TypeError, "style must be a ShapesStyle or None, got dict"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Shapes(**kwargs)  # type: ignore[arg-type]


def test_a_style_draws_variants_with_other_sizes_frequencies_and_background() -> None:
    default = Shapes(size=60, seed=4)
    same = Shapes(size=60, seed=4, style=ShapesStyle())
    assert torch.equal(default.images, same.images) and default.classes == same.classes
    small = Shapes(size=300, seed=4, style=ShapesStyle(radius_range=(4.0, 6.0), frequencies=(0.2, 0.3, 0.45)))
    large = Shapes(size=300, seed=4, style=ShapesStyle(radius_range=(20.0, 28.0)))
    assert len(small.classes) == 9 and small.classes[:3] == ["disk/0.2cpp", "disk/0.3cpp", "disk/0.45cpp"]
    assert int(small.targets.max()) == 8
    area = lambda ds: float(ds.masks.float().mean())  # noqa: E731
    assert area(small) < area(default) / 4 and area(large) > 2 * area(default)  # the radii the style asks for
    # whole objects, none cut off: at least 90 % of the smallest shape's area (a triangle's, 1.3 r^2) at r = 20
    assert bool((large.masks.flatten(1).sum(1) > 0.9 * 3 * math.sqrt(3) / 4 * 20**2).all())
    flat = Shapes(size=60, seed=4, normalize=False, style=ShapesStyle(background_contrast=(0.0, 0.0)))
    outside = flat.images[0].float()[:, ~flat.masks[0]]
    assert float(outside.std(dim=1).max()) < 1.0  # a flat background: one colour, up to uint8 rounding


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius_range": (0.5, 3.0)}, r"radius_range must satisfy 1 <= low <= high <= 30, got \(0.5, 3.0\)"),
        ({"radius_range": (9.0, 31.0)}, r"radius_range must satisfy 1 <= low <= high <= 30"),
        ({"frequencies": ()}, r"frequencies must be a non-empty tuple of values in \(0, 0.5\], got \(\)"),
        ({"frequencies": (0.1, 0.6)}, r"frequencies must be a non-empty tuple of values in \(0, 0.5\]"),
        ({"background_contrast": (0.2, 0.1)}, r"background_contrast must satisfy 0 <= low <= high, got \(0.2, 0.1\)"),
    ],
)
def test_bad_styles_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShapesStyle(**kwargs)  # type: ignore[arg-type]
