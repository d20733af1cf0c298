"""TrainingDiagnostics in a real Trainer: the numbers it logs, and that training does not notice it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_same_training, fit_classifier, read_events

from lightning_viz import TrainingDiagnostics
from lightning_viz.callbacks.diagnostics import CUSTOM_SCALARS_LAYOUT


def test_training_is_bit_identical_and_the_metrics_are_logged(tmp_path: Path) -> None:
    baseline = fit_classifier(tmp_path / "without", [])
    monitor = TrainingDiagnostics(every_n_steps=10, early_steps=(1, 5))
    run = fit_classifier(tmp_path / "with", [monitor])
    assert_same_training(run, baseline)
    events = read_events(run[1].logger.log_dir)
    scalars = set(events.Tags()["scalars"])
    for metric in ("band_low", "band_mid", "band_high", "dominant_high", "smoothness", "dead_filters", "dominance",
                   "rms_growth", "uneven_overlap", "lattice_peak_ratio"):  # fmt: skip
        assert f"diagnostics/{metric}/net.conv1" in scalars, metric
    assert [e.step for e in events.Scalars("diagnostics/shift_tvd/model")] == [0, 1, 5, 10, 20, 30]
    # the update ratio needs the weights before the step that leads to a probe: not at step 0
    ratios = events.Scalars("diagnostics/update_ratio/net.conv2")
    assert [e.step for e in ratios] == [1, 5, 10, 20, 30] and all(0 < e.value < 1 for e in ratios)
    assert [e.step for e in events.Scalars("diagnostics/cka_previous/net.conv3")] == [1, 5, 10, 20, 30]
    assert events.Scalars("diagnostics/uneven_overlap/net.conv1")[0].value == 1.0  # 3x3 stride 1
    assert "custom_scalars__config__" in events.Tags()["tensors"]  # the Custom Scalars tab's layout
    assert "diagnostics/verdicts/text_summary" in events.Tags()["tensors"]  # how text summaries are stored
    assert [e.value for e in events.Scalars("verdict/stride")] == [0.0] * 6  # 3x3 stride 1 cannot alias
    assert {e.value for e in events.Scalars("verdict/learning_rate")} <= {-1.0, 0.0, 1.0}
    bands = [events.Scalars(f"diagnostics/band_{b}/net.conv1")[-1].value for b in ("low", "mid", "high")]
    assert sum(bands) == pytest.approx(1.0, abs=1e-6)


def test_the_update_ratio_is_measured_around_the_real_step(tmp_path: Path) -> None:
    """With lr=0 nothing moves: every ratio is exactly 0 (the copy was taken before a step that changed nothing)."""
    from conftest import AwkwardNet, Classifier, make_trainer, random_loader

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
