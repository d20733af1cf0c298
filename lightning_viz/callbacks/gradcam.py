"""GradCAMMonitor: where the model looks, on the same probe images at every logging step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_viz.callbacks._base import Needs, ProbeLogs, ProbeMonitor
from lightning_viz.methods import default_cam_layer
from lightning_viz.probing import ProbeContext
from lightning_viz.render import overlay, tile_panel

__all__ = ["GradCAMMonitor"]


class GradCAMMonitor(ProbeMonitor):
    """Log Grad-CAM panels to TensorBoard as ``gradcam/<layer>``.

    For each probe image the panel shows the image (captioned with its true class), the Grad-CAM overlay for the
    predicted class and the overlay for the true class, each captioned with the class and its softmax
    probability. With no ``layers`` the last convolutional feature map before global pooling is used
    (``layer4`` on a ResNet). One forward and two partial backward passes per probe, whatever the number of
    layers.

    Args:
        layers: layers to explain, by dotted name or module; None: the last convolutional feature map.
        alpha: heatmap weight in the overlay.
        cmap: matplotlib colormap of the heatmap.
        columns: probe images per row of the panel; None: as many as fit in 1,280 px.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(layers=layers, **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        from matplotlib import colormaps

        if columns is not None and (not isinstance(columns, int) or columns <= 0):
            raise ValueError(f"columns must be a positive int or None, got {columns!r}")
        if cmap not in colormaps:
            raise ValueError(f"unknown matplotlib colormap {cmap!r}")
        self.alpha = alpha
        self.cmap = cmap
        self.columns = columns

    @override
    def _options(self) -> dict[str, Any]:
        return {**super()._options(), "alpha": self.alpha, "cmap": self.cmap}

    @override
    def default_layers(self, model: nn.Module, images: Tensor) -> list[str]:
        return [self._shared_setup("cam_layer", lambda: default_cam_layer(model, images))]

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
        captions = []
        for i, pred in enumerate(preds.tolist()):
            first = "input" if labels is None else f"true: {probe.class_name(int(labels[i]))}"
            row = [first, f"pred: {probe.class_name(pred)}\np={probs[i, pred]:.2f}"]
            if labels is not None:
                row.append(f"true: {probe.class_name(int(labels[i]))}\np={probs[i, labels[i]]:.2f}")
            captions.append(row)
        logs = ProbeLogs()
        for layer, layer_maps in maps.items():
            title = f"Grad-CAM at {layer}, step {step}: input | predicted class | true class"
            logs.images[f"gradcam/{layer}"] = self._panel(images, layer_maps, captions, title)
        if labels is not None:
            logs.scalars["gradcam/probe_accuracy"] = float((preds == labels).float().mean())
        return logs

    def _panel(self, images: Tensor, maps: list[Tensor], captions: list[list[str]], title: str) -> Any:
        """The panel, drawn later on the writer thread from numpy views of CPU tensors nothing modifies."""

        shown, heat = images.numpy(), [m.numpy() for m in maps]  # the writer thread runs no torch operation

        def render() -> Any:
            overlays = [overlay(shown, m, self.alpha, self.cmap) for m in heat]
            cells = [[shown[i], *(o[i] for o in overlays)] for i in range(len(shown))]
            return tile_panel(cells, captions, self.columns, title=title)

        return render
