"""The default monitor suite on torchvision's classifiers: does every monitor run, and what does a probe step cost?

Each architecture (``weights=None``, 6 classes) trains on the embedded Shapes images at 64x64 for ``--steps``
steps with AdamW at 1e-3, batch 16, under ``lightning.pytorch``, with all five monitors at their defaults except:
``on_error="raise"`` (a failed probe stops the run and is reported), ``budget=None`` and a cadence of 10 steps (so
a short run reaches a regular probe), and the expensive parts every 20 steps. It prints a markdown table: whether
the run finished, its wall time, the probe time at step 0 (the first probe traces receptive fields and checks the
crop layouts), the median regular probe step, the expensive parts at step 20, and the layers the monitors chose.

    python benchmarks/torchvision_zoo.py                        # all architectures below, 21 steps each
    python benchmarks/torchvision_zoo.py --archs convnext_tiny resnet18 --out /tmp/zoo.md
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_viz.data import Shapes
from lightning_viz.lightning import (
    DeconvNetMonitor,
    ExplanationQualityMonitor,
    FilterMonitor,
    GradCAMMonitor,
    TrainingDiagnostics,
)

ARCHS = (
    "resnet18", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "alexnet", "googlenet", "densenet121",
    "squeezenet1_1", "shufflenet_v2_x0_5", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5", "efficientnet_b0",
    "regnet_x_400mf", "convnext_tiny", "swin_t",
)  # fmt: skip
PROBE_STEP = "viz/overhead_ms/probe_step"


class Classifier(LightningModule):
    def __init__(self, arch: str) -> None:
        super().__init__()
        extra = {"aux_logits": False, "init_weights": True} if arch == "googlenet" else {}
        self.net = getattr(torchvision.models, arch)(weights=None, num_classes=6, **extra)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.net(x)
        return logits

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def suite() -> list[Any]:
    common: dict[str, Any] = {"every_n_steps": 10, "on_error": "raise", "budget": None}
    return [
        GradCAMMonitor(**common),
        DeconvNetMonitor(**common),
        FilterMonitor(**common, activation_max_every_n_steps=20),
        TrainingDiagnostics(**common, shift_every_n_steps=20),
        ExplanationQualityMonitor(**common, expensive_every_n_steps=20),
    ]


def run(arch: str, steps: int) -> list[str]:
    seed_everything(0, verbose=False)
    monitors = suite()
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(
                max_steps=steps,
                accelerator="cpu",
                logger=TensorBoardLogger(tmp),
                callbacks=monitors,
                enable_progress_bar=False,
                enable_model_summary=False,
                enable_checkpointing=False,
            )
            trainer.fit(Classifier(arch), DataLoader(Shapes(320, seed=1), batch_size=16, shuffle=True))
            events = EventAccumulator(str(trainer.logger.log_dir), size_guidance={"scalars": 0}).Reload()
    except Exception as error:
        traceback.print_exc(limit=-3)
        return [arch, f"failed: {type(error).__name__}: {str(error)[:120]}", f"{time.perf_counter() - start:.0f}"]
    seconds = time.perf_counter() - start
    probe = {e.step: e.value / 1000 for e in events.Scalars(PROBE_STEP)}
    parts = sum(
        e.value / 1000
        for tag in events.Tags()["scalars"]
        if tag.startswith("viz/overhead_ms/") and tag.count("/") == 3
        for e in events.Scalars(tag)
        if e.step == 20
    )
    regular = [v for s, v in probe.items() if s % 10 == 0 and 0 < s < 20]
    deconvnet, gradcam = monitors[1], monitors[0]
    return [
        arch,
        "ok",
        f"{seconds:.0f}",
        f"{probe.get(0, float('nan')):.2f}",
        f"{statistics.median(regular):.2f}" if regular else "-",
        f"{parts:.1f}",
        ", ".join(f"`{name}`" for name in getattr(deconvnet, "layer_names", [])),
        ", ".join(f"`{name}`" for name in getattr(gradcam, "layer_names", [])),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    header = ["architecture", "run", "wall (s)", "step 0 probe (s)", "regular probe (s)", "expensive parts (s)",
              "deconvnet layers", "Grad-CAM layer"]  # fmt: skip
    rows = []
    for arch in args.archs:
        rows.append(run(arch, args.steps))
        print(" | ".join(rows[-1]), flush=True)
    rows = [row + [""] * (len(header) - len(row)) for row in rows]
    table = "\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header), *rows])
    text = "\n".join(
        [
            "# The default suite on torchvision's classifiers",
            "",
            f"`{shlex.join(['python', *sys.argv])}`",
            "",
            f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}, CPU, {torch.get_num_threads()} threads",
            f"- {args.steps} steps of AdamW (1e-3), batch 16, Shapes at 64x64; every monitor `on_error='raise'`, "
            "`budget=None`, every 10 steps, the expensive parts at step 20",
            "",
            table,
            "",
        ]
    )
    print("\n" + text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
