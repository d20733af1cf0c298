"""FilterMonitor: what the filters look like, what they respond to, and what excites the deeper channels, as
training goes (Zeiler & Fergus 2014, Fig. 5 and 6: AlexNet's first layer mixed very high and very low frequencies
and had dead filters; a smaller stride and kernel fixed it)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_viz.callbacks._base import LayerSpec, Needs, ProbeLogs, ProbeMonitor
from lightning_viz.methods import conv_layer_names, resolve_layer, stage_layers, top_k_units
from lightning_viz.methods._hooks import forward_until
from lightning_viz.methods.activation_max import ActivationMaxConfig, maximize_channels
from lightning_viz.probe import ProbeBatch
from lightning_viz.probing import ProbeContext
from lightning_viz.render import grid, own_scale, signed_display, tile_panel

__all__ = ["FilterMonitor", "filter_tiles"]


def filter_tiles(weight: Tensor) -> Tensor:
    """Convolution weights (out, in, k, k) as display tiles: RGB tiles (out, 3, k, k) for 3 input channels,
    otherwise one grey tile per input channel, (out * in, 1, k, k), filter by filter."""
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape (out, in, kh, kw), got {tuple(weight.shape)}")
    if weight.shape[1] == 3:
        return weight
    return weight.reshape(-1, 1, *weight.shape[-2:])


def _channel_scale(maps: Tensor) -> Tensor:
    """Feature maps (C, H, W) for display, each channel on its own scale: non-negative maps (after a ReLU) from 0
    (black, also for a channel silent on this image) to their maximum, signed maps from their minimum."""
    if maps.min() >= 0:
        return maps / maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return own_scale(maps)


class FilterMonitor(ProbeMonitor):
    """Log the first layer's filters, feature maps and activation-maximisation images.

    - ``filters/<first conv>``: the filters three ways, side by side: each on its own scale (their shape), all on
      one shared scale with zero at mid-grey (dead and dominating filters stand out, ZF Fig. 6), and
      ``|W - W_prev|`` since the previous probe on that shared scale (a frozen layer is black, a thrashing one
      bright).
    - ``activations/<layer>``: every channel of each layer for the first ``feature_map_images`` probe images, each
      channel on its own scale; channels that are zero on the whole probe batch are framed in red (their fraction
      is a learning-rate diagnostic: :class:`~lightning_viz.TrainingDiagnostics` logs it).
    - ``activation_max/<layer>``: for the ``activation_max_channels`` strongest channels of the deepest layer, an
      input optimised from noise to excite the channel (jitter, total variation, L2 and range constraints; see
      :mod:`lightning_viz.methods.activation_max`). It costs ``activation_max_steps`` forward and backward passes
      of that many images, so it runs every ``activation_max_every_n_steps`` steps (further apart when the budget
      needs it) and at the final probe, never at step 0 (an untrained network has nothing to show).

    Args:
        layers: layers whose feature maps are shown; None: each convolutional stage's output, up to five.
        filter_layer: the convolution whose filters are shown; None: the first ``nn.Conv2d``.
        feature_map_images: probe images whose feature maps are shown.
        activation_max_layer: the layer for activation maximisation; None: the deepest of ``layers``.
        activation_max_channels: channels optimised (0: no activation maximisation).
        activation_max_steps: optimisation steps.
        activation_max_every_n_steps: cadence of activation maximisation, in optimizer steps.
        **kwargs: probe, cadence and error options of :class:`~lightning_viz.callbacks.ProbeMonitor`.

    Example::

        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[FilterMonitor()])
    """

    namespace = "filters"

    def __init__(
        self,
        layers: str | nn.Module | list[str | nn.Module] | None = None,
        filter_layer: str | nn.Module | None = None,
        feature_map_images: int = 2,
        activation_max_layer: str | nn.Module | None = None,
        activation_max_channels: int = 8,
        activation_max_steps: int = 64,
        activation_max_every_n_steps: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(layers=layers, **kwargs)
        for name, value, least in (
            ("feature_map_images", feature_map_images, 1),
            ("activation_max_channels", activation_max_channels, 0),
            ("activation_max_steps", activation_max_steps, 1),
            ("activation_max_every_n_steps", activation_max_every_n_steps, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        self.filter_layer = filter_layer
        self.feature_map_images = feature_map_images
        self.activation_max_layer = activation_max_layer
        self.activation_max_channels = activation_max_channels
        self.activation_max = ActivationMaxConfig(steps=activation_max_steps, seed=self.seed)
        self.activation_max_every_n_steps = activation_max_every_n_steps
        self._previous_weight: tuple[int, Tensor] | None = None
        self._activation_max_name: str | None = None  # activation_max_layer's name, known from fit start

    @override
    def _options(self) -> dict[str, Any]:
        return {
            **super()._options(),
            "filter_layer": self._layer_key(self.filter_layer),
            "activation_max_layer": self._layer_key(self.activation_max_layer),
            "activation_max_channels": self.activation_max_channels,
            "activation_max_every_n_steps": self.activation_max_every_n_steps,
        }

    @override
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_fit_start(trainer, pl_module)
        for layer in (self.filter_layer, self.activation_max_layer):
            if layer is not None:
                resolve_layer(pl_module, layer)  # fail fast, with close matches
        if self.filter_layer is not None and not isinstance(resolve_layer(pl_module, self.filter_layer)[1], nn.Conv2d):
            raise ValueError(f"filter_layer {self.filter_layer!r} is not an nn.Conv2d")
        if self.activation_max_layer is not None:
            self._activation_max_name = resolve_layer(pl_module, self.activation_max_layer)[0]

    @override
    def _layer_specs(self) -> list[LayerSpec | None]:
        return [*super()._layer_specs(), self.filter_layer, self.activation_max_layer]

    @override
    def default_layers(self, model: nn.Module, images: Tensor) -> list[str]:
        return self._shared_setup("stage_layers", lambda: stage_layers(model, images))

    def _activation_max_target(self, model: nn.Module) -> str:
        target = self.layer_names[-1] if self.activation_max_layer is None else self.activation_max_layer
        return resolve_layer(model, target)[0]

    @override
    def needs(self) -> Needs:
        extra = [] if self._activation_max_name is None else [self._activation_max_name]
        return Needs(layers=[*self.layer_names, *extra])

    @override
    def expensive_parts(self) -> dict[str, int]:
        return {"activation_max": self.activation_max_every_n_steps} if self.activation_max_channels else {}

    @override
    def compute(self, context: ProbeContext, step: int) -> ProbeLogs:
        model, probe = context.model, context.probe
        logs = ProbeLogs()
        name = conv_layer_names(model)[0] if self.filter_layer is None else resolve_layer(model, self.filter_layer)[0]
        logs.images[f"filters/{name}"] = self._filters(resolve_layer(model, name)[1], name, step)
        for layer in self.layer_names:
            act = context.activation(layer)
            dead = act.abs().amax(dim=(0, 2, 3)).cpu() == 0  # the fraction is TrainingDiagnostics' job
            shown = act[: self.feature_map_images].float().cpu().clone()
            logs.images[f"activations/{layer}"] = self._feature_maps(shown, dead, probe, layer, step)
        return logs

    @override
    def part_passes(self, name: str) -> float:
        # each optimisation step: a forward and a backward pass of one image per channel
        return 3.0 * self.activation_max.steps * self.activation_max_channels / self.probe_size

    @override
    def compute_part(self, name: str, context: ProbeContext, step: int) -> ProbeLogs:
        model, probe = context.model, context.probe
        target = self._activation_max_target(model)
        act = context.activation(target)  # captured by the shared pass (see needs)
        return ProbeLogs(images={f"activation_max/{target}": self._activation_max(model, probe, target, act, step)})

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous_weight": self._previous_weight}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._previous_weight = state_dict.get("previous_weight", self._previous_weight)

    def _filters(self, conv: nn.Module, name: str, step: int) -> Any:  # conv: the resolved nn.Conv2d
        assert isinstance(conv, nn.Conv2d)
        weight = conv.weight.detach().float().cpu().clone()  # a copy: on the CPU .float().cpu() is the parameter
        previous = self._previous_weight
        self._previous_weight = (step, weight)

        # the displays are computed here; the writer thread draws from numpy arrays and runs no torch operation
        tiles = filter_tiles(weight)
        scale = float(weight.abs().max().clamp_min(1e-12))
        change = torch.zeros_like(weight) if previous is None else (weight - previous[1]).abs()
        shown = [
            own_scale(tiles).numpy(),
            signed_display(tiles, scale).numpy(),
            (filter_tiles(change) / scale).clamp(0, 1).numpy(),
        ]
        since = "no previous probe" if previous is None else f"since step {previous[0]}"
        out, k = weight.shape[0], weight.shape[-1]
        per_filter = 1 if weight.shape[1] == 3 else weight.shape[1]  # a filter's tiles stay on one row
        if per_filter <= 8:
            columns = per_filter * max(1, math.ceil(math.sqrt(out) / per_filter))
        else:
            columns = math.ceil(math.sqrt(len(tiles)))
        zoom = max(1, 48 // k)
        rms = weight.flatten(1).pow(2).mean(dim=1).sqrt()
        relative = float(change.norm() / weight.norm().clamp_min(1e-12))
        captions = [
            [
                f"each filter on its own scale\n{out} filters {k}x{k}",
                f"one scale, zero = grey: max |w| {scale:.3g}\nRMS median {float(rms.median()):.3g}, "
                f"max {float(rms.max()):.3g}",
                f"|W - W_prev| {since}, same scale\nrelative change {relative:.3g}",
            ]
        ]
        title = f"Filters of {name}, step {step}"

        def render() -> Any:
            backgrounds = (1.0, 1.0, 0.5)
            grids = [grid(tile, columns, zoom, background=b) for tile, b in zip(shown, backgrounds, strict=True)]
            return tile_panel([grids], captions, columns=1, tile_size=grids[0].shape[-1], title=title)

        return render

    def _feature_maps(self, act: Tensor, dead: Tensor, probe: ProbeBatch, layer: str, step: int) -> Any:
        """The panel of ``act`` (the first probe images' maps, a CPU copy), drawn later on the writer thread."""
        count = min(self.feature_map_images, len(act))
        c, w = act.shape[1], act.shape[-1]
        captions = []
        for i in range(count):
            label = "" if probe.labels is None else f" ({probe.class_name(int(probe.labels[i]))})"
            captions.append(f"probe image {i}{label}\n{c} channels, {int(dead.sum())} dead on the whole probe (red)")
        title = f"Feature maps of {layer}, step {step}"

        scaled = [_channel_scale(act[i])[:, None].numpy() for i in range(count)]  # the writer runs no torch
        marked = dead.cpu().numpy()

        def render() -> Any:
            columns = math.ceil(math.sqrt(c))
            zoom = max(1, 400 // (columns * w))  # about 400 px per image, whatever the map size
            grids = [grid(maps, columns, zoom, marked=marked) for maps in scaled]
            return tile_panel([grids], [captions], columns=1, tile_size=grids[0].shape[-1], title=title)

        return render

    def _activation_max(self, model: nn.Module, probe: ProbeBatch, layer: str, act: Tensor, step: int) -> Any:
        top = top_k_units(act, self.activation_max_channels)
        channels = top.index[:, 1]
        images = probe.images
        if probe.mean is not None and probe.std is not None:
            mean, std = torch.tensor(probe.mean), torch.tensor(probe.std)
            low, high = (0 - mean) / std, (1 - mean) / std
        else:
            low, high = images.amin(dim=(0, 2, 3)).cpu(), images.amax(dim=(0, 2, 3)).cpu()
        config = self.activation_max
        c, h, w = images.shape[1:]
        optimised, _ = maximize_channels(model, layer, channels, (c, h, w), low, high, config)
        with torch.no_grad():
            reached = forward_until(model, optimised.clone(), {layer: resolve_layer(model, layer)[1]})[layer]
        reached = reached[torch.arange(len(channels)), channels.to(reached.device)].flatten(1).mean(dim=1).cpu()
        on_probe = act[:, channels.to(act.device)].mean(dim=(2, 3)).amax(dim=0).cpu()
        shown = ProbeBatch(optimised.float().cpu(), mean=probe.mean, std=probe.std).display_images().numpy()
        cells = [[shown[i]] for i in range(len(channels))]
        captions = [
            [f"ch {int(ch)}: mean act {float(reached[i]):.2f}\nbest probe image {float(on_probe[i]):.2f}"]
            for i, ch in enumerate(channels.tolist())
        ]
        title = f"Activation maximisation at {layer}, step {step} ({config.steps} steps)"
        return lambda: tile_panel(cells, captions, columns=None, tile_size=128, title=title)
