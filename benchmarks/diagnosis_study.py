"""Validation study for TrainingDiagnostics: do the kernel-size, stride and learning-rate numbers rank
configurations as independent held-out outcomes do, on every seed?

Configurations of the ZF-style net of examples/train_shapes.py on Shapes: first layer 11/4, 7/2 and 3/1
(kernel/stride) at a learning rate that works for all, plus 7/2 at ten times and a hundredth of it; several seeds.
Each run trains with TrainingDiagnostics attached; the metrics are read back from the TensorBoard event files at
the given steps. Held-out outcomes on a separate Shapes test set: accuracy, and shift consistency (mean total
variation distance of the softmax under 1-3 px shifts, Zhang 2019). Runs go in parallel processes, one thread each.

    python benchmarks/diagnosis_study.py --out benchmarks/diagnosis_study.md      # 15 runs
    python benchmarks/diagnosis_study.py --lr-range                               # the learning-rate range test
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
METRICS = [
    "band_low/conv1", "band_mid/conv1", "band_high/conv1", "dominant_high/conv1", "smoothness/conv1",
    "dominance/conv1", "uneven_overlap/conv1", "lattice_peak_ratio/conv1", "shift_tvd/model",
    "update_ratio/conv1", "update_ratio/conv2", "update_ratio/conv3", "dead_channels/relu3",
    "cka_previous/relu3", "rms_growth/conv1",
]  # fmt: skip


def run(config: tuple[str, int, int, float, int, int]) -> dict[str, Any]:
    name, kernel, stride, lr, seed, epochs = config
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "examples"))
    from pytorch_lightning import Trainer, seed_everything
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader
    from train_shapes import ShapesNet

    from lightning_viz import TrainingDiagnostics
    from lightning_viz.data import Shapes
    from lightning_viz.diagnostics import shift_consistency

    seed_everything(seed, workers=True)
    train = DataLoader(Shapes(6000, seed=seed), batch_size=64, shuffle=True)
    val = DataLoader(Shapes(500, seed=10_000 + seed), batch_size=250)
    test = Shapes(1000, seed=20_000 + seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as logdir:
        trainer = Trainer(
            max_epochs=epochs, accelerator="cpu", logger=TensorBoardLogger(logdir, name="run"),
            callbacks=[TrainingDiagnostics(every_n_steps=100, early_steps=(10, 25, 50))],
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            log_every_n_steps=50,
        )  # fmt: skip
        model = ShapesNet(kernel, stride, lr)
        trainer.fit(model, train, val)
        events = EventAccumulator(glob.glob(os.path.join(logdir, "run", "version_0", "events.*"))[0],
                                  size_guidance={"scalars": 0})  # fmt: skip
        events.Reload()
        tags = [f"diagnostics/{m}" for m in METRICS] + ["verdict/stride", "verdict/learning_rate"]
        series = {t.removeprefix("diagnostics/"): {e.step: e.value for e in events.Scalars(t)}
                  for t in tags if t in events.Tags()["scalars"]}  # fmt: skip
    model.eval()
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = torch.stack([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).float().mean())
    held_out_tvd = shift_consistency(model, images[:500])
    return {"name": name, "kernel": kernel, "stride": stride, "lr": lr, "seed": seed, "series": series,
            "accuracy": accuracy, "shift_tvd": held_out_tvd, "seconds": time.perf_counter() - start}  # fmt: skip


def summary(results: list[dict[str, Any]]) -> str:
    """One row per run: the held-out outcomes, the numbers the verdicts use, and the verdicts the callback logged
    at each probe of the first 100 steps."""
    import statistics

    lines = [
        "| config | lr | seed | test acc | held-out shift TVD | max lattice-peak ratio, steps 0-100 | stride verdicts "
        "| median update ratio @10 | dead relu3 @100 | learning-rate verdicts @0,10,25,50,100 | first step reported |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (r["name"], r["seed"])):
        s = r["series"]
        early = [v for step, v in s.get("lattice_peak_ratio/conv1", {}).items() if step <= 100]
        strides = [int(v) for step, v in sorted(s.get("verdict/stride", {}).items()) if step <= 100]
        ratio = statistics.median(s[f"update_ratio/conv{i}"][10] for i in (1, 2, 3))
        lr = [int(s["verdict/learning_rate"].get(step, 0)) for step in (0, 10, 25, 50, 100)]
        first = next((step for step, v in sorted(s["verdict/learning_rate"].items()) if v != 0), None)
        lines.append(
            f"| {r['name']} | {r['lr']:g} | {r['seed']} | {r['accuracy']:.3f} | {r['shift_tvd']:.4f} "
            f"| {max(early):.3f} | {sorted(set(strides))} | {ratio:.2g} "
            f"| {s['dead_channels/relu3'][100]:.3f} | {lr} | {'-' if first is None else first} |"
        )
    return "\n".join(lines)


def table(results: list[dict[str, Any]], steps: tuple[int, ...]) -> str:
    lines = []
    header = ["config", "lr", "seed", "test acc", "held-out shift TVD"]
    columns = [(m, s) for m in METRICS for s in steps]
    header += [f"{m} @{s}" for m, s in columns]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for r in sorted(results, key=lambda r: (r["name"], r["seed"])):
        row = [r["name"], f"{r['lr']:g}", str(r["seed"]), f"{r['accuracy']:.3f}", f"{r['shift_tvd']:.4f}"]
        for m, s in columns:
            value = r["series"].get(m, {}).get(s)
            row.append("" if value is None else f"{value:.4g}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=0.02, help="the working learning rate")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--lr-range", action="store_true", help="run the learning-rate range test instead")
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args()
    if args.lr_range:
        configs = [(f"{k}/{s} lr {lr:g}", k, s, lr, 0, 1) for k, s in ((11, 4), (7, 2), (3, 1))
                   for lr in (0.002, 0.005, 0.02, 0.05, 0.2)]  # fmt: skip
        steps: tuple[int, ...] = (50,)
    else:
        base = [("11/4", 11, 4, args.lr), ("7/2", 7, 2, args.lr), ("3/1", 3, 1, args.lr),
                ("7/2 lr x10", 7, 2, 10 * args.lr), ("7/2 lr /100", 7, 2, args.lr / 100)]  # fmt: skip
        configs = [(n, k, s, lr, seed, args.epochs) for n, k, s, lr in base for seed in range(args.seeds)]
        steps = (0, 10, 50, 100)
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(args.processes) as pool:
        results = pool.map(run, configs, chunksize=1)
    text = table(results, steps) if args.lr_range else summary(results) + "\n\nAll numbers:\n\n" + table(results, steps)
    text += f"\n\n{len(results)} runs, {time.perf_counter() - start:.0f} s wall with {args.processes} processes.\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
