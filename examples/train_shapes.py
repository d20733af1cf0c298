"""Train a small ZF-style network on the embedded Shapes dataset with lightning_viz attached.

    python examples/train_shapes.py                      # 7x7 stride-2 first layer, as ZFNet
    python examples/train_shapes.py --kernel 11 --stride 4   # AlexNet's first layer, for comparison
    python examples/train_shapes.py --optimizer adam --lr 1e-3   # Adam at its default rate
    python examples/train_shapes.py --fast               # a smoke run of a few seconds

Logs go to runs/<name>; the script prints the tensorboard command that shows them. No download, no GPU needed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule, Trainer, seed_everything
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_viz import (
    DeconvNetMonitor,
    ExplanationQualityMonitor,
    FilterMonitor,
    GradCAMMonitor,
    TrainingDiagnostics,
)
from lightning_viz.data import Shapes


class ShapesNet(LightningModule):
    """conv1 (k, s, 32 ch) -> maxpool 3/2 -> conv2 3x3 64 -> maxpool 3/2 -> conv3 3x3 64 -> GAP -> linear."""

    def __init__(
        self, kernel: int = 7, stride: int = 2, lr: float = 0.02, num_classes: int = 6, optimizer: str = "sgd"
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.conv1 = nn.Conv2d(3, 32, kernel, stride, padding=kernel // 2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, 2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.conv3(x))
        return self.fc(x.mean(dim=(2, 3)))

    def _step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> Tensor:
        images, labels, _ = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "train")
        self.log(f"{stage}/accuracy", (logits.argmax(1) == labels).float().mean(), prog_bar=stage != "train")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr, name = self.hparams.lr, self.hparams.optimizer
        if name == "adam":
            return torch.optim.Adam(self.parameters(), lr=lr)
        if name == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=lr)
        return torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


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
        TrainingDiagnostics(every_n_steps=every),
        ExplanationQualityMonitor(every_n_steps=every, early_steps=()),
    ]
    trainer = Trainer(
        max_epochs=1 if args.fast else args.epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=10,
        enable_model_summary=False,
    )
    tensorboard = os.path.relpath(Path(sys.executable).parent / "tensorboard")  # the venv's, which may not be on PATH
    watch = f"{tensorboard} --logdir {args.logdir} --samples_per_plugin images=100"
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
