"""GradCAMMonitor: where the model looks, on the same probe images at every logging step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_viz._checks import check_int
from lightning_viz.callbacks._base import Needs, ProbeLogs, ProbeMonitor
from lightning_viz.methods import default_cam_layer
from lightning_viz.probing import ProbeContext
from lightning_viz.render import CARD_WIDTH, overlay, tile_panel

__all__ = ["GradCAMMonitor"]


class GradCAMMonitor(ProbeMonitor):
    """Log Grad-CAM panels to TensorBoard as ``gradcam/<layer>/images_<first>-<last>``.

    For each probe image a row shows the image (captioned with its true class), the Grad-CAM overlay for the
    predicted class and the overlay for the true class, each captioned with the class and its softmax
    probability; a wrong prediction is framed in red and marked ✗. Each map is scaled to its own maximum (the
    panel says so): a map shows where the evidence for its class lies, not how strong it is. Panels hold
    ``images_per_panel`` probe images each, sized for TensorBoard's default image card (350 px), so that
    they read without "Show actual image size". With no ``layers`` the last convolutional feature map before
    global pooling is used (``layer4`` on a ResNet). One forward and two partial backward passes per probe,
    whatever the number of layers.

    Args:
        layers: layers to explain, by dotted name or module; None: the last convolutional feature map.
        alpha: heatmap weight in the overlay.
        cmap: matplotlib colormap of the heatmap.
        columns: probe images per row of a panel; None: as many as fit in a card (one).
        images_per_panel: probe images per panel (one image tag each).
        **kwargs: probe, cadence and error options of :class:`~lightning_viz.callbacks.ProbeMonitor`
            (``probe``, ``probe_size``, ``every_n_steps``, ``every_n_epochs``, ``early_steps``, ``on_error``,
            ``seed``).

    Example::

        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[GradCAMMonitor(every_n_steps=50)])
    """

    namespace = "gradcam"

    def __init__(
        self,
        layers: str | nn.Module | list[str | nn.Module] | None = None,
        alpha: float = 0.5,
        cmap: str = "jet",
        columns: int | None = None,
        images_per_panel: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(layers=layers, **kwargs)
        check_int("images_per_panel", images_per_panel)
        check_int("columns", columns, none=True)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        from matplotlib import colormaps

        if cmap not in colormaps:
            raise ValueError(f"unknown matplotlib colormap {cmap!r}")
        self.alpha = alpha
        self.cmap = cmap
        self.columns = columns
        self.images_per_panel = images_per_panel

    @override
    def options(self) -> dict[str, Any]:
        return {**super().options(), "alpha": self.alpha, "cmap": self.cmap}

    @override
    def default_layers(self, model: nn.Module, images: Tensor) -> list[str]:
        return [default_cam_layer(model, images)]

    @override
    def needs(self) -> Needs:
        return Needs(layers=self.layer_names, gradients=True)

    @override
    def compute(self, context: ProbeContext, step: int) -> ProbeLogs:
        probe = context.probe
        targets: list[Any] = ["predicted"] if probe.labels is None else ["predicted", "true"]
        maps = {layer: [context.grad_cam(layer, which).cpu() for which in targets] for layer in self.layer_names}
        probs = torch.softmax(context.logits.float(), dim=1).cpu()
        preds = probs.argmax(dim=1)
        labels = None if probe.labels is None else probe.labels.cpu()
        images = probe.display_images()
        wrong = [False] * len(preds) if labels is None else (preds != labels).tolist()
        captions, marked = [], []
        for i, pred in enumerate(preds.tolist()):
            first = f"image {i}" + ("" if labels is None else f"\n{probe.class_name(int(labels[i]))}")
            mark = "✗ " if wrong[i] else ""
            row = [first, f"{mark}predicted {probs[i, pred]:.2f}\n{probe.class_name(pred)}"]
            if labels is not None:
                row.append(f"true {probs[i, labels[i]]:.2f}\n{probe.class_name(int(labels[i]))}")
            captions.append(row)
            marked.append([False, wrong[i], False])
        logs = ProbeLogs()
        size, per = len(images), self.images_per_panel
        width = max(1, len(str(size - 1)))
        for layer, layer_maps in maps.items():
            for start in range(0, size, per):
                stop = min(start + per, size)
                shown = slice(start, stop)
                tag = f"gradcam/{layer}/images_{start:0{width}d}-{stop - 1:0{width}d}"
                title = f"Grad-CAM at {layer}, step {step}: images {start}-{stop - 1}"
                columns = "input | predicted | true class" if labels is not None else "input | predicted class"
                subtitle = (f"{columns} with its probability; each map scaled to its own maximum (red); ✗ in red: "
                            "a wrong prediction")  # fmt: skip
                logs.images[tag] = self._panel(images[shown], [m[shown] for m in layer_maps], captions[shown],
                                               marked[shown], title, subtitle)  # fmt: skip
        if labels is not None:
            logs.scalars["gradcam/probe_accuracy"] = float((preds == labels).float().mean())
        return logs

    def _panel(self, images: Tensor, maps: list[Tensor], captions: list[list[str]], marked: list[list[bool]],
               title: str, subtitle: str) -> Any:  # fmt: skip
        """The panel, drawn later on the writer thread from numpy views of CPU tensors nothing modifies."""

        shown, heat = images.numpy(), [m.numpy() for m in maps]  # the writer thread runs no torch operation
        tiles = 1 + len(maps)
        columns = 1 if self.columns is None else self.columns
        # tiles as wide as a card allows; an image smaller than that is enlarged by a whole factor when one fits
        room = (CARD_WIDTH - 8 * (columns + 1)) // columns
        size = (room - 3 * (tiles - 1)) // tiles
        width = shown.shape[-1]
        if width <= size and (size // width) * width >= 0.75 * size:
            size = (size // width) * width

        def render() -> Any:
            overlays = [overlay(shown, m, self.alpha, self.cmap) for m in heat]
            cells = [[shown[i], *(o[i] for o in overlays)] for i in range(len(shown))]
            return tile_panel(cells, captions, columns, tile_size=size, title=title, subtitle=subtitle,
                              marked=marked, max_width=CARD_WIDTH * columns)  # fmt: skip

        return render
