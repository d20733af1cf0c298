"""Tensors to pictures: colormaps, overlays and captioned tile panels, as uint8 arrays TensorBoard shows as is.

Tiles are resized in one batched call and pasted into one canvas; captions are drawn with Pillow in matplotlib's
own DejaVu Sans. (Drawing 50 captions through a matplotlib figure took 0.5 s a panel; this takes a few ms.)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps, font_manager
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["colorize", "grid", "overlay", "own_scale", "signed_display", "tile_panel"]


def colorize(maps: Tensor, cmap: str = "jet") -> Tensor:
    """Map values in [0, 1] through a matplotlib colormap.

    Args:
        maps: Tensor of shape (N, H, W), values in [0, 1].
        cmap: a matplotlib colormap name.

    Returns:
        Tensor of shape (N, 3, H, W), float32, values in [0, 1].
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {tuple(maps.shape)}")
    # matplotlib maps a float x to its 256-entry table at floor(256 x) (clipped): the same lookup, in one indexing
    index = (maps.detach().float().clamp(0, 1).cpu() * 256).long().clamp(max=255)
    return _lut(cmap)[index].permute(0, 3, 1, 2).contiguous()


@lru_cache(maxsize=8)
def _lut(cmap: str) -> Tensor:
    return torch.from_numpy(colormaps[cmap](np.arange(256))[:, :3]).float()


def overlay(images: Tensor, maps: Tensor, alpha: float = 0.5, cmap: str = "jet") -> Tensor:
    """Blend colorized maps over images: ``(1 - alpha) * image + alpha * colormap(map)``.

    Args:
        images: Tensor of shape (N, 3, H, W) or (N, 1, H, W), values in [0, 1].
        maps: Tensor of shape (N, H, W), values in [0, 1], at the images' resolution.
        alpha: weight of the heatmap.
        cmap: a matplotlib colormap name.

    Returns:
        Tensor of shape (N, 3, H, W), values in [0, 1].
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[-2:] != maps.shape[-2:]:
        raise ValueError(
            f"images (N, 3, H, W) and maps (N, H, W) must match, got {tuple(images.shape)}, {tuple(maps.shape)}"
        )
    rgb = images.detach().float().cpu().expand(-1, 3, -1, -1)
    return ((1 - alpha) * rgb + alpha * colorize(maps, cmap)).clamp(0, 1)


def _to_tiles(images: Sequence[Tensor], size: int) -> np.ndarray:
    """Tiles (C, H, W) in [0, 1] -> (T, size * H / W, size, 3) uint8 in one batched resize: nearest when
    enlarging, so pixels stay visible, area averaging when shrinking."""
    shapes = {tuple(t.shape[-2:]) for t in images}
    if len(shapes) != 1 or any(t.dim() != 3 or t.shape[0] not in (1, 3) for t in images):
        raise ValueError(f"tiles must all have shape (3, H, W) or (1, H, W) with one H, W; got {sorted(shapes)}")
    batch = torch.stack([t.detach().float().cpu().expand(3, -1, -1) for t in images])
    h, w = batch.shape[-2:]
    mode = "nearest" if size >= w else "area"
    batch = F.interpolate(batch, size=(max(1, round(size * h / w)), size), mode=mode)
    return (batch.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def tile_panel(
    cells: Sequence[Sequence[Tensor]],
    captions: Sequence[Sequence[str]],
    columns: int | None = None,
    tile_size: int = 128,
    title: str | None = None,
    max_width: int = 1280,
) -> np.ndarray:
    """Lay out cells of tiles in a grid, each tile with a caption above it.

    A cell is what belongs to one probe image (for Grad-CAM: image | predicted-class overlay | true-class
    overlay); cells are placed ``columns`` to a row, with wider gaps between cells than between tiles.

    Args:
        cells: per cell, its tiles, each Tensor of shape (3, H, W) or (1, H, W) with values in [0, 1]; all tiles
            share one aspect ratio.
        captions: per cell, one caption per tile (may contain one newline).
        columns: cells per row; None: as many as fit in ``max_width``.
        tile_size: displayed tile width in pixels.
        title: optional line above the whole panel.
        max_width: width in pixels that ``columns=None`` fills. TensorBoard's Images tab with "Show actual image
            size" ticked shows about 1,300 px beside its sidebar in a 1,700 px wide window.

    Returns:
        Array of shape (H, W, 3), uint8, ready for ``SummaryWriter.add_image(..., dataformats="HWC")``.
    """
    if not cells or len(cells) != len(captions):
        raise ValueError(f"need one caption list per cell, got {len(cells)} cells and {len(captions)} caption lists")
    flat = _to_tiles([t for cell in cells for t in cell], tile_size)
    offsets = np.cumsum([0] + [len(cell) for cell in cells])
    tiles = [flat[offsets[i] : offsets[i + 1]] for i in range(len(cells))]
    per_cell = max(len(cell) for cell in cells)
    tile_h = flat.shape[1]
    gap, cell_gap, caption_h = 2, 12, 28
    title_h = 24 if title else 0
    cell_w = per_cell * tile_size + (per_cell - 1) * gap
    if columns is None:
        columns = (max_width - cell_gap) // (cell_w + cell_gap)
    columns = max(1, min(columns, len(cells)))
    rows = -(-len(cells) // columns)
    width = columns * cell_w + (columns + 1) * cell_gap
    height = title_h + rows * (caption_h + tile_h + cell_gap) + cell_gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    texts: list[tuple[int, int, str]] = []
    for i, (cell, cell_captions) in enumerate(zip(tiles, captions, strict=True)):
        row, col = divmod(i, columns)
        y = title_h + cell_gap + row * (caption_h + tile_h + cell_gap) + caption_h
        for j, tile in enumerate(cell):
            x = cell_gap + col * (cell_w + cell_gap) + j * (tile_size + gap)
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
            if j < len(cell_captions):
                texts.append((x, y - 3, cell_captions[j]))
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for x, y, text in texts:
        draw.multiline_text((x, y), text, fill=(0, 0, 0), font=_font(11), anchor="ld", spacing=1)
    if title:
        draw.text((cell_gap, 5), title, fill=(0, 0, 0), font=_font(14, bold=True))
    return np.asarray(image).copy()


@lru_cache(maxsize=4)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal"))
    return ImageFont.truetype(path, size)


def signed_display(values: Tensor, scale: float | Tensor) -> Tensor:
    """Map signed values to [0, 1] with zero at mid-grey: ``0.5 + values / (2 * scale)``, clamped. Exactly
    invertible inside the range: ``values = (display - 0.5) * 2 * scale``."""
    return (0.5 + values / (2 * scale)).clamp(0, 1)


def own_scale(values: Tensor) -> Tensor:
    """Min-max scale each item of a batch (N, ...) to [0, 1] on its own; a constant item becomes mid-grey."""
    flat = values.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    shape = (-1,) + (1,) * (values.dim() - 1)
    span = (high - low).view(shape)
    scaled = (values - low.view(shape)) / span.clamp_min(1e-12)
    return torch.where(span > 0, scaled, torch.full_like(values, 0.5))


def grid(
    tiles: Tensor,
    columns: int,
    zoom: int = 1,
    gap: int = 1,
    marked: Tensor | None = None,
    background: float = 1.0,
) -> Tensor:
    """Arrange tiles in a grid, each enlarged ``zoom`` times (nearest), ``gap`` pixels apart; marked tiles get a
    red frame in their gap.

    Args:
        tiles: Tensor of shape (T, C, h, w) with C in (1, 3), values in [0, 1].
        columns: tiles per row.
        zoom: integer enlargement of each tile.
        gap: pixels between tiles (and the width of a mark's frame).
        marked: optional bool Tensor of shape (T,): tiles to frame in red.
        background: grey level of the gaps.

    Returns:
        Tensor of shape (3, H, W), values in [0, 1].
    """
    if tiles.dim() != 4 or tiles.shape[1] not in (1, 3):
        raise ValueError(f"tiles must have shape (T, 1 or 3, h, w), got {tuple(tiles.shape)}")
    t, _, h, w = tiles.shape
    tiles = tiles.detach().float().cpu().expand(-1, 3, -1, -1).repeat_interleave(zoom, 2).repeat_interleave(zoom, 3)
    h, w = h * zoom, w * zoom
    columns = max(1, min(columns, t))
    rows = -(-t // columns)
    canvas = torch.full((3, rows * (h + gap) + gap, columns * (w + gap) + gap), background)
    red = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    for i in range(t):
        y, x = gap + (i // columns) * (h + gap), gap + (i % columns) * (w + gap)
        if marked is not None and bool(marked[i]):
            canvas[:, y - gap : y + h + gap, x - gap : x + w + gap] = red
        canvas[:, y : y + h, x : x + w] = tiles[i]
    return canvas
