"""FilterMonitor: what the filters look like, what they respond to, and what excites the deeper channels, as
training goes (Zeiler & Fergus 2014, Fig. 5 and 6: AlexNet's first layer mixed very high and very low frequencies
and had dead filters; a smaller stride and kernel fixed it)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_viz._checks import check_int
from lightning_viz.callbacks._base import LayerSpec, Needs, Part, ProbeLogs, ProbeMonitor
from lightning_viz.diagnostics import beyond_nyquist, filter_spectra, kernel_energy, nyquist_half_width, rim_share
from lightning_viz.methods import conv_layer_names, forward_until, resolve_layer, top_k_units
from lightning_viz.methods.activation_max import ActivationMaxConfig, maximize_channels
from lightning_viz.probe import ProbeBatch
from lightning_viz.probing import ProbeContext
from lightning_viz.render import CARD_WIDTH, colorize, grid, own_scale, signed_display, stack, tile_panel

__all__ = ["FilterMonitor", "filter_tiles"]


def filter_tiles(weight: Tensor) -> Tensor:
    """Convolution weights (out, in, k, k) as display tiles: RGB tiles (out, 3, k, k) for 3 input channels,
    otherwise one grey tile per input channel, (out * in, 1, k, k), filter by filter."""
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape (out, in, kh, kw), got {tuple(weight.shape)}")
    if weight.shape[1] == 3:
        return weight
    return weight.reshape(-1, 1, *weight.shape[-2:])


def _fft_size(n: int) -> int:
    """The largest size up to ``n`` (at least 8) whose only prime factors are 2, 3 and 5: fast for the FFT (a size
    with a large prime factor took 30 times as long)."""
    for size in range(max(n, 8), 7, -1):
        rest = size
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return size
    return 8


def _boxed(tile: np.ndarray, half: float, zoom: int) -> np.ndarray:
    """A centred spectrum tile (3, S, S) enlarged ``zoom`` times, with a red frame just outside the bins whose
    frequency index ``u`` (from the centre) has ``|u| <= half`` in both directions: the box of a stride's
    Nyquist limit. No frame when the box holds every bin (stride 1)."""
    size = tile.shape[-1]
    out = np.repeat(np.repeat(tile, zoom, axis=1), zoom, axis=2)
    first = size // 2 - math.floor(half)  # the first bin inside the box
    last = size // 2 + math.floor(half)
    if first <= 0 and last >= size - 1:
        return out
    a, b = max(0, first * zoom - 1), min(size * zoom - 1, (last + 1) * zoom)  # frame lines, outside the box
    red = np.array([1.0, 0.1, 0.1], dtype=np.float32)[:, None]
    out[:, a, a : b + 1] = red
    out[:, b, a : b + 1] = red
    out[:, a : b + 1, a] = red
    out[:, a : b + 1, b] = red
    return out


def _channel_scale(maps: Tensor) -> Tensor:
    """Feature maps (C, H, W) for display, each channel on its own scale: non-negative maps (after a ReLU) from 0
    (black, also for a channel silent on this image) to their maximum, signed maps from their minimum."""
    if maps.min() >= 0:
        return maps / maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return own_scale(maps)


class FilterMonitor(ProbeMonitor):
    """Log the first layer's filters, feature maps and activation-maximisation images.

    - ``filters/<first conv>/own_scale``: the filters, each on its own scale (their shape: smooth, or noise).
    - ``filters/<first conv>/one_scale``: all on one scale with zero at mid-grey (dead and dominating filters stand
      out, ZF Fig. 6).
    - ``filters/<first conv>/change``: ``W - W_prev`` since the previous probe, divided by the steps between them
      (a change per step, comparable whatever the gap), on its own scale with zero at mid-grey, captioned with
      its size relative to the weights (a frozen layer is flat grey, a thrashing one loud).
    - ``filters/<first conv>/spectra``: the filters' amplitude spectra, all filters and the learned part of the
      filters (now minus initial), with the stride's Nyquist limit drawn as a red box: energy outside the box is
      folded back onto lower frequencies by the stride (aliasing, ZF Sec. 5.1), and the caption says how much.
    - ``filters/<first conv>/kernel_energy``: the filters' energy at each kernel position, all of it and its
      learned part: energy piled at the centre with a cold rim says the kernel is larger than it uses.
    - ``responses/<layer>/image_<i>``: every channel of each layer for the first ``feature_map_images`` probe
      images, beside the image, each channel on its own scale; channels that are zero on the whole probe batch are
      framed in red (their fraction is a learning-rate diagnostic: :class:`~lightning_viz.TrainingDiagnostics`
      logs it). Drawn at step 0 and at the regular probes; the early probes (``early_steps``: 10, 25 and 50) draw
      the filter panels only, where a learning rate too high shows first, and leave the feature maps out (they
      were half of those probes' cost).
    - ``responses/<layer>/activation_max``: for the ``activation_max_channels`` strongest channels of the deepest
      layer, an input optimised to excite the channel: a decorrelated Fourier image whose colours are decorrelated
      as the probe's are, under random jitter, scaling and rotation (Olah et al. 2017; see
      :mod:`lightning_viz.methods.activation_max`). It costs ``activation_max_steps`` forward and backward passes
      of that many images, so it runs every ``activation_max_every_n_steps`` steps (further apart when the budget
      needs it) and at the final probe, never at step 0 (an untrained network has nothing to show). A channel whose
      optimised input excites it less than half as much as its best probe image did is marked ✗ (failed).

    Every panel is sized for TensorBoard's default image card (350 px wide).

    Args:
        layers: layers whose feature maps are shown; None: each convolutional stage's output, up to five.
        filter_layer: the convolution whose filters are shown; None: the first ``nn.Conv2d``.
        feature_map_images: probe images whose feature maps are shown.
        activation_max_layer: the layer for activation maximisation; None: the deepest of ``layers``.
        activation_max_channels: channels optimised (0: no activation maximisation).
        activation_max_steps: optimisation steps (32: on ShapesNet the images then reach 0.9 of the activation that
            64 steps reach, on average 5.2-5.6 times the best probe image's: ``benchmarks/activation_max.md``).
        activation_max_every_n_steps: cadence of activation maximisation, in optimizer steps.
        **kwargs: probe, cadence and error options of :class:`~lightning_viz.callbacks.ProbeMonitor`.

    Example::

        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[FilterMonitor()])
    """

    namespace = "filters"
    default_early_steps = (10, 25, 50)  # a learning rate too high shows in the first layer first (cheap to draw)

    def __init__(
        self,
        layers: str | nn.Module | list[str | nn.Module] | None = None,
        filter_layer: str | nn.Module | None = None,
        feature_map_images: int = 2,
        activation_max_layer: str | nn.Module | None = None,
        activation_max_channels: int = 8,
        activation_max_steps: int = 32,
        activation_max_every_n_steps: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(layers=layers, **kwargs)
        check_int("feature_map_images", feature_map_images)
        check_int("activation_max_channels", activation_max_channels, least=0)
        check_int("activation_max_steps", activation_max_steps)
        check_int("activation_max_every_n_steps", activation_max_every_n_steps)
        self.filter_layer = filter_layer
        self.feature_map_images = feature_map_images
        self.activation_max_layer = activation_max_layer
        self.activation_max_channels = activation_max_channels
        self.activation_max = ActivationMaxConfig(steps=activation_max_steps, seed=self.seed)
        self.activation_max_every_n_steps = activation_max_every_n_steps
        self._previous_weight: tuple[int, Tensor] | None = None
        self._initial: Tensor | None = None  # the filter layer's weights when training started
        self._activation_max_name: str | None = None  # activation_max_layer's name, known from fit start

    @override
    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "filter_layer": self.layer_key(self.filter_layer),
            "activation_max_layer": self.layer_key(self.activation_max_layer),
            "activation_max_channels": self.activation_max_channels,
            "activation_max_every_n_steps": self.activation_max_every_n_steps,
        }

    @override
    def fit_start(self, model: nn.Module) -> None:
        if self.filter_layer is not None and not isinstance(resolve_layer(model, self.filter_layer)[1], nn.Conv2d):
            raise ValueError(f"filter_layer {self.filter_layer!r} is not an nn.Conv2d")
        if self.activation_max_layer is not None:
            self._activation_max_name = resolve_layer(model, self.activation_max_layer)[0]

    @override
    def train_start(self, model: nn.Module) -> None:
        if self._initial is None:  # a resumed run keeps the first run's (restored by load_state_dict)
            conv = resolve_layer(model, self._filter_name(model))[1]
            if isinstance(conv, nn.Conv2d):
                self._initial = conv.weight.detach().float().cpu().clone()  # a copy: training updates it in place

    def _filter_name(self, model: nn.Module) -> str:
        return conv_layer_names(model)[0] if self.filter_layer is None else resolve_layer(model, self.filter_layer)[0]

    @override
    def layer_options(self) -> list[LayerSpec | None]:
        return [*super().layer_options(), self.filter_layer, self.activation_max_layer]

    def _activation_max_target(self, model: nn.Module) -> str:
        target = self.layer_names[-1] if self.activation_max_layer is None else self.activation_max_layer
        return resolve_layer(model, target)[0]

    @override
    def needs(self) -> Needs:
        extra = [] if self._activation_max_name is None else [self._activation_max_name]
        return Needs(layers=[*self.layer_names, *extra])

    @override
    def parts(self) -> list[Part]:
        if not self.activation_max_channels:
            return []
        # each optimisation step: a forward and a backward pass of one image per channel
        passes = 3.0 * self.activation_max.steps * self.activation_max_channels / self.probe_size
        return [Part("activation_max", self.activation_max_every_n_steps, passes, self._activation_max_part)]

    @override
    def compute(self, context: ProbeContext, step: int) -> ProbeLogs:
        model, probe = context.model, context.probe
        logs = ProbeLogs()
        name = self._filter_name(model)
        logs.images.update(self._filters(resolve_layer(model, name)[1], name, step))
        if context.early:
            return logs
        display = probe.display_images()
        for layer in self.layer_names:
            act = context.activation(layer)
            dead = act.abs().amax(dim=(0, 2, 3)).cpu() == 0  # the fraction is TrainingDiagnostics' job
            for i in range(min(self.feature_map_images, len(act))):
                shown = act[i].float().cpu().clone()
                tag = f"responses/{layer}/image_{i}"
                logs.images[tag] = self._feature_maps(shown, dead, display[i].numpy(), probe, i, layer, step)
        return logs

    def _activation_max_part(self, context: ProbeContext, step: int) -> ProbeLogs:
        model, probe = context.model, context.probe
        target = self._activation_max_target(model)
        act = context.activation(target)  # captured by the shared pass (see needs)
        return ProbeLogs(
            images={f"responses/{target}/activation_max": self._activation_max(model, probe, target, act, step)}
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous_weight": self._previous_weight, "initial": self._initial}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._previous_weight = state_dict.get("previous_weight", self._previous_weight)
        self._initial = state_dict.get("initial", self._initial)

    def _filters(self, conv: nn.Module, name: str, step: int) -> dict[str, Any]:  # conv: the resolved nn.Conv2d
        """The filter panels, computed here and drawn later on the writer thread from numpy arrays."""
        assert isinstance(conv, nn.Conv2d)
        weight = conv.weight.detach().float().cpu().clone()  # a copy: on the CPU .float().cpu() is the parameter
        previous = self._previous_weight
        self._previous_weight = (step, weight)
        out, k, stride = weight.shape[0], weight.shape[-1], conv.stride[0]
        per_filter = 1 if weight.shape[1] == 3 else weight.shape[1]  # a filter's tiles stay on one row
        if per_filter <= 8:
            columns = per_filter * max(1, math.ceil(math.sqrt(out) / per_filter))
        else:
            columns = math.ceil(math.sqrt(out * per_filter))
        room = CARD_WIDTH - 2 * 8
        zoom = max(1, (room - columns - 1) // (columns * k))
        tiles = filter_tiles(weight)
        scale = float(weight.abs().max().clamp_min(1e-12))
        rms = weight.flatten(1).pow(2).mean(dim=1).sqrt()
        where = f"{name}, step {step}"
        shape = f"{out} filters {k}x{k}, stride {stride}"
        panels = {
            "own_scale": (tiles, own_scale, f"{shape}, each on its own scale: its shape (smooth, or noise)", 1.0),
            "one_scale": (tiles, lambda t: signed_display(t, scale), f"{shape}, on one scale, zero = grey: max |w| "
                          f"{scale:.3g}, filter RMS median {float(rms.median()):.3g}, max {float(rms.max()):.3g} "
                          "(dead filters flat grey, dominating ones loud)", 1.0),
        }  # fmt: skip
        if previous is None:
            change_text = f"{shape}: no previous probe yet, nothing to compare"
            change = torch.zeros_like(weight)
        else:
            steps = max(1, step - previous[0])
            change = (weight - previous[1]) / steps
            relative = float(change.norm() / weight.norm().clamp_min(1e-12))
            change_text = (f"{shape}: W - W_prev per step, since step {previous[0]} ({steps} steps), on its own "
                           f"scale, zero = grey: max {float(change.abs().max()):.2g} a step; ||dW|| / ||W|| = "
                           f"{relative:.2g} a step (loud while learning, grey once settled)")  # fmt: skip
        change_scale = float(change.abs().max().clamp_min(1e-30))
        panels["change"] = (filter_tiles(change), lambda t: signed_display(t, change_scale), change_text, 0.5)
        images: dict[str, Any] = {}
        for part, (part_tiles, show, text, background) in panels.items():
            shown = show(part_tiles).numpy()  # the writer thread runs no torch operation
            images[f"filters/{name}/{part}"] = self._grid_panel(shown, columns, zoom, background,
                                                                f"Filters of {where}", text)  # fmt: skip
        images[f"filters/{name}/spectra"] = self._spectra(weight, name, stride, where, shape)
        if k >= 3:
            images[f"filters/{name}/kernel_energy"] = self._kernel_energy(weight, where, shape)
        return images

    @staticmethod
    def _grid_panel(shown: Any, columns: int, zoom: int, background: float, title: str, subtitle: str) -> Any:
        def render() -> Any:
            picture = grid(shown, columns, zoom, background=background)
            return tile_panel([[picture]], [[""]], columns=1, tile_size=picture.shape[-1], title=title,
                              subtitle=subtitle, min_width=CARD_WIDTH)  # fmt: skip

        return render

    def _parts(self, weight: Tensor) -> dict[str, Tensor]:
        """The filters, and their learned part (now minus initial) once there is one."""
        if self._initial is None or self._initial.shape != weight.shape:
            return {"filters": weight}
        learned = weight - self._initial
        return {"filters": weight, "learned part": learned} if learned.norm() > 0 else {"filters": weight}

    def _spectra(self, weight: Tensor, name: str, stride: int, where: str, shape: str) -> Any:
        """Mean amplitude spectra of all filters and of their learned part, with the stride's Nyquist box, above
        each filter's own spectrum."""
        # one DFT per filter, zero-padded to the size a filter's tile is drawn at (a finer grid, not an enlargement;
        # a size of small prime factors, which the FFT handles fast); the mean spectra are those bins enlarged
        room = CARD_WIDTH - 2 * 8
        parts = self._parts(weight)
        columns = math.ceil(math.sqrt(weight.shape[0]))
        size = _fft_size(max(2 * weight.shape[-1], (room - columns - 1) // columns))
        zoom_big = max(1, ((room - 3 * (len(parts) - 1)) // len(parts) - 2) // size)
        big, shares = [], []
        for label, part in parts.items():
            spectra = filter_spectra(part, size)
            shares.append(beyond_nyquist(spectra, stride))
            big.append(own_scale(spectra.pow(2).mean(dim=0, keepdim=True).sqrt())[0].numpy())
            if label == "filters":
                small = own_scale(spectra).numpy()
        captions = [f"{label}: {share:.0%} outside" for label, share in zip(parts, shares, strict=True)]
        half = nyquist_half_width(size, stride)
        title = f"Spectra of {where}"
        subtitle = (f"{shape}: amplitude spectra, zero frequency at the centre, each on its own scale; red box: "
                    f"the stride's Nyquist limit, energy outside it aliases")  # fmt: skip

        def render() -> Any:
            heads = [_boxed(colorize(b[None], "magma")[0], half, zoom_big) for b in big]
            top = tile_panel([heads], [captions], columns=1, tile_size=heads[0].shape[-1], title=title,
                             subtitle=subtitle, min_width=CARD_WIDTH)  # fmt: skip
            each = [_boxed(t, half, 1) for t in colorize(small, "magma")]
            bottom = grid(np.stack(each), columns, 1, background=1.0)
            below = tile_panel([[bottom]], [["each filter's spectrum"]], columns=1, tile_size=bottom.shape[-1],
                               min_width=CARD_WIDTH)  # fmt: skip
            return stack([top, below])

        return render

    def _kernel_energy(self, weight: Tensor, where: str, shape: str) -> Any:
        """The share of energy at each kernel position, all of it and the learned part, on one colour scale."""
        parts = self._parts(weight)
        maps = {label: kernel_energy(part) for label, part in parts.items()}
        k = weight.shape[-1]
        even = 1 / (k * k)
        top = max(float(m.max()) for m in maps.values())
        shown = [(m / top).clamp(0, 1).numpy() for m in maps.values()]
        captions = [f"{label.split()[0]}: rim share {rim_share(parts[label]):.2f}" for label in maps]
        zoom = max(1, (CARD_WIDTH - 2 * 8 - 3 * len(shown)) // (len(shown) * k))
        title = f"Kernel energy of {where}"
        subtitle = (f"{shape}: share of the energy at each position, both on one scale (white: {top:.1%} a "
                    f"position, an even spread {even:.1%}); rim share 1: the rim as used as the rest, below 1: "
                    "energy held in the centre, the kernel larger than it uses")  # fmt: skip

        def render() -> Any:
            tiles = [np.repeat(np.repeat(colorize(m[None], "inferno")[0], zoom, 1), zoom, 2) for m in shown]
            return tile_panel([tiles], [captions], columns=1, tile_size=tiles[0].shape[-1], title=title,
                              subtitle=subtitle, min_width=CARD_WIDTH)  # fmt: skip

        return render

    def _feature_maps(self, act: Tensor, dead: Tensor, image: Any, probe: ProbeBatch, index: int, layer: str,
                      step: int) -> Any:  # fmt: skip
        """The panel of one probe image's maps ``act`` (C, H, W; a CPU copy) beside the image, drawn later on the
        writer thread."""
        c, w = act.shape[0], act.shape[-1]
        label = "" if probe.labels is None else f" ({probe.class_name(int(probe.labels[index]))})"
        title = f"Feature maps of {layer}, step {step}"
        subtitle = (f"probe image {index}{label}: {c} channels, each on its own scale; {int(dead.sum())} dead on "
                    "the whole probe (red)")  # fmt: skip
        scaled = _channel_scale(act)[:, None].numpy()  # the writer runs no torch
        marked = dead.cpu().numpy()
        columns = math.ceil(math.sqrt(c))
        zoom = max(1, (CARD_WIDTH - 2 * 8 - columns - 1) // (columns * w))

        def render() -> Any:
            maps = grid(scaled, columns, zoom, marked=marked)
            width = maps.shape[-1]
            size = min(width, max(image.shape[-1], (width // 3) // image.shape[-1] * image.shape[-1]))
            head = tile_panel([[image]], [[""]], columns=1, tile_size=size, title=title,
                              subtitle=subtitle, min_width=CARD_WIDTH)  # fmt: skip
            body = tile_panel([[maps]], [[""]], columns=1, tile_size=width, min_width=CARD_WIDTH)
            return stack([head, body])

        return render

    def _activation_max(self, model: nn.Module, probe: ProbeBatch, layer: str, act: Tensor, step: int) -> Any:
        top = top_k_units(act, self.activation_max_channels)
        channels = top.index[:, 1]
        images = probe.images
        c, h, w = images.shape[1:]
        if probe.mean is not None and probe.std is not None:  # one value per channel, or one for all
            mean, std = torch.tensor(probe.mean).expand(c), torch.tensor(probe.std).expand(c)
            low, high = (0 - mean) / std, (1 - mean) / std
        else:
            low, high = images.amin(dim=(0, 2, 3)).cpu(), images.amax(dim=(0, 2, 3)).cpu()
        config = self.activation_max
        optimised, _ = maximize_channels(model, layer, channels, (c, h, w), low, high, config, colour_images=images)
        with torch.no_grad():
            reached = forward_until(model, optimised.clone(), {layer: resolve_layer(model, layer)[1]})[layer]
        reached = reached[torch.arange(len(channels)), channels.to(reached.device)].flatten(1).mean(dim=1).cpu()
        on_probe = act[:, channels.to(act.device)].mean(dim=(2, 3)).amax(dim=0).cpu()
        shown = ProbeBatch(optimised.float().cpu(), mean=probe.mean, std=probe.std).display_images().numpy()
        # failed: the optimised input excites its channel less than half as much as the best probe image does
        failed = [bool(r <= 0.5 * p or r <= 0) for r, p in zip(reached.tolist(), on_probe.tolist(), strict=True)]
        cells = [[shown[i]] for i in range(len(channels))]
        captions = [
            [f"{'✗ ' if failed[i] else ''}ch {int(ch)}: act {float(reached[i]):.2f}\n"
             f"best probe image {float(on_probe[i]):.2f}"]
            for i, ch in enumerate(channels.tolist())
        ]  # fmt: skip
        title = f"Activation maximisation at {layer}, step {step}"
        subtitle = (f"inputs optimised for {config.steps} steps to excite each of the {len(channels)} strongest "
                    "channels (mean activation reached vs the best probe image); ✗ in red: failed, below half "
                    "the probe's")  # fmt: skip
        w = shown.shape[-1]
        room = (CARD_WIDTH - 3 * 8) // 2  # two columns in a card
        size = w * max(1, room // w) if w <= room else room
        marked = [[f] for f in failed]
        return lambda: tile_panel(cells, captions, columns=2, tile_size=size, title=title, subtitle=subtitle,
                                  marked=marked, min_width=CARD_WIDTH)  # fmt: skip
