"""What the top-k deconvnet projections of one layer cost, measured side by side in one run.

Times (median of repeats, after warm-up), for a 16-image probe batch and top_k = 9:
  - a bare forward + backward of the probe batch (cross-entropy, parameter gradients): the unit of cost;
  - a bare forward + backward of a batch of top_k images;
  - lightning_viz: the ranking forward of the probe batch, then all top_k units in one batched forward and
    backward (project_units), as DeconvNetMonitor does;
  - captum's NeuronDeconvolution called once per unit on its image, the way captum is used for ZF figures.

    python benchmarks/deconvnet_cost.py          # needs the bench extra: pip install -e ".[bench]"

Writes the tables to benchmarks/deconvnet_cost.md (--out) and prints them.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from _timing import bare_step, median_ms, write_result  # benchmarks/_timing.py, beside this script
from captum.attr import NeuronDeconvolution
from torch import nn

from lightning_viz import ProbeBatch
from lightning_viz.data import Shapes
from lightning_viz.demos import ShapesNet
from lightning_viz.methods import isolated, project_units, resolve_layer, top_k_units
from lightning_viz.methods._hooks import forward_until

TOP_K = 9
OUT = Path(__file__).resolve().with_name("deconvnet_cost.md")
REPEATS = 11


def bench(name: str, model: nn.Module, layer: str, probe: ProbeBatch) -> str:
    """The rows' median times for one model and layer, as a Markdown table."""
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

    def timed(fn: Callable[[], object]) -> float:
        return median_ms(fn, repeats=REPEATS, warmup=2)

    bare = "bare forward + backward of the probe batch (the unit)"
    ours_row = f"lightning_viz: all {TOP_K} units in one forward + backward (`project_units`)"
    captum_row = "captum `NeuronDeconvolution`, once per unit"
    rows = {
        bare: timed(bare_step(model, images, labels)),
        f"bare forward + backward of {TOP_K} images": timed(bare_step(model, images[index[:, 0]], labels[index[:, 0]])),
        "lightning_viz: ranking forward of the probe batch": timed(rank),
        ours_row: timed(ours),
        captum_row: timed(captum_per_unit),
    }
    unit = rows[bare]
    lines = [
        f"## {name}, layer `{layer}`",
        "",
        f"{len(images)} probe images {tuple(images.shape[1:])}, top_k {TOP_K}",
        "",
        "| | ms | x bare |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {label} | {ms:.1f} | {ms / unit:.2f} |" for label, ms in rows.items()]
    lines += ["", f"captum per unit / lightning_viz batched: {rows[captum_row] / rows[ours_row]:.1f}x"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT, help="markdown report")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
    torch.manual_seed(0)
    probe = ProbeBatch.from_dataloader(torch.utils.data.DataLoader(Shapes(size=600, seed=1)), size=16)
    models = [
        ("ShapesNet (lightning_viz.demos, 7x7 stride 2)", ShapesNet(), "relu3"),
        ("torchvision resnet18 (weights=None, 6 classes)", torchvision.models.resnet18(weights=None, num_classes=6),
         "layer3"),
        ("torchvision vgg11 (weights=None, 6 classes)", torchvision.models.vgg11(weights=None, num_classes=6),
         "features.14"),
    ]  # fmt: skip
    tables = []
    for name, model, layer in models:
        tables.append(bench(name, model, layer, probe))
        print("\n" + tables[-1], flush=True)
    write_result(
        args.out,
        "What the top-k deconvnet projections of one layer cost, side by side",
        ["captum"],
        f"median of {REPEATS} calls after 2 untimed ones; x bare: the row's time over the bare forward + "
        "backward of the probe batch in the same run; captum's ranking of the units is not counted",
        tables,
    )


if __name__ == "__main__":
    main()
