"""What the top-k deconvnet projections of one layer cost, measured side by side in one run.

Times (median of repeats, after warm-up), for a 16-image probe batch and top_k = 9:
  - a bare forward + backward of the probe batch (cross-entropy, parameter gradients): the unit of cost;
  - a bare forward + backward of a batch of top_k images;
  - lightning_viz: the ranking forward of the probe batch, then all top_k units in one batched forward and
    backward (project_units), as DeconvNetMonitor does;
  - captum's NeuronDeconvolution called once per unit on its image, the way captum is used for ZF figures.

    python benchmarks/deconvnet_cost.py          # needs the bench extra: pip install -e ".[bench]"
"""

from __future__ import annotations

import warnings

import torch
import torchvision
from _timing import bare_step, median_ms  # benchmarks/_timing.py, beside this script
from captum.attr import NeuronDeconvolution
from torch import nn

from lightning_viz import ProbeBatch
from lightning_viz.data import Shapes
from lightning_viz.demos import ShapesNet
from lightning_viz.methods import isolated, project_units, resolve_layer, top_k_units
from lightning_viz.methods._hooks import forward_until

TOP_K = 9


def bench(name: str, model: nn.Module, layer: str, probe: ProbeBatch) -> None:
    images, labels = probe.images, probe.labels
    assert labels is not None
    module = resolve_layer(model, layer)[1]

    def ranked() -> torch.Tensor:
        with torch.no_grad():
            acts = forward_until(model, images, {layer: module})
        return top_k_units(acts[layer], TOP_K).index

    index = ranked()

    def rank() -> None:
        with isolated(model):
            ranked()

    def ours() -> None:
        with isolated(model):
            project_units(model, images[index[:, 0]], {layer: (torch.arange(len(index)), index[:, 1:])})

    captum = NeuronDeconvolution(model, module)

    def captum_per_unit() -> None:
        model.eval()
        for n, c, y, x in index.tolist():
            captum.attribute(images[n : n + 1].clone().requires_grad_(True), neuron_selector=(c, y, x))
        model.train()

    rows = {
        "bare forward+backward, probe batch (16)": median_ms(bare_step(model, images, labels), repeats=11, warmup=2),
        f"bare forward+backward, {TOP_K} images": median_ms(
            bare_step(model, images[index[:, 0]], labels[index[:, 0]]), repeats=11, warmup=2
        ),
        "lightning_viz: ranking forward of the probe batch": median_ms(rank, repeats=11, warmup=2),
        f"lightning_viz: {TOP_K} units in one forward+backward": median_ms(ours, repeats=11, warmup=2),
        f"captum NeuronDeconvolution, {TOP_K} calls": median_ms(captum_per_unit, repeats=11, warmup=2),
    }
    unit = rows["bare forward+backward, probe batch (16)"]
    print(f"\n{name}, layer {layer!r}, probe {tuple(images.shape)}, top_k {TOP_K}, {torch.get_num_threads()} threads")
    print(f"{'':50s} {'ms':>8s} {'x bare':>8s}")
    for label, ms in rows.items():
        print(f"{label:50s} {ms:8.1f} {ms / unit:8.2f}")
    ratio = (
        rows[f"captum NeuronDeconvolution, {TOP_K} calls"]
        / rows[f"lightning_viz: {TOP_K} units in one forward+backward"]
    )
    print(f"captum per unit / lightning_viz batched: {ratio:.1f}x")


def main() -> None:
    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
    torch.manual_seed(0)
    probe = ProbeBatch.from_dataloader(torch.utils.data.DataLoader(Shapes(size=600, seed=1)), size=16)
    bench("ShapesNet (lightning_viz.demos, 7x7 stride 2)", ShapesNet(), "relu3", probe)
    bench(
        "torchvision resnet18 (weights=None, 6 classes)",
        torchvision.models.resnet18(weights=None, num_classes=6),
        "layer3",
        probe,
    )
    bench(
        "torchvision vgg11 (weights=None, 6 classes)",
        torchvision.models.vgg11(weights=None, num_classes=6),
        "features.14",
        probe,
    )


if __name__ == "__main__":
    main()
