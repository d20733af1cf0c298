"""DeconvNetMonitor: the ZFNet figure, live: each layer's strongest units projected to pixel space beside the
image patches that drove them, on the same probe images at every logging step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_viz.callbacks._base import ProbeLogs, ProbeMonitor
from lightning_viz.diagnostics import rank_correlation
from lightning_viz.methods import RULES, Rule, project_units, receptive_fields, resolve_layer, stage_layers, top_k_units
from lightning_viz.methods._hooks import forward_until
from lightning_viz.probe import ProbeBatch
from lightning_viz.render import tile_panel

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


class DeconvNetMonitor(ProbeMonitor):
    """Log Zeiler-Fergus deconvnet projections as ``deconvnet/<layer>``.

    For each chosen layer the ``top_k`` channels with the largest activation over the probe batch are taken, each
    at its strongest (image, position); that single activation is projected back to pixel space and shown beside
    the input patch the unit sees (its receptive field, traced through the network), both cropped to that field.
    All units of all layers go through one batched forward and backward pass. The projections of the previous
    probe's units are recomputed in the same pass, and their rank correlation with the previous projections is
    logged as ``diagnostics/deconv_stability/<layer>``: low while a feature is forming, near 1 once it is stable.

    Args:
        layers: layers to project from; None: each convolutional stage's output, up to five.
        top_k: channels shown per layer.
        rule: ReLU backward rule: ``"deconvnet"`` (Zeiler & Fergus), ``"guided"`` or ``"gradient"``.
        columns: units per row of the panel; None: as many as fit in 1,280 px.
        **kwargs: probe, cadence and error options of :class:`~lightning_viz.callbacks.ProbeMonitor`.

    Example::

        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[DeconvNetMonitor(top_k=9)])
    """

    namespace = "deconvnet"

    def __init__(
        self,
        layers: str | nn.Module | list[str | nn.Module] | None = None,
        top_k: int = 9,
        rule: Rule = "deconvnet",
        columns: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(layers=layers, **kwargs)
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        if columns is not None and (not isinstance(columns, int) or columns <= 0):
            raise ValueError(f"columns must be a positive int or None, got {columns!r}")
        self.top_k = top_k
        self.rule: Rule = rule
        self.columns = columns
        self._previous: dict[str, tuple[Tensor, Tensor]] = {}  # layer -> (units (k, 4), cropped projections)
        self._previous_boxes: dict[str, Tensor] = {}
        self._field_size: dict[str, int] = {}

    @override
    def _options(self) -> dict[str, Any]:
        return {**super()._options(), "top_k": self.top_k, "rule": self.rule}

    @override
    def default_layers(self, model: nn.Module, images: Tensor) -> list[str]:
        return stage_layers(model, images)

    @override
    def compute(self, model: nn.Module, probe: ProbeBatch, step: int) -> ProbeLogs:
        images = probe.images
        layers = dict(resolve_layer(model, name) for name in self.layer_names)
        with torch.no_grad():  # a copy goes in: a forward pass may modify its input in place
            acts = forward_until(model, images.clone(), layers)
        tops = {name: top_k_units(acts[name], self.top_k) for name in layers}
        sizes = {name: acts[name].shape[-2:] for name in layers}
        del acts

        # one image per unit: this probe's top units, then the previous probe's units for the stability score
        batches, units, offset = [], {}, 0
        for name, top in tops.items():
            index = top.index if name not in self._previous else torch.cat([top.index, self._previous[name][0]])
            batches.append(images[index[:, 0]])
            units[name] = (torch.arange(offset, offset + len(index)), index[:, 1:].cpu())
            offset += len(index)
        projections = project_units(model, torch.cat(batches), units, self.rule).float().cpu()

        logs = ProbeLogs()
        display = probe.display_images()
        for name, top in tops.items():
            rows = units[name][0]
            k = len(top.index)
            boxes = self._boxes(model, tuple(images.shape[1:]), name, top.index[:, 2:].cpu(), sizes[name])
            current = _crop(projections[rows[:k]], boxes, 0.0)
            if name in self._previous and len(rows) > k:
                before = self._previous[name][1]
                again = _crop(projections[rows[k:]], self._previous_boxes[name], 0.0)
                stability = rank_correlation(before.flatten(1), again.flatten(1)).mean()
                logs.scalars[f"diagnostics/deconv_stability/{name}"] = float(stability)
            self._previous[name] = (top.index, current)
            self._previous_boxes[name] = boxes
            patches = _crop(display[top.index[:, 0].cpu()], boxes, 0.5)
            shown = _display(current)
            size = int(boxes[0, 1] - boxes[0, 0])
            cells, captions = [], []
            for i, (n, c, y, x) in enumerate(top.index.tolist()):
                cells.append([shown[i], patches[i]])
                captions.append([f"ch {c}, image {n}\nact {float(top.value[i]):.2f}", f"at ({y}, {x})\nfield {size}px"])
            title = f"Deconvnet ({self.rule}) at {name}, step {step}: top-{k} channels, projection | input patch"
            logs.images[f"deconvnet/{name}"] = tile_panel(cells, captions, self.columns, tile_size=112, title=title)
        return logs

    def _boxes(self, model: nn.Module, image_shape: tuple[int, ...], layer: str, yx: Tensor, size: Any) -> Tensor:
        """Square receptive-field boxes of the units at ``yx``; the full field size comes from a central unit."""
        if layer not in self._field_size:
            center = torch.tensor([[int(size[0]) // 2, int(size[1]) // 2]])
            box = receptive_fields(model, image_shape, layer, center)[0]
            self._field_size[layer] = int(max(box[1] - box[0], box[3] - box[2]))
        boxes = receptive_fields(model, image_shape, layer, yx)
        return _square_boxes(boxes, self._field_size[layer], image_shape[-2], image_shape[-1])
