"""DeconvNetMonitor: the ZFNet figure, live: each layer's strongest units projected to pixel space beside the
image patches that drove them, on the same probe images at every logging step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_viz.callbacks._base import ProbeLogs, ProbeMonitor
from lightning_viz.diagnostics import rank_correlation
from lightning_viz.methods import RULES, Rule, receptive_fields, stage_layers
from lightning_viz.probing import ProbeContext
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
        self._fields: dict[str, dict[tuple[int, int], list[int]]] = {}  # layer -> (y, x) -> receptive-field box

    @override
    def _options(self) -> dict[str, Any]:
        return {**super()._options(), "top_k": self.top_k, "rule": self.rule}

    @override
    def default_layers(self, model: nn.Module, images: Tensor) -> list[str]:
        return self._shared_setup("stage_layers", lambda: stage_layers(model, images))

    @override
    def compute(self, context: ProbeContext, step: int) -> ProbeLogs:
        model, probe = context.model, context.probe
        images = probe.images
        tops = {name: context.top_units(name, self.top_k) for name in self.layer_names}
        sizes = {name: context.activation(name).shape[-2:] for name in self.layer_names}
        # this probe's top units, then the previous probe's units for the stability score: one batched pass for all
        wanted = {
            name: top.index if name not in self._previous else torch.cat([top.index, self._previous[name][0]])
            for name, top in tops.items()
        }
        projections = context.project_many(wanted, self.rule)

        logs = ProbeLogs()
        display = probe.display_images()
        for name, top in tops.items():
            k = len(top.index)
            boxes = self._boxes(model, tuple(images.shape[1:]), name, top.index[:, 2:].cpu(), sizes[name])
            current = _crop(projections[name][:k], boxes, 0.0)
            if name in self._previous and len(projections[name]) > k:
                before = self._previous[name][1]
                again = _crop(projections[name][k:], self._previous_boxes[name], 0.0)
                stability = rank_correlation(before.flatten(1), again.flatten(1)).mean()
                logs.scalars[f"diagnostics/deconv_stability/{name}"] = float(stability)
            self._previous[name] = (top.index.cpu(), current)
            self._previous_boxes[name] = boxes
            patches = _crop(display[top.index[:, 0].cpu()], boxes, 0.5)
            title = f"Deconvnet ({self.rule}) at {name}, step {step}: top-{k} channels, projection | input patch"
            logs.images[f"deconvnet/{name}"] = self._panel(current, patches, top.index.tolist(), top.value.tolist(),
                                                            int(boxes[0, 1] - boxes[0, 0]), title)  # fmt: skip
        return logs

    def _panel(self, current: Tensor, patches: Tensor, units: list[list[int]], values: list[float], size: int,
               title: str) -> Any:  # fmt: skip
        """The panel, drawn later on the writer thread (every input is a fresh CPU tensor or a list)."""

        shown, seen = _display(current).numpy(), patches.numpy()  # the writer thread runs no torch operation

        def render() -> Any:
            cells, captions = [], []
            for i, (n, c, y, x) in enumerate(units):
                cells.append([shown[i], seen[i]])
                captions.append([f"ch {c}, image {n}\nact {values[i]:.2f}", f"at ({y}, {x})\nfield {size}px"])
            return tile_panel(cells, captions, self.columns, tile_size=112, title=title)

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
        """Square receptive-field boxes of the units at ``yx``; the full field size comes from a central unit. A
        position's box is traced once (it does not depend on the weights) and kept."""
        fields = self._fields.setdefault(layer, {})
        if layer not in self._field_size:
            center = torch.tensor([[int(size[0]) // 2, int(size[1]) // 2]])
            box = receptive_fields(model, image_shape, layer, center)[0]
            self._field_size[layer] = int(max(box[1] - box[0], box[3] - box[2]))
        positions = [tuple(p) for p in yx.tolist()]
        missing = list(dict.fromkeys(p for p in positions if p not in fields))
        if missing:
            traced = receptive_fields(model, image_shape, layer, torch.tensor(missing, dtype=torch.long))
            fields.update(zip(missing, traced.tolist(), strict=True))
        boxes = torch.tensor([fields[p] for p in positions], dtype=torch.long)
        return _square_boxes(boxes, self._field_size[layer], image_shape[-2], image_shape[-1])
