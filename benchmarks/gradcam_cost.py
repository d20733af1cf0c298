"""What one Grad-CAM probe costs, measured side by side in one run.

For a batch of probe images it times (median of repeats, after warm-up), on each model:
  - a bare forward + backward of the batch (cross-entropy, parameter gradients): the unit of cost;
  - lightning_viz's grad_cam (one forward, one partial backward), and grad_cam_maps for two targets (the
    predicted and the true class, as GradCAMMonitor shows them);
  - captum's LayerGradCam and pytorch-grad-cam's GradCAM on the same model, layer and images, for the predicted
    class, in their default use: captum needs the target class first (one more forward pass); pytorch-grad-cam takes
    the predicted class from its own forward pass, writes parameter gradients, and leaves the model in eval mode, so
    it is put back in train mode after each call (as captum is);
  - GradCAMMonitor at a probe step, in its three parts: the probe's forward pass (a ProbeContext, the pass that
    monitors of one trainer share) with the monitor's compute (the maps of both classes and the captions); the
    drawing of its panels (overlays, tiles, captions); and the writing of those panels to a TensorBoard event file
    as the monitors' writer does (PNG, native CRC32C, flush). The last two run on the writer thread in training.

    python benchmarks/gradcam_cost.py            # the example's ShapesNet and torchvision resnet18, 16 images

Writes the tables to benchmarks/gradcam_cost.md (--out) and prints them. Needs the bench extra:
pip install -e ".[bench]".
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from _timing import bare_step, median_ms, write_result  # benchmarks/_timing.py, beside this script
from captum.attr import LayerGradCam
from pytorch_grad_cam import GradCAM
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from lightning_viz import GradCAMMonitor, ProbeBatch
from lightning_viz.callbacks._writer import BackgroundWriter, Written, use_native_crc32c
from lightning_viz.data import Shapes
from lightning_viz.demos import ShapesNet
from lightning_viz.methods import grad_cam, grad_cam_maps, isolated, resolve_layer
from lightning_viz.probing import ProbeContext

OUT = Path(__file__).resolve().with_name("gradcam_cost.md")


def drawn(images: dict[str, Any]) -> dict[str, np.ndarray]:
    """A probe's images as arrays: the monitors hand the writer functions that draw them."""
    return {tag: image() if callable(image) else image for tag, image in images.items()}


def bench(model: nn.Module, layer: str, probe: ProbeBatch, repeats: int) -> tuple[dict[str, float], str]:
    """The rows' median times in ms, and a description of the monitor's panels."""
    images, labels = probe.images, probe.labels
    assert labels is not None
    module = resolve_layer(model, layer)[1]

    def timed(fn: Callable[[], object]) -> float:
        return median_ms(fn, repeats=repeats)

    def ours() -> None:
        with isolated(model):
            grad_cam(model, images, layer)

    def ours_two() -> None:
        with isolated(model):
            grad_cam_maps(model, images, [layer], [None, labels])

    captum = LayerGradCam(model, module)

    def captum_cam() -> None:
        model.eval()
        target = model(images).argmax(1)
        captum.attribute(images, target=target, relu_attributions=True)
        model.train()

    monitor = GradCAMMonitor(layers=layer)
    monitor.layer_names = [layer]  # named at fit start in training
    needs = monitor.needs()

    def probe_step() -> Any:
        with isolated(model):
            context = ProbeContext(model, probe, needs.layers, inputs_of=needs.inputs_of, gradients=needs.gradients)
            return monitor.compute(context, 0)

    logs = probe_step()
    panels = drawn(logs.images)
    shapes = sorted({f"{p.shape[1]}x{p.shape[0]}" for p in panels.values()})
    description = f"{len(panels)} panels of {', '.join(shapes)} px"

    rows = {
        "bare forward + backward of the batch (the unit)": timed(bare_step(model, images, labels)),
        "lightning_viz `grad_cam`, predicted class": timed(ours),
        "lightning_viz `grad_cam_maps`, predicted and true class": timed(ours_two),
        "captum `LayerGradCam`, predicted class (its target first: one more forward)": timed(captum_cam),
    }
    # pytorch-grad-cam hooks the layer for as long as its GradCAM lives: created here, released before the
    # next row, so that no other row runs with its hooks
    with GradCAM(model=model, target_layers=[module]) as cam:

        def pgc() -> None:
            model.eval()
            cam(input_tensor=images, targets=None)  # None: each image's predicted class
            model.train()

        model.train()
        rows["pytorch-grad-cam `GradCAM`, predicted class"] = timed(pgc)
    rows["GradCAMMonitor: probe forward pass + `compute` (maps of both classes, captions)"] = timed(probe_step)
    rows[f"GradCAMMonitor: drawing its {len(panels)} panels (writer thread)"] = timed(lambda: drawn(logs.images))

    use_native_crc32c()  # as the monitors do when training starts
    with tempfile.TemporaryDirectory() as logdir:
        summary = SummaryWriter(logdir)
        writer = BackgroundWriter(summary)
        step = iter(range(10**6))

        def write() -> None:
            writer.submit(Written(next(step), images=dict(panels)))
            writer.drain()  # written and flushed

        rows["GradCAMMonitor: writing them, PNG + event file + flush (writer thread)"] = timed(write)
        writer.close()
        summary.close()
    return rows, description


def table(name: str, layer: str, probe: ProbeBatch, rows: dict[str, float], panels: str) -> str:
    unit = rows["bare forward + backward of the batch (the unit)"]
    lines = [
        f"## {name}, layer `{layer}`",
        "",
        f"{len(probe.images)} probe images {tuple(probe.images.shape[1:])}; the monitor's probe: {panels}",
        "",
        "| | ms | x bare |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {label} | {ms:.1f} | {ms / unit:.2f} |" for label, ms in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="probe images")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per row (after 3 untimed)")
    parser.add_argument("--out", type=Path, default=OUT, help="markdown report")
    args = parser.parse_args()

    torch.manual_seed(0)
    probe = ProbeBatch.from_dataloader(DataLoader(Shapes(size=600, seed=1)), size=args.images)
    models = [
        ("ShapesNet (lightning_viz.demos, 7x7 stride 2)", ShapesNet(), "relu3"),
        ("torchvision resnet18 (weights=None, 6 classes)", torchvision.models.resnet18(weights=None, num_classes=6),
         "layer4"),
    ]  # fmt: skip
    tables = []
    for name, model, layer in models:
        rows, panels = bench(model, layer, probe, args.repeats)
        tables.append(table(name, layer, probe, rows, panels))
        print("\n" + tables[-1], flush=True)

    write_result(
        args.out,
        "What one Grad-CAM probe costs, side by side",
        ["captum", "grad-cam"],
        f"median of {args.repeats} calls after 3 untimed ones; x bare: the row's time over the bare forward + "
        "backward of the same batch in the same run",
        tables,
    )


if __name__ == "__main__":
    main()
