from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps

from lightning_viz.render import _to_tiles, colorize, grid, overlay, tile_panel


def test_colorize_uses_the_matplotlib_colormap() -> None:
    maps = torch.linspace(0, 1, 12).reshape(1, 3, 4)
    expected = torch.from_numpy(colormaps["viridis"](maps.numpy())[..., :3]).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(colorize(maps, "viridis"), expected)


def test_overlay_blends_and_leaves_inputs_alone() -> None:
    images, maps = torch.rand(2, 3, 5, 5), torch.rand(2, 5, 5)
    before = images.clone(), maps.clone()
    out = overlay(images, maps, alpha=0.25)
    torch.testing.assert_close(out, 0.75 * images + 0.25 * colorize(maps))
    assert torch.equal(images, before[0]) and torch.equal(maps, before[1])
    with pytest.raises(ValueError, match=r"must match, got \(2, 3, 5, 5\), \(2, 4, 4\)"):
        overlay(images, torch.rand(2, 4, 4))


def test_tile_panel_places_each_tile_pixel_exactly() -> None:
    tiles = [[torch.full((3, 8, 8), v / 10), torch.full((1, 8, 8), v / 20)] for v in range(5)]
    captions = [["a", "b\nc"]] * 5
    panel = tile_panel(tiles, captions, tile_size=16, max_width=120)
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3
    assert panel.shape[1] <= 120
    for v in range(5):  # a solid 16x16 block of each value exists: nearest upsampling of the 8x8 tile
        for value in (int(255 * v / 10 + 0.5), int(255 * v / 20 + 0.5)):
            mask = np.all(panel == value, axis=2)
            assert any(mask[y : y + 16, x : x + 16].all() for y, x in zip(*np.nonzero(mask), strict=True)), value


def test_tile_panel_rejects_mismatched_tiles() -> None:
    with pytest.raises(ValueError, match="tiles must all have shape"):
        tile_panel([[torch.zeros(3, 8, 8), torch.zeros(3, 4, 8)]], [["a", "b"]])
    with pytest.raises(ValueError, match="need one caption list per cell, got 1 cells and 2 caption lists"):
        tile_panel([[torch.zeros(3, 8, 8)]], [["a"], ["b"]])


@pytest.mark.parametrize(("size", "shape"), [(20, (8, 8)), (24, (64, 64)), (48, (30, 45)), (7, (9, 12))])
def test_tiles_are_resized_as_torch_interpolates(size: int, shape: tuple[int, int]) -> None:
    """Nearest when enlarging, area averaging when shrinking: torch's answer, computed with numpy (the panels are
    drawn off the training thread, where no torch operation runs)."""
    tiles = torch.rand(3, 3, *shape)
    height = max(1, round(size * shape[0] / shape[1]))
    mode = "nearest" if size >= shape[1] else "area"
    expected = F.interpolate(tiles, size=(height, size), mode=mode)
    expected = (expected.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    got = _to_tiles(list(tiles.numpy()), size)
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # float rounding of the averages


def test_numpy_in_numpy_out() -> None:
    maps, images = np.random.rand(2, 5, 5).astype(np.float32), np.random.rand(2, 3, 5, 5).astype(np.float32)
    assert isinstance(overlay(images, maps), np.ndarray)
    np.testing.assert_allclose(overlay(images, maps), overlay(torch.from_numpy(images), torch.from_numpy(maps)).numpy())
    assert isinstance(grid(images, columns=2), np.ndarray)
    assert isinstance(grid(torch.from_numpy(images), columns=2), torch.Tensor)


def test_encode_png_round_trips_with_isal_and_with_zlib(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    from PIL import Image

    from lightning_viz.render import encode_png

    rng = np.random.default_rng(0)
    image = np.full((37, 53, 3), 255, dtype=np.uint8)
    image[5:30, 7:40] = rng.integers(0, 256, (25, 33, 3), dtype=np.uint8)
    with_isal = encode_png(image)
    monkeypatch.setitem(sys.modules, "isal", None)  # as on a platform without the package: zlib
    with_zlib = encode_png(image)
    for encoded in (with_isal, with_zlib):
        decoded = Image.open(io.BytesIO(encoded))
        assert decoded.format == "PNG" and decoded.mode == "RGB"
        assert np.array_equal(np.asarray(decoded), image)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(image.astype(np.float32))


def test_captions_are_drawn_as_pillow_draws_them() -> None:
    from PIL import Image, ImageDraw

    from lightning_viz.render import _draw_text, _font

    for text, anchor, size, bold in [("one line ✗", "la", 13, True), ("two\nlines p=0.93", "ld", 12, False)]:
        ours, theirs = (Image.new("RGB", (160, 60), (255, 255, 255)) for _ in range(2))
        _draw_text(ImageDraw.Draw(ours), (5, 45 if anchor == "ld" else 5), text, size, bold, anchor, spacing=2)
        ImageDraw.Draw(theirs).text((5, 45 if anchor == "ld" else 5), text, fill=(0, 0, 0), font=_font(size, bold),
                                    anchor=anchor, spacing=2)  # fmt: skip
        assert np.asarray(ours).min() < 100  # something was drawn
        assert np.array_equal(np.asarray(ours), np.asarray(theirs)), text


def test_a_panel_drawn_again_loads_no_font() -> None:
    """Fonts are kept for every size a probe step uses: the wrap, fit and caption caches key on the font, so a
    font loaded again missed all three (a step's panels took twice as long to draw)."""
    from lightning_viz.render import _font, notice

    def draw() -> None:
        for size in (9, 10, 11, 12, 14):
            tile_panel([[np.ones((3, 8, 8), np.float32)]], [["caption"]], title="title", subtitle="what it shows",
                       font_size=size)  # fmt: skip
        notice("failed", "a notice")

    draw()
    misses = _font.cache_info().misses
    draw()
    assert _font.cache_info().misses == misses
