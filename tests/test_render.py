from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps

from lightning_viz.render import colorize, overlay, tile_panel


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
