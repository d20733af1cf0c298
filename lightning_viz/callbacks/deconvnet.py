"""DeconvNetMonitor: the ZFNet figure, live: each layer's strongest units projected to pixel space beside the
image patches that drove them, on the same probe images at every logging step."""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from lightning_viz._checks import check_int
from lightning_viz.callbacks._base import ProbeLogs, ProbeMonitor
from lightning_viz.diagnostics import rank_correlation
from lightning_viz.methods import RULES, Rule, receptive_fields, top_images
from lightning_viz.probing import ProbeContext
from lightning_viz.render import CARD_WIDTH, grid, tile_panel

__all__ = ["DeconvNetMonitor"]


def _square_boxes(boxes: Tensor, size: int, height: int, width: int) -> Tensor:
    """Grow receptive-field boxes clipped by the image border to the full ``size``, beyond the border."""
    y0, y1, x0, x1 = boxes.unbind(dim=1)
    y0 = torch.where((y0 == 0) & (y1 - y0 < size), torch.where(y1 == height, (y1 - size) // 2, y1 - size), y0)
    x0 = torch.where((x0 == 0) & (x1 - x0 < size), torch.where(x1 == width, (x1 - size) // 2, x1 - size), x0)
    return torch.stack([y0, y0 + size, x0, x0 + size], dim=1)


def _crop(images: Tensor, boxes: Tensor, fill: float) -> Tensor:
    """Crop (M, C, H, W) images to square boxes that may reach past the border, which is filled with ``fill``."""
    size = int(boxes[0, 1] - boxes[0, 0])
    padded = torch.nn.functional.pad(images, (size, size, size, size), value=fill)
    return torch.stack(
        [
            padded[i, :, y0 + size : y1 + size, x0 + size : x1 + size]
            for i, (y0, y1, x0, x1) in enumerate(boxes.tolist())
        ]
    )


def _display(projections: Tensor) -> Tensor:
    """Signed projections for display, each on its own scale, zero at mid-grey (ZF Fig. 2). The scale is the
    99th percentile of |p| rather than its maximum, so that one extreme pixel does not leave the rest grey, and no
    less than a tenth of the maximum, so that a sparse projection is not blown up."""
    magnitude = projections.flatten(1).abs()
    scale = torch.maximum(torch.quantile(magnitude, 0.99, dim=1), 0.1 * magnitude.amax(dim=1))
    scale = scale.clamp_min(1e-12)[:, None, None, None]
    return (0.5 + 0.5 * projections / scale).clamp(0, 1)


_SCALES = (*range(8, 0, -1), *(1 / d for d in range(2, 17)))


def _grid_scales(field: int, side: int, room: int) -> tuple[float, float]:
    """Scales of the projection grid and the patch grid (``side`` x ``side`` tiles of ``field`` px, 1 px gaps) side
    by side in ``room`` px: whole numbers, or one over a whole number when a field is too large. The projections
    get the largest scale that leaves the patches at least half of it."""

    def width(scale: float) -> int:
        return side * max(1, round(field * scale)) + side + 1

    for shown in _SCALES:
        for seen in _SCALES:
            if shown / 2 <= seen <= shown and width(shown) + width(seen) <= room:
                return shown, seen
    return _SCALES[-1], _SCALES[-1]


def _rescaled(tiles: Tensor, field: int, scale: float) -> Tensor:
    """Tiles averaged down to ``scale`` of their size when it is below 1 (enlargement is the grid's, by whole
    numbers, later)."""
    if scale >= 1:
        return tiles
    size = max(1, round(field * scale))
    return F.interpolate(tiles, size=(size, size), mode="area")


def _scale_text(scale: float) -> str:
    return f"x{int(scale)}" if scale >= 1 else f"1/{round(1 / scale)}"


def _pad_to(picture: np.ndarray, width: int) -> np.ndarray:
    """A (3, H, W) picture padded with white on the right and bottom to ``width`` x ``width`` (a grid with fewer
    rows than its side, when a channel peaks in fewer probe images)."""
    out = np.ones((3, max(width, picture.shape[1]), width), dtype=np.float32)
    out[:, : picture.shape[1], : picture.shape[2]] = picture
    return out


class DeconvNetMonitor(ProbeMonitor):
    """Log Zeiler-Fergus deconvnet projections as ``deconvnet/<layer>``.

    In the default layout, ``"fig2"`` (Zeiler & Fergus 2014, Fig. 2), each of a layer's ``top_k`` strongest channels
    gets a row: its activation in each of the ``patches`` probe images where it peaks highest, projected back to
    pixel space (a 3x3 grid, each projection on its own scale with zero at mid-grey) beside the input patches that
    drove it (the unit's receptive field, traced through the network). Both grids are drawn at a whole-number scale
    so that the stride's pixel lattice shows as it is, and sized for TensorBoard's default image card. The
    ``"units"`` layout shows one unit per channel for ``top_k`` channels, each at its strongest (image, position).
    All units of a layer go through one batched forward and backward pass. The projections of the previous
    probe's strongest unit of each channel are recomputed in the same pass, and their rank correlation with the
    previous projections is logged as ``diagnostics/deconv_stability/<layer>``: low while a feature is forming,
    near 1 once it is stable.

    Args:
        layers: layers to project from; None: each convolutional stage's output, up to five.
        top_k: channels shown per layer; None: 4 in the ``"fig2"`` layout, 9 in ``"units"``.
        rule: ReLU backward rule: ``"deconvnet"`` (Zeiler & Fergus), ``"guided"`` or ``"gradient"``.
        columns: units per row of the ``"units"`` panel; None: as many as fit in a card.
        layout: ``"fig2"`` (the top probe images of each channel) or ``"units"`` (one unit per channel).
        patches: probe images per channel in the ``"fig2"`` layout (9: a 3x3 grid, as Zeiler and Fergus).
        **kwargs: probe, cadence and error options of :class:`~lightning_viz.callbacks.ProbeMonitor`.

    Example::

        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[DeconvNetMonitor(top_k=6)])
    """

    namespace = "deconvnet"

    def __init__(
        self,
        layers: str | nn.Module | list[str | nn.Module] | None = None,
        top_k: int | None = None,
        rule: Rule = "deconvnet",
        columns: int | None = None,
        layout: Literal["fig2", "units"] = "fig2",
        patches: int = 9,
        **kwargs: Any,
    ) -> None:
        super().__init__(layers=layers, **kwargs)
        if layout not in ("fig2", "units"):
            raise ValueError(f"layout must be 'fig2' or 'units', got {layout!r}")
        if top_k is None:
            top_k = 4 if layout == "fig2" else 9
        check_int("top_k", top_k)
        check_int("patches", patches)
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        check_int("columns", columns, none=True)
        self.top_k = top_k
        self.rule: Rule = rule
        self.columns = columns
        self.layout = layout
        self.patches = patches
        self._previous: dict[str, tuple[Tensor, Tensor]] = {}  # layer -> (units (k, 4), cropped projections)
        self._previous_boxes: dict[str, Tensor] = {}
        self._field_size: dict[str, int] = {}
        self._fields: dict[str, dict[tuple[int, int], list[int]]] = {}  # layer -> (y, x) -> receptive-field box

    @override
    def options(self) -> dict[str, Any]:
        options = {**super().options(), "top_k": self.top_k, "rule": self.rule, "layout": self.layout}
        return {**options, "patches": self.patches} if self.layout == "fig2" else options

    @override
    def compute(self, context: ProbeContext, step: int) -> ProbeLogs:
        model, probe = context.model, context.probe
        images = probe.images
        tops = {name: context.top_units(name, self.top_k) for name in self.layer_names}
        sizes = {name: context.activation(name).shape[-2:] for name in self.layer_names}
        shown: dict[str, list[Tensor]] = {}  # layer -> the units of each row of the panel
        for name, top in tops.items():
            if self.layout == "fig2":
                act = context.activation(name)
                shown[name] = [top_images(act, int(c), self.patches) for c in top.index[:, 1].tolist()]
            else:
                shown[name] = [row[None] for row in top.index.cpu()]
        # the shown units, then the previous probe's units for the stability score: one batched pass per layer
        wanted = {
            name: torch.cat([*shown[name], *([self._previous[name][0]] if name in self._previous else [])])
            for name in tops
        }
        projections = context.project_many(wanted, self.rule)

        logs = ProbeLogs()
        display = probe.display_images()
        for name, top in tops.items():
            units = torch.cat(shown[name])
            boxes = self._boxes(model, tuple(images.shape[1:]), name, units[:, 2:], sizes[name])
            crops = _crop(projections[name][: len(units)], boxes, 0.0)
            patches = _crop(display[units[:, 0]], boxes, 0.5)
            # each channel's strongest unit (its first row): the stability score compares it across probes
            rows = [len(r) for r in shown[name]]
            firsts = torch.tensor([0, *itertools.accumulate(rows)])[:-1]
            current = crops[firsts]
            if name in self._previous and len(projections[name]) > len(units):
                before = self._previous[name][1]
                again = _crop(projections[name][len(units) :], self._previous_boxes[name], 0.0)
                stability = rank_correlation(before.flatten(1), again.flatten(1)).mean()
                logs.scalars[f"diagnostics/deconv_stability/{name}"] = float(stability)
            self._previous[name] = (top.index.cpu(), current)
            self._previous_boxes[name] = boxes[firsts]
            field = int(boxes[0, 1] - boxes[0, 0])
            values = context.activation(name)[units[:, 0], units[:, 1], units[:, 2], units[:, 3]].float().cpu()
            if self.layout == "fig2":
                logs.images[f"deconvnet/{name}"] = self._fig2(crops, patches, units, values, rows, field, name, step,
                                                              len(images))  # fmt: skip
            else:
                logs.images[f"deconvnet/{name}"] = self._units(crops, patches, units, values, field, name, step)
        return logs

    def _fig2(self, crops: Tensor, patches: Tensor, units: Tensor, values: Tensor, rows: list[int], field: int,
              layer: str, step: int, probe_size: int) -> Any:  # fmt: skip
        """ZF Fig. 2: per channel, a grid of projections beside a grid of the patches, each at a whole-number
        scale; the projections, whose pixel lattice is the point, get the larger one."""
        side = math.ceil(math.sqrt(self.patches))
        room = CARD_WIDTH - 2 * 8 - 4  # two grids side by side in a card, 4 px apart
        shown_scale, seen_scale = _grid_scales(field, side, room)
        shown, seen = _rescaled(_display(crops), field, shown_scale), _rescaled(patches, field, seen_scale)
        shown_np, seen_np = shown.numpy(), seen.numpy()  # the writer thread runs no torch operation
        zoom_shown, zoom_seen = max(1, int(shown_scale)), max(1, int(seen_scale))
        span_shown, span_seen = shown.shape[-1] * zoom_shown, seen.shape[-1] * zoom_seen
        starts = [0, *itertools.accumulate(rows)]
        scale = f"{_scale_text(shown_scale)} | {_scale_text(seen_scale)}"
        captions = []
        for r in range(len(rows)):
            first, last = float(values[starts[r]]), float(values[starts[r + 1] - 1])
            captions.append([f"channel {int(units[starts[r], 1])}: act {first:.3g} to {last:.3g}"])
        title = f"Deconvnet at {layer}, step {step}"
        subtitle = (f"the {len(rows)} strongest channels, each in its top {self.patches} of {probe_size} probe "
                    f"images: {self.rule} projection (own scale, 0 = grey) | input patch; {field} px field, "
                    f"shown {scale}")  # fmt: skip

        def render() -> Any:
            cells = []
            for r in range(len(rows)):
                part = slice(starts[r], starts[r + 1])
                left = _pad_to(grid(shown_np[part], side, zoom_shown, gap=1), side * span_shown + side + 1)
                right = _pad_to(grid(seen_np[part], side, zoom_seen, gap=1), side * span_seen + side + 1)
                pair = np.ones((3, left.shape[1], left.shape[2] + 4 + right.shape[2]), dtype=np.float32)
                pair[:, :, : left.shape[2]] = left
                pair[:, : right.shape[1], left.shape[2] + 4 :] = right
                cells.append([pair])
            return tile_panel(cells, captions, columns=1, tile_size=cells[0][0].shape[-1], title=title,
                              subtitle=subtitle, min_width=CARD_WIDTH)  # fmt: skip

        return render

    def _units(self, crops: Tensor, patches: Tensor, units: Tensor, values: Tensor, field: int, layer: str,
               step: int) -> Any:  # fmt: skip
        """One unit per channel: its projection beside its input patch."""
        shown, seen = _display(crops).numpy(), patches.numpy()  # the writer thread runs no torch operation
        size = field * max(1, 150 // field) if field <= 150 else 150
        captions = [
            [f"ch {c}, image {n}\nact {float(values[i]):.2f}", f"at ({y}, {x})\nfield {field}px"]
            for i, (n, c, y, x) in enumerate(units.tolist())
        ]
        title = f"Deconvnet at {layer}, step {step}"
        subtitle = f"top-{len(units)} channels: projection ({self.rule} rule; own scale, zero = grey) | input patch"

        def render() -> Any:
            cells = [[shown[i], seen[i]] for i in range(len(shown))]
            return tile_panel(cells, captions, self.columns, tile_size=size, title=title, subtitle=subtitle,
                              max_width=CARD_WIDTH * (self.columns or 1), min_width=CARD_WIDTH)  # fmt: skip

        return render

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous": dict(self._previous), "previous_boxes": dict(self._previous_boxes)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._previous = dict(state_dict.get("previous", {}))
        self._previous_boxes = dict(state_dict.get("previous_boxes", {}))

    def _boxes(self, model: nn.Module, image_shape: tuple[int, ...], layer: str, yx: Tensor, size: Any) -> Tensor:
        """Square receptive-field boxes of the units at ``yx``; the full field size comes from a central unit.

        Boxes do not depend on the weights, so they are traced once: at a layer's first probe, the diagonal units
        (one per row and one per column) and three off the diagonal in one pass; where those three show that a
        unit's rows depend only on its row and its columns only on its column (any network of convolutions and
        poolings), every box follows from the diagonal, else each new position is traced when it first shows."""
        if layer not in self._field_size:
            self._trace_fields(model, image_shape, layer, (int(size[0]), int(size[1])))
        fields = self._fields[layer]
        positions = [tuple(p) for p in yx.tolist()]
        missing = list(dict.fromkeys(p for p in positions if p not in fields))
        if missing:
            traced = receptive_fields(model, image_shape, layer, torch.tensor(missing, dtype=torch.long))
            fields.update(zip(missing, traced.tolist(), strict=True))
        boxes = torch.tensor([fields[p] for p in positions], dtype=torch.long)
        return _square_boxes(boxes, self._field_size[layer], image_shape[-2], image_shape[-1])

    def _trace_fields(self, model: nn.Module, image_shape: tuple[int, ...], layer: str, size: tuple[int, int]) -> None:
        h, w = size
        diagonal = [(min(i, h - 1), min(i, w - 1)) for i in range(max(h, w))]
        checks = [(0, w - 1), (h - 1, 0), (h // 2, w // 3)]
        center = (h // 2, w // 2)
        positions = list(dict.fromkeys([*diagonal, *checks, center]))
        traced = receptive_fields(model, image_shape, layer, torch.tensor(positions, dtype=torch.long)).tolist()
        fields = dict(zip(positions, traced, strict=True))
        box = fields[center]
        self._field_size[layer] = int(max(box[1] - box[0], box[3] - box[2]))
        rows = {y: fields[(y, x)][:2] for y, x in diagonal}
        cols = {x: fields[(y, x)][2:] for y, x in diagonal}
        if all(fields[p] == [*rows[p[0]], *cols[p[1]]] for p in checks):
            fields = {(y, x): [*rows[y], *cols[x]] for y in range(h) for x in range(w)}
        self._fields[layer] = fields
