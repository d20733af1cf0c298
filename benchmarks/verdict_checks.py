"""The learning-rate verdict on the example's net with Adam and AdamW, and a stock resnet18's verdicts, over seeds.

For each optimizer and rate, the example's ShapesNet trains 300 steps on Shapes with TrainingDiagnostics at its
default cadence (probes at 0, 5, 10, 25, 50, 100, 200, 300); the table lists the learning-rate verdict at every
probe for every seed ("-" while it abstains), with the held-out accuracy. Then torchvision's resnet18
(weights=None, stock: 7x7 stride-2 first layer) trains 100 steps with Adam at 1e-3 and its kernel and stride
verdicts are listed at every probe.

    python benchmarks/verdict_checks.py                 # about 10 minutes on 2 cores
    python benchmarks/verdict_checks.py --seeds 0       # one seed
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing as mp
import os
import tempfile
from typing import Any

CONFIGS = [("adam", 1e-3), ("adamw", 1e-3), ("adam", 1e-2), ("adam", 1e-5), ("sgd", 0.02), ("sgd", 0.2)]


def run(job: tuple[str, str, float, int, int]) -> dict[str, Any]:
    arch, optimizer, lr, seed, steps = job
    import torch

    torch.set_num_threads(1)
    from pytorch_lightning import Trainer, seed_everything
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader
    from worlds import Classifier  # benchmarks/worlds.py, beside this script (sys.path[0] in the workers too)

    from lightning_viz import TrainingDiagnostics
    from lightning_viz.data import Shapes
    from lightning_viz.demos import ShapesNet

    seed_everything(seed, workers=True)
    if arch == "zf":
        model = ShapesNet(7, 2, lr, optimizer=optimizer)
    else:
        from torchvision.models import resnet18

        model = Classifier(resnet18(weights=None, num_classes=6), optimizer, lr)
    train = DataLoader(Shapes(6000, seed=seed), batch_size=64, shuffle=True)
    val = DataLoader(Shapes(500, seed=10_000 + seed), batch_size=250)
    with tempfile.TemporaryDirectory() as logdir:
        trainer = Trainer(max_steps=steps, accelerator="cpu", logger=TensorBoardLogger(logdir, name="run"),
                          callbacks=[TrainingDiagnostics()], enable_progress_bar=False, enable_model_summary=False,
                          enable_checkpointing=False, limit_val_batches=0, log_every_n_steps=50)  # fmt: skip
        trainer.fit(model, train, val)
        (path,) = glob.glob(os.path.join(logdir, "run", "version_0", "events.*"))
        events = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        texts = {
            e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("diagnostics/verdicts/text_summary")
        }
        verdicts = {}
        for name in ("learning_rate", "stride", "kernel_size"):
            logged = (
                {e.step: int(e.value) for e in events.Scalars(f"verdict/{name}")}
                if f"verdict/{name}" in events.Tags()["scalars"]
                else {}
            )
            verdicts[name] = {step: logged.get(step) for step in sorted(texts)}
        scalars = events.Tags()["scalars"]
        deepest = next(t.removeprefix("diagnostics/change/") for t in scalars if t.startswith("diagnostics/change/"))
        evidence = {
            name: {e.step: e.value for e in events.Scalars(tag)}
            for name, tag in (("progress", "diagnostics/loss_progress"), ("jump", "diagnostics/loss_spike"),
                              ("change", f"diagnostics/change/{deepest}"),
                              ("dead", f"diagnostics/dead_channels/{deepest}"))
            if tag in scalars
        }  # fmt: skip
    test = Shapes(1000, seed=20_000 + seed)
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = torch.stack([test[i][1] for i in range(len(test))])
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).float().mean())
    return {"arch": arch, "optimizer": optimizer, "lr": lr, "seed": seed, "verdicts": verdicts, "texts": texts,
            "accuracy": accuracy, "evidence": evidence}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    jobs = [("resnet18", "adam", 1e-3, seed, 100) for seed in args.seeds]
    jobs += [("zf", opt, lr, seed, 300) for opt, lr in CONFIGS for seed in args.seeds]
    with mp.get_context("spawn").Pool(args.processes) as pool:
        results = pool.map(run, jobs, chunksize=1)
    show = {None: "-", -1: "-1", 0: "0", 1: "1"}
    zf = [r for r in results if r["arch"] == "zf"]
    steps = sorted(zf[0]["verdicts"]["learning_rate"])
    print("Learning-rate verdict on the example's net (ShapesNet 7x7/2), per probe step:\n")
    print("| optimizer | lr | seed | test acc | " + " | ".join(f"@{s}" for s in steps) + " |")
    print("|---|---|---|---|" + "---|" * len(steps))
    for r in zf:
        cells = " | ".join(show[r["verdicts"]["learning_rate"][s]] for s in steps)
        print(f"| {r['optimizer']} | {r['lr']:g} | {r['seed']} | {r['accuracy']:.3f} | {cells} |")
    print(
        "\nEvidence of the runs at ten times the example's rate (sgd 0.2), per probe step: loss progress / largest "
        "jump / representation change / dead channels of the deepest stage:\n"
    )
    for r in zf:
        if r["lr"] == 0.2:
            cells = " | ".join(
                " / ".join("-" if (v := r["evidence"].get(k, {}).get(s)) is None else f"{v:.2f}"
                           for k in ("progress", "jump", "change", "dead"))
                for s in steps
            )  # fmt: skip
            print(f"- seed {r['seed']}: " + cells)
    for r in zf:
        if r["lr"] == 0.2:
            print(f"\nsgd lr 0.2 seed {r['seed']}, last probe:\n{r['texts'][steps[-1]]}")
    print("\nStock resnet18 (weights=None, 7x7 stride 2), Adam 1e-3: kernel-size / stride verdicts per probe step:\n")
    for r in results:
        if r["arch"] == "resnet18":
            cells = ", ".join(f"@{s}: {show[r['verdicts']['kernel_size'][s]]} / {show[r['verdicts']['stride'][s]]}"
                              for s in sorted(r["verdicts"]["stride"]))  # fmt: skip
            print(f"- seed {r['seed']} (test acc {r['accuracy']:.3f}): {cells}")
            print(f"  step 0 text: {r['texts'][0]!r}")


if __name__ == "__main__":
    main()
