"""Demo models, shipped in the package so that the example, the tests and the benchmarks import them by name (as
Lightning ships its demos in ``lightning.pytorch.demos``).

``ShapesNet`` is the network ``examples/train_shapes.py`` trains on :class:`~lightning_viz.data.Shapes`: a small
ZF-style classifier whose first-layer kernel size and stride are arguments (ZFNet's 7x7 stride 2 by default,
AlexNet's 11x11 stride 4 for comparison). This subpackage imports ``pytorch_lightning``; ``import lightning_viz``
does not import it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import Tensor, nn

__all__ = ["ShapesNet"]


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
        return self.fc(x.mean(dim=(2, 3)))  # type: ignore[no-any-return]

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
        lr, name = self.hparams.lr, self.hparams.optimizer  # type: ignore[attr-defined]
        if name == "adam":
            return torch.optim.Adam(self.parameters(), lr=lr)
        if name == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=lr)
        return torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
