"""TrainingDiagnostics in a real Trainer: the numbers it logs, and that training does not notice it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import (
    AwkwardNet,
    Classifier,
    assert_same_training,
    fit_classifier,
    make_trainer,
    random_loader,
    read_events,
)
from pytorch_lightning import seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_viz import ExplanationQualityMonitor, GradCAMMonitor, TrainingDiagnostics
from lightning_viz.callbacks.diagnostics import CUSTOM_SCALARS_LAYOUT
from lightning_viz.diagnostics.verdicts import Thresholds


def test_training_is_bit_identical_and_the_metrics_are_logged(tmp_path: Path) -> None:
    baseline = fit_classifier(tmp_path / "without", [])
    monitor = TrainingDiagnostics(every_n_steps=10, early_steps=(1, 5))
    run = fit_classifier(tmp_path / "with", [monitor])
    assert_same_training(run, baseline)
    events = read_events(run[1].logger.log_dir)
    tags = events.Tags()["scalars"]
    scalars = set(tags)
    for metric in ("band_low", "band_mid", "band_high", "dominant_high", "smoothness", "dead_filters", "dominance",
                   "rms_growth", "uneven_overlap", "lattice_peak_ratio"):  # fmt: skip
        assert f"diagnostics/{metric}/net.conv1" in scalars, metric
    # twelve forward passes: its own cadence (shift_every_n_steps) and the final probe
    assert [e.step for e in events.Scalars("diagnostics/shift_tvd/model")] == [30]
    # the update ratio needs the weights before the step that leads to a probe: not at step 0
    ratios = events.Scalars("diagnostics/update_ratio/net.conv2")
    assert [e.step for e in ratios] == [1, 5, 10, 20, 30] and all(0 < e.value < 1 for e in ratios)
    assert [e.step for e in events.Scalars("diagnostics/cka_previous/net.conv3")] == [1, 5, 10, 20, 30]
    assert events.Scalars("diagnostics/uneven_overlap/net.conv1")[0].value == 1.0  # 3x3 stride 1
    assert "custom_scalars__config__" in events.Tags()["tensors"]  # the Custom Scalars tab's layout
    for question in ("kernel size", "stride", "learning rate"):  # no empty chart (verdicts may abstain)
        for title, (_, patterns) in CUSTOM_SCALARS_LAYOUT[question].items():
            matched = [tag for tag in scalars if any(re.fullmatch(pattern, tag) for pattern in patterns)]
            assert matched or title.startswith("verdict"), title
    assert "diagnostics/verdicts/text_summary" in events.Tags()["tensors"]  # how text summaries are stored
    assert [e.value for e in events.Scalars("verdict/stride")] == [0.0] * 6  # 3x3 stride 1 cannot alias
    texts = _texts(events, "diagnostics/verdicts")
    assert sorted(texts) == [0, 1, 5, 10, 20, 30]
    logged = (
        {e.step: e.value for e in events.Scalars("verdict/learning_rate")} if "verdict/learning_rate" in tags else {}
    )
    assert set(logged.values()) <= {-1.0, 0.0, 1.0}
    for step, text in texts.items():  # a verdict is logged exactly where its text gives one
        assert (step in logged) != ("not enough evidence yet" in text.split("**learning rate**")[1]), text
    bands = [events.Scalars(f"diagnostics/band_{b}/net.conv1")[-1].value for b in ("low", "mid", "high")]
    assert sum(bands) == pytest.approx(1.0, abs=1e-6)


def test_the_update_ratio_is_measured_around_the_real_step(tmp_path: Path) -> None:
    """With lr=0 nothing moves: every ratio is exactly 0 (the copy was taken before a step that changed nothing)."""
    monitor = TrainingDiagnostics(every_n_steps=2, early_steps=())
    trainer = make_trainer(tmp_path, [monitor], max_steps=4)
    trainer.fit(Classifier(AwkwardNet(), lr=0.0), random_loader(n=96), random_loader(n=32, seed=1, shuffle=False))
    ratios = read_events(trainer.logger.log_dir).Scalars("diagnostics/update_ratio/net.conv1")
    assert [(e.step, e.value) for e in ratios] == [(2, 0.0), (4, 0.0)]


def test_custom_scalars_layout_groups_the_four_questions() -> None:
    assert set(CUSTOM_SCALARS_LAYOUT) == {"kernel size", "stride", "learning rate", "explanation quality"}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="top_k must be a positive int, got 0"):
        TrainingDiagnostics(top_k=0)


class _DivergesAt(Classifier):
    """The loss turns NaN at one known step, as an exploding run's does; the weights follow after that step."""

    def __init__(self, step: int) -> None:
        super().__init__(AwkwardNet(), lr=0.05)
        self.nan_step = step

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == self.nan_step else loss


def _texts(events: Any, tag: str) -> dict[int, str]:
    return {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors(f"{tag}/text_summary")}


def test_a_diverged_run_is_named_with_its_first_step_by_every_monitor(tmp_path: Path) -> None:
    seed_everything(0)
    monitors = [TrainingDiagnostics(every_n_steps=10, early_steps=(5,)), GradCAMMonitor(every_n_steps=10,
                early_steps=()), ExplanationQualityMonitor(every_n_steps=10, early_steps=(), steps=2)]  # fmt: skip
    trainer = make_trainer(tmp_path, monitors, max_steps=20)
    trainer.fit(_DivergesAt(7), random_loader(n=96), random_loader(n=32, seed=1, shuffle=False))
    events = read_events(trainer.logger.log_dir)
    verdicts = _texts(events, "diagnostics/verdicts")
    assert "diverged" not in verdicts[5]
    assert "✗ diverged: the training loss since step 7 and the weights at step 10" in verdicts[10]
    assert [(e.step, e.value) for e in events.Scalars("verdict/learning_rate") if e.step >= 10] == [
        (10, 1.0),
        (20, 1.0),
    ]
    assert "verdict/kernel_size" not in events.Tags()["scalars"]  # a 3x3 kernel covering its stride: no verdict
    assert "weights are not finite" in _texts(events, "gradcam/status")[10]
    assert [e.step for e in events.Images("gradcam/net.conv3")] == [0]  # no ordinary panel once diverged
    warnings = _texts(events, "quality/warnings")
    assert "passed every check" in warnings[0] or "blank" in warnings[0] or "✗" not in warnings[0]
    assert "weights are not finite" in warnings[10] and "passed every check" not in warnings[10]


class _OneBatch(Classifier):
    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.parameters(), lr=0.0)


def test_a_model_that_cannot_move_is_called_too_low_and_step_zero_abstains(tmp_path: Path) -> None:
    """The same batch at every step, no dropout and a rate of 0: the loss is exactly flat and the representation
    exactly the same, whatever the machine's rounding."""
    seed_everything(0)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    loader = DataLoader(TensorDataset(x.repeat(8, 1, 1, 1), y.repeat(8)), batch_size=8, shuffle=False)
    monitor = TrainingDiagnostics(every_n_steps=20, early_steps=(5,), thresholds=Thresholds(low_after=40))
    trainer = make_trainer(tmp_path, [monitor], max_steps=40, limit_val_batches=0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))  # fmt: skip
    trainer.fit(_OneBatch(net), loader, loader)
    events = read_events(trainer.logger.log_dir)
    verdicts = _texts(events, "diagnostics/verdicts")
    assert "not enough evidence yet" in verdicts[0].split("**learning rate**")[1]
    assert [(e.step, e.value) for e in events.Scalars("verdict/learning_rate")] == [(40, -1.0)]
    assert "too low if it stays so until step 40" in verdicts[20] and "✗ too low" in verdicts[40]
    assert [e.value for e in events.Scalars("diagnostics/loss_progress")] == [0.0, 0.0]
    assert "verdict/kernel_size" not in events.Tags()["scalars"]  # nothing learned: no evidence on the kernel


def test_state_dict_carries_what_the_verdicts_need(tmp_path: Path) -> None:
    monitor = TrainingDiagnostics(every_n_steps=10, early_steps=())
    fit_classifier(tmp_path, [monitor], max_steps=20)
    state = monitor.state_dict()
    restored = TrainingDiagnostics(every_n_steps=10, early_steps=())
    restored.load_state_dict(state)
    assert torch.equal(restored._initial, monitor._initial) and torch.equal(restored._reference, monitor._reference)
    assert restored._losses.progress() == monitor._losses.progress() is not None
