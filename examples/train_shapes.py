"""Train a small ZF-style network on the embedded Shapes dataset with lightning_viz attached.

    python examples/train_shapes.py                      # 7x7 stride-2 first layer, as ZFNet
    python examples/train_shapes.py --kernel 11 --stride 4   # AlexNet's first layer, for comparison
    python examples/train_shapes.py --optimizer adam --lr 1e-3   # Adam at its default rate
    python examples/train_shapes.py --fast               # a smoke run of a few seconds

Logs go to runs/<name>; the script prints the tensorboard command that shows them. No download, no GPU needed.
The network is lightning_viz.demos.ShapesNet. TrainingDiagnostics tries the advice of a failing verdict on copies of
the model (confirm_advice, on by default; confirm_at_end=True here, since a fit this short never affords a check
within the budget): `--lr 0.2`, `--kernel 11 --stride 4` and `--kernel 1 --stride 2` each get a "— tried: ..." line
and confirmation/* scalars within three epochs (`--epochs 3`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pytorch_lightning import Trainer, seed_everything
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_viz import (
    DeconvNetMonitor,
    ExplanationQualityMonitor,
    FilterMonitor,
    GradCAMMonitor,
    TrainingDiagnostics,
)
from lightning_viz.callbacks import tensorboard_command
from lightning_viz.data import Shapes
from lightning_viz.demos import ShapesNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", type=int, default=7, help="first-layer kernel size")
    parser.add_argument("--stride", type=int, default=2, help="first-layer stride")
    parser.add_argument("--lr", type=float, default=0.02, help="learning rate")
    parser.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd", help="sgd: momentum 0.9")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every-n-steps", type=int, default=100, help="probe cadence in optimizer steps")
    parser.add_argument("--logdir", default="runs")
    parser.add_argument("--fast", action="store_true", help="smoke mode: small data, one short epoch")
    args = parser.parse_args()

    seed_everything(args.seed, workers=True)
    n_train, n_eval = (512, 128) if args.fast else (6000, 1000)
    train = DataLoader(Shapes(n_train, seed=args.seed), batch_size=64, shuffle=True)
    val = DataLoader(Shapes(n_eval, seed=10_000 + args.seed), batch_size=256)
    test = DataLoader(Shapes(n_eval, seed=20_000 + args.seed), batch_size=256)

    optimizer = "" if args.optimizer == "sgd" else f"_{args.optimizer}"
    name = f"k{args.kernel}s{args.stride}{optimizer}_lr{args.lr:g}_seed{args.seed}" + ("_fast" if args.fast else "")
    logger = TensorBoardLogger(args.logdir, name=name)
    every = 4 if args.fast else args.every_n_steps
    callbacks = [
        GradCAMMonitor(every_n_steps=every),
        DeconvNetMonitor(every_n_steps=every),
        FilterMonitor(every_n_steps=every, activation_max_every_n_steps=8 if args.fast else 250),
        TrainingDiagnostics(every_n_steps=every, confirm_at_end=True),  # a fit this short never affords the check
        ExplanationQualityMonitor(every_n_steps=every, early_steps=()),
    ]
    tensorboard = os.path.relpath(Path(sys.executable).parent / "tensorboard")  # the venv's, which may not be on PATH
    steps = len(train) * (1 if args.fast else args.epochs)
    watch = tensorboard_command(args.logdir, callbacks, steps, log_every_n_steps=10, executable=tensorboard)
    trainer = Trainer(
        max_epochs=1 if args.fast else args.epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=10,
        enable_model_summary=False,
    )
    print(f"logging to {logger.log_dir}; watch it live with:\n  {watch}")
    start = time.perf_counter()
    model = ShapesNet(args.kernel, args.stride, args.lr, optimizer=args.optimizer)
    trainer.fit(model, train, val)
    (result,) = trainer.test(model, test, verbose=False)
    print(
        f"trained in {time.perf_counter() - start:.0f} s; test accuracy {result['test/accuracy']:.3f} "
        f"(chance 1/6 = 0.167)"
    )
    print(f"see it with:\n  {watch}")


if __name__ == "__main__":
    main()
