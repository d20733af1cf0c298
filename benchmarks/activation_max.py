"""Activation maximisation on a trained network: lightning_viz's pixel parameterisation (``param="pixel"``),
its decorrelated Fourier parameterisation (the default) and torch-lucent's ``render_vis``, on the same channels, all in
one run.

The network is ``tests/checkpoints/shapes_net.pt`` (the example's ShapesNet, 64x64 inputs); the channels are the 8
of ``conv3`` and of ``conv2`` whose mean activation is largest on one of 64 probe images of ``Shapes(seed=5)``
(FilterMonitor ranks by the largest single unit instead, which picks a conv2 channel whose best mean is 0.38 and
whose ratio below would dwarf the others); the objective is the channel's mean activation at that layer (pre-ReLU),
64 steps, seeds 0-2. After every step each method's current image (the clean 64x64 image, without the
transformations it optimises through) goes through the network once more, and its channel's mean activation is
divided by the largest that any probe image reaches. The table shows the mean over channels of the seeds' mean,
with the range over channels.

- ``pixel``: ``ActivationMaxConfig(param="pixel")``.
- ``fourier, ImageNet colours``: ``ActivationMaxConfig()``, lucid's colour matrix (what FilterMonitor gets when it
  passes no ``colour_images``).
- ``fourier, probe colours``: the same, the colour matrix estimated from the probe batch (``colour_images``).
- ``lucent``: ``render_vis(model, objective, param.image(64, batch=K, fft=True, decorrelate=True))`` with its
  ``standard_transforms`` and its default optimiser (Adam, lr 0.05), K channels in one batch, the objective
  ``sum_i objectives.channel(layer, channel_i, batch=i)`` (the batched form of ``"layer:channel"``). Its pixels in
  [0, 1] are normalised with the Shapes mean and std, as a last transform (``preprocess=False``: its own
  preprocessing is ImageNet's). ``fixed_image_size=88``: render_vis resizes its transformed image to that size (by
  default to 224 for an image under 224 px, the wrong scale for a 64 px network); the transforms pad 12 px on each
  side, so 88 keeps the image at its own scale on average (64 would shrink it 0.73x). The per-step images are those
  render_vis returns for ``thresholds=range(1, steps + 1)``.
- ``lucent, lr 0.2``: the same with Adam at our Fourier default's step size, to tell the step size from the rest
  (not in the picture).

The colour column measures colour texture: the share of a final image's variance (as displayed) that lies in the
differences between its channels rather than in its brightness. A second table runs the Fourier parameterisation
(probe colours) with one default changed at a time, the evidence for the defaults.

Time per step: the wall time of each run less the time spent measuring the activations, over the steps; the median
over the seeds. For ours it includes the one extra rendering of the image per step that following the optimisation
needs (``on_step``), for lucent render_vis' copy of its image to numpy at every threshold; both are small against a
forward and backward pass. Ours stops the forward pass at the layer (``forward_until``) on 64 px images; lucent runs
the whole network on 88 px ones. Other processes on the machine make these times vary by tens of percent.

Installing torch-lucent 0.1.8 (the last release) resolves with torch 2.14 (it pins kornia<=0.4.1, whose functions it
uses still work), but its dependencies include IPython, pytest-mock, coverage and coveralls. Only these are needed
to run it here: ``pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1 decorator`` (with tqdm, numpy and Pillow,
which lightning_viz already has). ``lucent.optvis.render`` imports IPython for notebook display, which this script
never uses; when IPython is missing, a stub module stands in for it.

    pip install -e ".[bench]"          # or the --no-deps line above
    python benchmarks/activation_max.py  # writes benchmarks/activation_max.md and .png; about 2 minutes on 2 idle cores
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from lightning_viz import ProbeBatch
from lightning_viz.data import SHAPES_MEAN, SHAPES_STD, Shapes
from lightning_viz.demos import ShapesNet
from lightning_viz.methods._hooks import forward_until
from lightning_viz.methods.activation_max import ActivationMaxConfig, maximize_channels
from lightning_viz.render import stack, tile_panel

HERE = Path(__file__).resolve().parent

if importlib.util.find_spec("IPython") is None:  # lucent.misc.io.showing imports IPython.display, never used here
    _ipython = types.ModuleType("IPython")
    _ipython.display = types.ModuleType("IPython.display")  # type: ignore[attr-defined]
    sys.modules.update({"IPython": _ipython, "IPython.display": _ipython.display})  # type: ignore[attr-defined]
from lucent.optvis import objectives, param, render, transform  # noqa: E402

CHECKPOINT = HERE.parent / "tests" / "checkpoints" / "shapes_net.pt"
LAYERS = ("conv3", "conv2")
CHANNELS = 8
STEPS = 64
SEEDS = (0, 1, 2)
REPORTED = (8, 16, 32, 64)
LUCENT_SIZE = 64 + 2 * 12
METHODS = ("pixel", "fourier, ImageNet colours", "fourier, probe colours", "lucent", "lucent, lr 0.2")
SHOWN = METHODS[:4]
MEAN, STD = torch.tensor(SHAPES_MEAN), torch.tensor(SHAPES_STD)
LOW, HIGH = -MEAN / STD, (1 - MEAN) / STD

Run = Callable[[nn.Module, str, Tensor, int, Callable[[int, Tensor], None] | None], Tensor]


def channel_means(model: nn.Module, layer: str, images: Tensor) -> Tensor:
    """The mean activation of every channel of ``layer`` on each image: Tensor of shape (N, C)."""
    with torch.no_grad():
        return forward_until(model, images, {layer: model.get_submodule(layer)})[layer].mean(dim=(2, 3))


def ours(config: ActivationMaxConfig, colour_images: Tensor | None = None) -> Run:
    def run(model: nn.Module, layer: str, channels: Tensor, seed: int, record: Callable[[int, Tensor], None] | None):
        seeded = dataclasses.replace(config, seed=seed)
        images, _ = maximize_channels(
            model, layer, channels, (3, 64, 64), LOW, HIGH, seeded, colour_images=colour_images, on_step=record
        )
        return images

    return run


def lucent(lr: float | None = None) -> Run:
    """render_vis as the module docstring says; ``lr``: Adam's step size instead of render_vis' default."""
    optimizer = None if lr is None else (lambda params: torch.optim.Adam(params, lr=lr))

    def run(model: nn.Module, layer: str, channels: Tensor, seed: int, record: Callable[[int, Tensor], None] | None):
        return _lucent(model, layer, channels, seed, record, optimizer)

    return run


def _lucent(
    model: nn.Module,
    layer: str,
    channels: Tensor,
    seed: int,
    record: Callable[[int, Tensor], None] | None,
    optimizer: Callable[[list[Tensor]], torch.optim.Optimizer] | None,
) -> Tensor:
    np.random.seed(seed)  # lucent's transforms draw from numpy's global generator, its start from torch's
    torch.manual_seed(seed)
    objective = objectives.Objective.sum(
        [objectives.channel(layer, int(c), batch=i) for i, c in enumerate(channels.tolist())]
    )
    normalise = (lambda x: (x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kornia 0.4.1 on torch 2.14: deprecation notices
        images = render.render_vis(
            model,
            objective,
            lambda: param.image(64, batch=len(channels), fft=True, decorrelate=True),
            optimizer=optimizer,
            transforms=[*transform.standard_transforms, *normalise],
            thresholds=range(1, STEPS + 1) if record else (STEPS,),
            preprocess=False,
            progress=False,
            show_image=False,
            fixed_image_size=LUCENT_SIZE,
        )
    normalised = [
        (torch.from_numpy(i).permute(0, 3, 1, 2) - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1) for i in images
    ]
    if record:
        for step, image in enumerate(normalised, start=1):
            record(step, image)
    return normalised[-1]


@dataclasses.dataclass
class Result:
    """One method on one layer: activation / best probe activation after each step, Tensor of shape (seeds, steps,
    K); milliseconds per step, one per seed; the colour share of each final image, (seeds, K); seed 0's images."""

    ratios: Tensor
    ms: list[float]
    colour: Tensor
    images: Tensor

    def cell(self, step: int) -> str:
        at = self.ratios[:, step - 1].mean(dim=0)
        return f"{at.mean():.2f} ({at.min():.2f} to {at.max():.2f})"


def colour_share(images: Tensor) -> Tensor:
    """The share of each image's variance (as displayed, in [0, 1]) that lies in the differences between its
    colour channels rather than in brightness: 0 for a grey image. Tensor of shape (N,)."""
    shown = ProbeBatch(images, mean=SHAPES_MEAN, std=SHAPES_STD).display_images().double()
    chroma = (shown - shown.mean(dim=1, keepdim=True)).pow(2).mean(dim=(1, 2, 3))
    return (chroma / (shown - shown.mean(dim=(1, 2, 3), keepdim=True)).pow(2).mean(dim=(1, 2, 3))).float()


def measure(model: nn.Module, run: Run, layer: str, channels: Tensor, best: Tensor) -> Result:
    """``run`` from each seed, its activation followed after every step; time per step without that following."""
    ratios, ms, colours, images = [], [], [], torch.empty(0)
    for seed in SEEDS:
        trace = torch.zeros(STEPS, len(channels))
        measuring = 0.0

        def record(step: int, current: Tensor, trace: Tensor = trace) -> None:
            nonlocal measuring
            start = time.perf_counter()
            trace[step - 1] = channel_means(model, layer, current.float())[torch.arange(len(channels)), channels] / best
            measuring += time.perf_counter() - start

        fresh = copy.deepcopy(model)  # render_vis leaves a forward hook on every module
        start = time.perf_counter()
        final = run(fresh, layer, channels, seed, record)
        ms.append(1000 * (time.perf_counter() - start - measuring) / STEPS)
        ratios.append(trace)
        colours.append(colour_share(final))
        images = final if seed == SEEDS[0] else images
    return Result(torch.stack(ratios), ms, torch.stack(colours), images)


def main() -> None:
    torch.set_num_threads(2)
    model = ShapesNet()
    model.load_state_dict(torch.load(CHECKPOINT, weights_only=True))
    model.eval().requires_grad_(False)  # lucent's optimiser only holds the image, but its backward reaches these
    dataset = Shapes(64, seed=5)
    probe = torch.stack([dataset[i][0] for i in range(len(dataset))])
    runs: dict[str, Run] = {
        "pixel": ours(ActivationMaxConfig(param="pixel")),
        "fourier, ImageNet colours": ours(ActivationMaxConfig()),
        "fourier, probe colours": ours(ActivationMaxConfig(), colour_images=probe),
        "lucent": lucent(),
        "lucent, lr 0.2": lucent(lr=0.2),
    }
    variants = {  # the defaults, and one change at a time (probe colours)
        "defaults: lr 0.2, jitter 3, scale 0.1, rotate 10, noise 0.5": ActivationMaxConfig(),
        "lr 0.1": ActivationMaxConfig(lr=0.1),
        "lr 0.4": ActivationMaxConfig(lr=0.4),
        "no transformations (jitter 0, scale 0, rotate 0)": ActivationMaxConfig(jitter=0, scale=0.0, rotate=0.0),
        "stronger ones (jitter 6, scale 0.2, rotate 20)": ActivationMaxConfig(jitter=6, scale=0.2, rotate=20.0),
        "noise 0.01": ActivationMaxConfig(noise=0.01),
        "no colour decorrelation": ActivationMaxConfig(decorrelate=False),
    }
    results: dict[tuple[str, str], Result] = {}
    swept: dict[tuple[str, str], Result] = {}
    chosen: dict[str, tuple[Tensor, Tensor]] = {}
    for layer in LAYERS:
        best, channels = channel_means(model, layer, probe).amax(dim=0).topk(CHANNELS)
        chosen[layer] = (channels, best)
        for method, run in runs.items():
            results[method, layer] = measure(model, run, layer, channels, best)
            print(f"{layer} {method}: {results[method, layer].cell(STEPS)}", flush=True)
        for name, config in variants.items():
            swept[name, layer] = measure(model, ours(config, colour_images=probe), layer, channels, best)
    write_table(results, swept, chosen, float(colour_share(probe).mean()))
    write_pictures(results, chosen)
    assert all(p.grad is None for p in model.parameters())


def write_table(
    results: dict[tuple[str, str], Result],
    swept: dict[tuple[str, str], Result],
    chosen: dict[str, tuple[Tensor, Tensor]],
    probe_colour: float,
) -> None:
    lines = [
        "# Activation maximisation: pixel vs Fourier parameterisation vs torch-lucent",
        "",
        "Written by `python benchmarks/activation_max.py` (how it measures: its docstring). ShapesNet from "
        f"`tests/checkpoints/shapes_net.pt`, the {CHANNELS} strongest channels of each layer on a 64-image probe "
        f"batch, {STEPS} steps, {CHANNELS} images (one per channel) in one batch, seeds {SEEDS[0]}-{SEEDS[-1]}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads.",
        "",
        "Step n: the channel's mean activation on the method's image after n steps, divided by the largest that any "
        "probe image reaches; mean over the channels of the seeds' mean (range over channels). Colour: the share of "
        "the final images' variance that lies in colour rather than brightness, mean over channels and seeds "
        f"(the probe images: {probe_colour:.2f}).",
        "",
        "| layer | method | " + " | ".join(f"step {s}" for s in REPORTED) + " | colour | ms per step |",
        "| --- | --- | " + " | ".join("---:" for _ in REPORTED) + " | ---: | ---: |",
    ]
    for layer in LAYERS:
        for method in METHODS:
            result = results[method, layer]
            cells = " | ".join(result.cell(step) for step in REPORTED)
            lines.append(
                f"| {layer} | {method} | {cells} | {result.colour.mean():.2f} | {statistics.median(result.ms):.1f} |"
            )
    lines += [
        "",
        "The Fourier defaults, one change at a time (probe colours, same channels and seeds):",
        "",
        "| layer | variant | step 16 | step 64 | colour |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for layer in LAYERS:
        for (name, at), result in swept.items():
            if at == layer:
                lines.append(
                    f"| {layer} | {name} | {result.cell(16)} | {result.cell(STEPS)} | {result.colour.mean():.2f} |"
                )
    lines += [
        "",
        "Without the transformations the images reach more activation and keep the colour speckle that the "
        "transformations remove; they are there for the pictures (the benchmark's PNG shows the defaults).",
        "",
        "Channels and their best probe activation:",
        "",
    ]
    for layer, (channels, best) in chosen.items():
        pairs = ", ".join(f"{int(c)} ({float(b):.2f})" for c, b in zip(channels, best, strict=True))
        lines.append(f"- {layer}: {pairs}")
    lines += ["", "![seed 0's images](activation_max.png)", ""]
    (HERE / "activation_max.md").write_text("\n".join(lines))
    print("\n".join(lines))


def write_pictures(results: dict[tuple[str, str], Result], chosen: dict[str, tuple[Tensor, Tensor]]) -> None:
    short = {"fourier, ImageNet colours": "fourier, IN col.", "fourier, probe colours": "fourier, probe col."}
    subtitle = f"seed 0 after {STEPS} steps, shown 2x (nearest)\ncaptions: activation / best probe image's"
    panels = []
    for layer, (channels, _) in chosen.items():
        shown = {
            m: ProbeBatch(results[m, layer].images, mean=SHAPES_MEAN, std=SHAPES_STD).display_images() for m in SHOWN
        }
        cells = [[shown[m][i] for m in SHOWN] for i in range(len(channels))]
        captions = [
            [f"{short.get(m, m)}\nch {c}: {float(results[m, layer].ratios[0, -1, i]):.1f}x" for m in SHOWN]
            for i, c in enumerate(channels.tolist())
        ]
        title = f"Activation maximisation at {layer}, ShapesNet"
        panels.append(
            tile_panel(cells, captions, columns=1, tile_size=128, title=title, subtitle=subtitle, max_width=600)
        )
    Image.fromarray(stack(panels)).save(HERE / "activation_max.png", optimize=True)


if __name__ == "__main__":
    main()
