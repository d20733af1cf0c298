"""Bad configuration fails before the first optimizer step, with a message that names what is available."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import AwkwardNet, Classifier, random_loader
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_viz import FilterMonitor, GradCAMMonitor, TrainingDiagnostics
from lightning_viz.callbacks._suite import refuse_sharded


def _fit(
    tmp_path: Path, model: LightningModule, monitor: GradCAMMonitor, loaders: tuple[DataLoader, ...] = (), **kwargs: Any
) -> Trainer:
    options: dict[str, Any] = dict(
        max_steps=3,
        accelerator="cpu",
        logger=TensorBoardLogger(str(tmp_path)),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    options.update(kwargs)
    trainer = Trainer(callbacks=[monitor], **options)
    with pytest.raises(Exception) as info:
        trainer.fit(model, *(loaders or (random_loader(), random_loader(n=32, seed=1, shuffle=False))))
    assert trainer.global_step == 0, "must fail before training starts"
    raise info.value


def test_unknown_layer_lists_close_matches(tmp_path: Path) -> None:
    expected = r"unknown layer 'net.conv4'. Close matches: \['net.conv3', 'net.conv2', 'net.conv1'.*Convolution layers"
    with pytest.raises(ValueError, match=expected):
        _fit(tmp_path, Classifier(AwkwardNet()), GradCAMMonitor(layers="net.conv4"))


class MLP(Classifier):
    def __init__(self) -> None:
        super().__init__(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)))


def test_model_without_conv_layer(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match="MLP has no nn.Conv2d layer"):
        _fit(tmp_path, MLP(), GradCAMMonitor())


def test_no_tensorboard_logger(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match=r"no TensorBoardLogger \(found none\)"):
        _fit(tmp_path, Classifier(AwkwardNet()), GradCAMMonitor(), logger=False)


def test_probe_larger_than_dataset(tmp_path: Path) -> None:
    # drawn from the validation loader (32 samples), which is preferred over the training loader (64)
    with pytest.raises(ValueError, match="probe size 100 is larger than the dataset, which holds 32 samples"):
        _fit(tmp_path, Classifier(AwkwardNet()), GradCAMMonitor(probe_size=100))


class TokenModel(LightningModule):
    """Has a convolution, but its inputs are token ids, not images."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.embed(x)[:, None]).mean(dim=(1, 3))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return F.mse_loss(self(batch[0]), torch.zeros(len(batch[0]), 6))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_non_image_input(tmp_path: Path) -> None:
    tokens = DataLoader(TensorDataset(torch.randint(0, 10, (32, 8)), torch.zeros(32)), batch_size=8)
    with pytest.raises(TypeError, match=r"expected a float or uint8 tensor \(N, C, H, W\), got torch.int64 tensor"):
        _fit(tmp_path, TokenModel(), GradCAMMonitor(), (tokens,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probe_size": 0}, "probe_size must be a positive int, got 0"),
        ({"every_n_steps": 0}, "every_n_steps must be a positive int or None, got 0"),
        ({"every_n_epochs": -1}, "every_n_epochs must be a positive int or None, got -1"),
        ({"early_steps": (-1,)}, r"early_steps must be non-negative ints, got \(-1,\)"),
        ({"on_error": "ignore"}, "on_error must be 'warn' or 'raise', got 'ignore'"),
        ({"layers": []}, "layers must be None, a layer name or module, or a non-empty list, got"),
        ({"alpha": 2.0}, r"alpha must be in \[0, 1\], got 2.0"),
        ({"cmap": "nope"}, "unknown matplotlib colormap 'nope'"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GradCAMMonitor(**kwargs)


def test_bad_probe_type() -> None:
    with pytest.raises(TypeError, match="probe must be a ProbeBatch, an image tensor or None, got list"):
        GradCAMMonitor(probe=[1, 2])  # type: ignore[arg-type]


def test_validate_and_predict_say_once_that_the_monitors_probe_during_fit(tmp_path: Path) -> None:
    model = Classifier(AwkwardNet())
    monitors = [GradCAMMonitor(), TrainingDiagnostics(), FilterMonitor()]
    trainer = Trainer(callbacks=monitors, accelerator="cpu", logger=TensorBoardLogger(str(tmp_path)),
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    images = DataLoader(torch.randn(16, 3, 16, 16), batch_size=8)  # what predict_step passes to forward
    for stage, run, loader in (
        ("validate", trainer.validate, random_loader(n=16)),
        ("predict", trainer.predict, images),
    ):
        with pytest.warns(UserWarning) as record:
            run(model, loader)
        said = [str(w.message) for w in record if "probe during fit only" in str(w.message)]
        assert said == [f"FilterMonitor, GradCAMMonitor, TrainingDiagnostics probe during fit only: trainer.{stage} "
                        "logs nothing from them (a callback of yours may call probe_now from its hooks)"]  # fmt: skip


def test_testing_after_a_fit_says_nothing_the_user_did_not_ask_about(tmp_path: Path) -> None:
    """trainer.fit then trainer.test (as the example does): the monitors probed during the fit, so the test stage's
    "probe during fit only" would be news to no one."""
    model = Classifier(AwkwardNet())
    trainer = Trainer(callbacks=[GradCAMMonitor(), TrainingDiagnostics()], accelerator="cpu", max_steps=2,
                      logger=TensorBoardLogger(str(tmp_path)), enable_progress_bar=False,
                      enable_model_summary=False)  # fmt: skip
    trainer.fit(model, random_loader(n=16), random_loader(n=16, shuffle=False))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.validate(model, random_loader(n=16, shuffle=False), verbose=False)
    assert not [w for w in record if "probe during fit only" in str(w.message)]


def test_strategies_that_shard_parameters_are_refused() -> None:
    with pytest.raises(MisconfigurationException, match="GradCAMMonitor does not support FSDPStrategy: it shards"):
        refuse_sharded(FSDPStrategy(), "GradCAMMonitor", MisconfigurationException)
    refuse_sharded(DDPStrategy(), "GradCAMMonitor")  # every rank holds the whole model
