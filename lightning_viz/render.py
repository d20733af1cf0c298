"""Tensors to pictures: colormaps, overlays and captioned tile panels, as uint8 arrays TensorBoard shows as is.

Every function computes with numpy and Pillow only, and returns the kind it was given (a numpy array for a numpy
array, a tensor for a tensor): panels are drawn on the writer thread, and a torch operation there would start a
second OpenMP thread team beside the training thread's, which slowed every later training step by 10-20 % on two
cores (``benchmarks/overhead.py``). Tiles are resized in one batched step and pasted into one canvas; captions are
drawn with Pillow in matplotlib's own DejaVu Sans (drawing 50 captions through a matplotlib figure took 0.5 s a
panel; this takes a few ms).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
import torch
from matplotlib import colormaps, font_manager
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = [
    "CARD_WIDTH",
    "colorize",
    "encode_png",
    "grid",
    "notice",
    "overlay",
    "own_scale",
    "signed_display",
    "stack",
    "tile_panel",
]

Array = TypeVar("Array", Tensor, np.ndarray)


def _numpy(values: Tensor | np.ndarray) -> np.ndarray:
    """``values`` as a float32 numpy array (a view of a float32 CPU tensor, no torch kernel runs)."""
    if isinstance(values, Tensor):
        values = values.detach()
        if values.device.type != "cpu" or values.dtype != torch.float32:
            values = values.to("cpu", torch.float32)
        values = values.numpy()
    return np.asarray(values, dtype=np.float32)


def _like(result: np.ndarray, given: Tensor | np.ndarray) -> Tensor | np.ndarray:
    return torch.from_numpy(np.ascontiguousarray(result)) if isinstance(given, Tensor) else result


def colorize(maps: Array, cmap: str = "jet") -> Array:
    """Map values in [0, 1] through a matplotlib colormap.

    Args:
        maps: shape (N, H, W), values in [0, 1] (a tensor or a numpy array).
        cmap: a matplotlib colormap name.

    Returns:
        Shape (N, 3, H, W), float32, values in [0, 1], of the kind of ``maps``.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {tuple(maps.shape)}")
    # matplotlib maps a float x to its 256-entry table at floor(256 x) (clipped): the same lookup, in one indexing
    index = np.clip(np.clip(_numpy(maps), 0, 1) * 256, 0, 255).astype(np.intp)
    return _like(_lut(cmap)[index].transpose(0, 3, 1, 2), maps)  # type: ignore[return-value]


@lru_cache(maxsize=8)
def _lut(cmap: str) -> np.ndarray:
    lut: np.ndarray = colormaps[cmap](np.arange(256))[:, :3].astype(np.float32)
    return lut


def overlay(images: Array, maps: Array, alpha: float = 0.5, cmap: str = "jet") -> Array:
    """Blend colorized maps over images: ``(1 - alpha) * image + alpha * colormap(map)``.

    Args:
        images: shape (N, 3, H, W) or (N, 1, H, W), values in [0, 1].
        maps: shape (N, H, W), values in [0, 1], at the images' resolution.
        alpha: weight of the heatmap.
        cmap: a matplotlib colormap name.

    Returns:
        Shape (N, 3, H, W), values in [0, 1], of the kind of ``images``.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3) or tuple(images.shape[-2:]) != tuple(maps.shape[-2:]):
        raise ValueError(
            f"images (N, 3, H, W) and maps (N, H, W) must match, got {tuple(images.shape)}, {tuple(maps.shape)}"
        )
    rgb = _numpy(images)
    heat = _numpy(colorize(_numpy(maps), cmap))
    return _like(np.clip((1 - alpha) * rgb + alpha * heat, 0, 1), images)  # type: ignore[return-value]


def _resize_axis(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resize one axis as ``torch.nn.functional.interpolate`` does: nearest (source ``floor(i * n / size)``)
    when enlarging, area averaging (adaptive average pooling's windows) when shrinking."""
    n = values.shape[axis]
    if size == n:
        return values
    if size > n:
        taken: np.ndarray = np.take(values, np.minimum((np.arange(size) * n) // size, n - 1), axis=axis)
        return taken
    start = (np.arange(size) * n) // size
    end = -((-(np.arange(1, size + 1)) * n) // size)  # ceil((i + 1) * n / size)
    moved = np.moveaxis(values, axis, 0)
    sums = np.concatenate([np.zeros_like(moved[:1]), np.cumsum(moved, axis=0, dtype=np.float64)])
    shape = (-1,) + (1,) * (moved.ndim - 1)
    pooled = (sums[end] - sums[start]) / (end - start).reshape(shape)
    return np.moveaxis(pooled.astype(np.float32), 0, axis)


def _to_tiles(images: Sequence[Tensor | np.ndarray], size: int) -> np.ndarray:
    """Tiles (C, H, W) in [0, 1] -> (T, size * H / W, size, 3) uint8 in one batched resize: nearest when
    enlarging, so pixels stay visible, area averaging when shrinking."""
    shapes = {tuple(t.shape[-2:]) for t in images}
    if len(shapes) != 1 or any(t.ndim != 3 or t.shape[0] not in (1, 3) for t in images):
        raise ValueError(f"tiles must all have shape (3, H, W) or (1, H, W) with one H, W; got {sorted(shapes)}")
    batch = np.stack([np.broadcast_to(_numpy(t), (3, *t.shape[-2:])) for t in images])
    h, w = batch.shape[-2:]
    batch = _resize_axis(_resize_axis(batch, max(1, round(size * h / w)), 2), size, 3)
    tiles: np.ndarray = (np.clip(batch, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
    return tiles


CARD_WIDTH = 350
"""Width in pixels of the panels: TensorBoard's Images dashboard (2.21, default settings) stretches every image to
its card's width, 350 CSS px (measured in Chromium by ``tests/test_browser.py``), so a panel of this width is shown
pixel for pixel, captions legible, without "Show actual image size"."""

_RED = np.array([230, 25, 25], dtype=np.uint8)


def tile_panel(
    cells: Sequence[Sequence[Tensor | np.ndarray]],
    captions: Sequence[Sequence[str]],
    columns: int | None = None,
    tile_size: int = 128,
    title: str | None = None,
    max_width: int = CARD_WIDTH,
    marked: Sequence[Sequence[bool]] | None = None,
    font_size: int = 12,
    subtitle: str | None = None,
    min_width: int = 0,
) -> np.ndarray:
    """Lay out cells of tiles in a grid, each tile with a caption above it.

    A cell is what belongs to one probe image (for Grad-CAM: image | predicted-class overlay | true-class
    overlay); cells are placed ``columns`` to a row, with wider gaps between cells than between tiles.

    Args:
        cells: per cell, its tiles, each of shape (3, H, W) or (1, H, W) (tensors or numpy arrays) with values in
            [0, 1]; all tiles share one aspect ratio.
        captions: per cell, one caption per tile (may contain one newline).
        columns: cells per row; None: as many as fit in ``max_width``.
        tile_size: displayed tile width in pixels.
        title: optional bold line above the whole panel.
        subtitle: optional text under the title (may contain newlines): what the panel shows and how it is scaled.
        min_width: the panel is at least this wide (white on the right), so that a title wraps at a card's width
            even when the tiles are narrower.
        max_width: width in pixels that ``columns=None`` fills: :data:`CARD_WIDTH`, TensorBoard's default card.
        marked: per cell, per tile, whether to frame the tile in red (a wrong prediction, a failed optimisation).
        font_size: caption size in pixels (the title is one pixel larger, bold). Caption lines longer than their
            tile are cut short with an ellipsis, so they never run into the next tile.

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
    gap, cell_gap = 3, 8
    line_h = font_size + 2
    lines = max((c.count("\n") + 1 for row in captions for c in row if c), default=0)
    caption_h = lines * line_h + 3 if lines else 0
    cell_w = per_cell * tile_size + (per_cell - 1) * gap
    if columns is None:
        columns = (max_width - cell_gap) // (cell_w + cell_gap)
    columns = max(1, min(columns, len(cells)))
    rows = -(-len(cells) // columns)
    width = max(columns * cell_w + (columns + 1) * cell_gap, min_width)
    header = [(line, True) for line in ([title] if title else [])]
    header += [(line, False) for line in (_wrap(subtitle, _font(font_size + 1), width - cell_gap) if subtitle else [])]
    title_h = len(header) * (line_h + 2) + 4 if header else 0
    height = title_h + rows * (caption_h + tile_h + cell_gap) + cell_gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    texts: list[tuple[int, int, str]] = []
    for i, (cell, cell_captions) in enumerate(zip(tiles, captions, strict=True)):
        row, col = divmod(i, columns)
        y = title_h + cell_gap + row * (caption_h + tile_h + cell_gap) + caption_h
        for j, tile in enumerate(cell):
            x = cell_gap + col * (cell_w + cell_gap) + j * (tile_size + gap)
            if marked is not None and j < len(marked[i]) and marked[i][j]:  # a frame in the gap around the tile
                canvas[y - 2 : y + tile.shape[0] + 2, x - 2 : x + tile.shape[1] + 2] = _RED
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
            if j < len(cell_captions):
                # a caption may run over the gap to the next tile of its cell, never into the next cell
                room = tile_size if j < len(cell) - 1 else tile_size + cell_gap // 2
                texts.append((x, y - 3, _fit(cell_captions[j], _font(font_size), room)))
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for x, y, text in texts:
        _draw_text(draw, (x, y), text, font_size, anchor="ld", spacing=2)
    for i, (line, bold) in enumerate(header):
        fitted = _fit(line, _font(font_size + 1, bold=bold), width - cell_gap)
        _draw_text(draw, (cell_gap, 3 + i * (line_h + 2)), fitted, font_size + 1, bold=bold)
    return np.asarray(image).copy()


def notice(title: str, text: str, width: int = CARD_WIDTH) -> np.ndarray:
    """A card with a bold red title and wrapped text in a red frame, for a picture that cannot be drawn (a
    diverged model): the image tag shows what happened where people look, not a stale picture."""
    font, bold = _font(13), _font(14, bold=True)
    lines = _wrap(text, font, width - 24)
    height = 16 + 20 + 17 * len(lines) + 12
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((1, 1, width - 2, height - 2), outline=tuple(int(v) for v in _RED), width=3)
    draw.text((12, 12), _fit(title, bold, width - 24), fill=tuple(int(v) for v in _RED), font=bold)
    for i, line in enumerate(lines):
        draw.text((12, 36 + 17 * i), line, fill=(0, 0, 0), font=font)
    return np.asarray(image).copy()


def stack(panels: Sequence[np.ndarray]) -> np.ndarray:
    """Panels (H, W, 3) uint8 one below the other, left-aligned on white, as one panel."""
    width = max(p.shape[1] for p in panels)
    out = np.full((sum(p.shape[0] for p in panels), width, 3), 255, dtype=np.uint8)
    y = 0
    for panel in panels:
        out[y : y + panel.shape[0], : panel.shape[1]] = panel
        y += panel.shape[0]
    return out


def _draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    size: int,
    bold: bool = False,
    anchor: str = "la",
    spacing: int = 4,
) -> None:
    """Black ``text`` at ``xy`` as ``draw.text`` draws it (the same lines, masks and blending, so the same pixels),
    with each line's rasterised mask kept: panels repeat their titles and most captions at every probe, and
    rasterising them again was a third of a panel's drawing time."""
    lines = text.split("\n")
    black = draw.draw.draw_ink((0, 0, 0))
    x, top = xy
    step = _line_spacing(size, bold, spacing) if len(lines) > 1 else 0  # as Pillow places multiline text
    if anchor[1] == "d":
        top -= (len(lines) - 1) * step
    for i, line in enumerate(lines):
        mask, (dx, dy) = _mask(line, size, bold, anchor)
        draw.draw.draw_bitmap((int(x) + dx, int(top + i * step) + dy), mask, black)


@lru_cache(maxsize=8)
def _line_spacing(size: int, bold: bool, spacing: int) -> int:
    return int(_font(size, bold).getbbox("A", "L")[3]) + spacing


@lru_cache(maxsize=4096)
def _mask(line: str, size: int, bold: bool, anchor: str) -> tuple[Any, tuple[int, int]]:
    return _font(size, bold).getmask2(line, "L", anchor=anchor)


@lru_cache(maxsize=1024)
def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> tuple[str, ...]:
    """The lines of ``text`` wrapped at spaces to ``width`` pixels."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                candidate = word
            line = candidate
        lines.append(line)
    return tuple(lines)


@lru_cache(maxsize=4096)
def _fit(text: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """Each line of ``text`` cut to ``width`` pixels, with an ellipsis where it was cut."""
    lines = []
    for line in text.split("\n"):
        if font.getlength(line) > width:
            while line and font.getlength(line + "…") > width:
                line = line[:-1]
            line += "…"
        lines.append(line)
    return "\n".join(lines)


# every font a probe step draws with is kept (about seven): the wrap, fit and caption caches key on the font, and a
# font loaded again missed all three
@lru_cache(maxsize=32)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal"))
    return ImageFont.truetype(path, size)


def signed_display(values: Array, scale: float | Array) -> Array:
    """Map signed values to [0, 1] with zero at mid-grey: ``0.5 + values / (2 * scale)``, clamped. Exactly
    invertible inside the range: ``values = (display - 0.5) * 2 * scale``."""
    return (0.5 + values / (2 * scale)).clip(0, 1)


def own_scale(values: Array) -> Array:
    """Min-max scale each item of a batch (N, ...) to [0, 1] on its own; a constant item becomes mid-grey."""
    flat = _numpy(values).reshape(len(values), -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    shape = (-1,) + (1,) * (values.ndim - 1)
    span = (high - low).reshape(shape)
    scaled = (_numpy(values) - low.reshape(shape)) / np.maximum(span, 1e-12)
    return _like(np.where(span > 0, scaled, np.float32(0.5)).astype(np.float32), values)  # type: ignore[return-value]


def grid(
    tiles: Array,
    columns: int,
    zoom: int = 1,
    gap: int = 1,
    marked: Tensor | np.ndarray | None = None,
    background: float = 1.0,
) -> Array:
    """Arrange tiles in a grid, each enlarged ``zoom`` times (nearest), ``gap`` pixels apart; marked tiles get a
    red frame in their gap.

    Args:
        tiles: shape (T, C, h, w) with C in (1, 3), values in [0, 1].
        columns: tiles per row.
        zoom: integer enlargement of each tile.
        gap: pixels between tiles (and the width of a mark's frame).
        marked: optional bool array of shape (T,): tiles to frame in red.
        background: grey level of the gaps.

    Returns:
        Shape (3, H, W), values in [0, 1], of the kind of ``tiles``.
    """
    if tiles.ndim != 4 or tiles.shape[1] not in (1, 3):
        raise ValueError(f"tiles must have shape (T, 1 or 3, h, w), got {tuple(tiles.shape)}")
    t, _, h, w = tiles.shape
    values = np.broadcast_to(_numpy(tiles), (t, 3, h, w)).repeat(zoom, axis=2).repeat(zoom, axis=3)
    h, w = h * zoom, w * zoom
    columns = max(1, min(columns, t))
    rows = -(-t // columns)
    canvas = np.full((3, rows * (h + gap) + gap, columns * (w + gap) + gap), background, dtype=np.float32)
    red = np.array([0.9, 0.1, 0.1], dtype=np.float32)[:, None, None]
    flags = None if marked is None else np.asarray(marked.numpy() if isinstance(marked, Tensor) else marked)
    for i in range(t):
        y, x = gap + (i // columns) * (h + gap), gap + (i % columns) * (w + gap)
        if flags is not None and bool(flags[i]):
            canvas[:, y - gap : y + h + gap, x - gap : x + w + gap] = red
        canvas[:, y : y + h, x : x + w] = values[i]
    return _like(canvas, tiles)  # type: ignore[return-value]


def encode_png(image: np.ndarray) -> bytes:
    """``image`` (H, W, 3) uint8 as a PNG file: rows unfiltered, deflated at the fastest level.

    The writer encodes every panel at every probe, so this is on the suite's bill. Pillow's PNG at its fastest
    settings took 87 ms for one probe step's 18 panels (it chooses a filter for every row); unfiltered rows deflated
    by zlib at level 1 took 51 ms and by ISA-L (the ``isal`` package) 8.5 ms, for 1.5 and 1.8 MB (drawn panels,
    with their flat backgrounds and nearest-neighbour zooms, deflate well unfiltered). Both release the
    interpreter lock while they compress.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    rows = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None
    rows[:, 1:] = image.reshape(height, 3 * width)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no filter, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", _deflate(rows.data)) + chunk(b"IEND", b"")


def _deflate(data: memoryview) -> bytes:
    try:
        from isal import isal_zlib
    except ImportError:  # a platform without an isal wheel
        return zlib.compress(data, 1)
    return bytes(isal_zlib.compress(data, 1))
