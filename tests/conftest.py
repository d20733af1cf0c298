"""Shared test models and helpers: tiny networks with the shapes real models have, and TensorBoard readers."""

from __future__ import annotations

import glob
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_lightning import Callback, LightningModule, Trainer, seed_everything
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class AwkwardNet(nn.Module):
    """Every shape invariant 3 names: BatchNorm, Dropout, an in-place ReLU, a ReLU module called twice,
    a functional F.relu, max and average pooling and a residual add."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)  # used twice below
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.avg = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.relu(self.conv2(x)) + x  # residual add after the reused ReLU
        x = F.relu(self.conv3(x))
        x = self.avg(x)
        return self.fc(self.drop(x.mean(dim=(2, 3))))


class Classifier(LightningModule):
    """A plain LightningModule around any image classifier."""

    def __init__(self, net: nn.Module, lr: float = 0.05) -> None:
        super().__init__()
        self.net = net
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch[0], batch[1]
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch[0], batch[1]
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def random_loader(
    n: int = 64, classes: int = 4, size: int = 16, batch_size: int = 8, seed: int = 0, shuffle: bool = True
) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.arange(n) % classes
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


def read_events(logdir: str) -> EventAccumulator:
    files = sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True))
    assert files, f"no event file under {logdir}"
    acc = EventAccumulator(os.path.dirname(files[0]), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def decode_image(event: Any) -> np.ndarray:
    """An image event from EventAccumulator.Images as an (H, W, 3) uint8 array."""
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def make_trainer(tmp_path: Path, callbacks: list[Callback], max_steps: int = 30, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = dict(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(tmp_path), name="run"),
        callbacks=callbacks,
        deterministic=True,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        val_check_interval=10,
    )
    options.update(kwargs)
    return Trainer(**options)


def fit_classifier(tmp_path: Path, callbacks: list[Callback], **kwargs: Any) -> tuple[Classifier, Trainer]:
    seed_everything(0)
    model = Classifier(AwkwardNet())
    trainer = make_trainer(tmp_path, callbacks, **kwargs)
    trainer.fit(model, random_loader(n=96), random_loader(n=32, seed=1, shuffle=False))
    return model, trainer


def train_losses(trainer: Trainer) -> list[tuple[int, float]]:
    assert trainer.logger is not None and trainer.logger.log_dir is not None
    return [(e.step, e.value) for e in read_events(trainer.logger.log_dir).Scalars("train_loss")]


def assert_same_training(a: tuple[Classifier, Trainer], b: tuple[Classifier, Trainer]) -> None:
    (model_a, trainer_a), (model_b, trainer_b) = a, b
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:  # weights and buffers: BatchNorm running stats and num_batches_tracked included
        assert torch.equal(state_a[key], state_b[key]), key
    for (name, p_a), p_b in zip(model_a.named_parameters(), model_b.parameters(), strict=True):
        assert p_a.grad is not None and torch.equal(p_a.grad, p_b.grad), name  # training's last gradients
    opt_a, opt_b = trainer_a.optimizers[0].state_dict(), trainer_b.optimizers[0].state_dict()
    for key in opt_a["state"]:
        assert torch.equal(opt_a["state"][key]["momentum_buffer"], opt_b["state"][key]["momentum_buffer"])
    assert train_losses(trainer_a) == train_losses(trainer_b)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model_a.modules())


@pytest.fixture
def awkward_net() -> AwkwardNet:
    torch.manual_seed(0)
    return AwkwardNet()


SHAPES_CHECKPOINT = Path(__file__).parent / "checkpoints" / "shapes_net.pt"


def trained_shapes_net(**hparams: Any) -> Any:
    """The committed trained ShapesNet of examples/train_shapes.py (tests/checkpoints/make_shapes_net.py wrote it):
    tests that need a trained network load it rather than train one, so their findings do not depend on the
    processor's rounding."""
    from lightning_viz.demos import ShapesNet

    model = ShapesNet(**hparams)
    model.load_state_dict(torch.load(SHAPES_CHECKPOINT, weights_only=True))
    return model
