"""TrainingDiagnostics in a real Trainer: the numbers it logs, and that training does not notice it."""

from __future__ import annotations

import math
import re
from dataclasses import fields
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
from tensorboard.plugins.custom_scalar import layout_pb2
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_viz import ExplanationQualityMonitor, GradCAMMonitor, TrainingDiagnostics
from lightning_viz.callbacks.diagnostics import CUSTOM_SCALARS_LAYOUT
from lightning_viz.data import Shapes
from lightning_viz.diagnostics.verdicts import QualityThresholds, Thresholds, verdict_lines


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
    _assert_marked(events)
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
    # the panel at step 0, then a notice card where the pictures stop (step 10), and nothing at step 20
    assert [e.step for e in events.Images("gradcam/net.conv3/images_00-03")] == [0, 10]
    warnings = _texts(events, "quality/warnings")
    assert "not finite" not in warnings[0]
    assert warnings[10].startswith("Step 10: 1 warning;")
    assert "- ✗ step 10: the model's weights are not finite" in warnings[10]
    assert 20 not in warnings  # still diverged: said once


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


_MARKS = {-1.0: "✗", 1.0: "✗", 0.0: "✓"}  # and, where no verdict is logged, … (not enough evidence yet) or – (none)


def _assert_marked(events: Any) -> None:
    """Every verdict line starts with the mark of its severity, which agrees with the number logged at its step; no
    line says anything about an update ratio (the verdicts do not read it)."""
    scalars = events.Tags()["scalars"]
    for step, text in _texts(events, "diagnostics/verdicts").items():
        assert "update ratio" not in text, text
        for name in ("kernel_size", "stride", "learning_rate"):
            (line,) = [x for x in text.split("\n\n") if x.startswith(f"- **{name.replace('_', ' ')}**: ")]
            mark = line.split("**: ", 1)[1][0]
            values = (
                {e.step: e.value for e in events.Scalars(f"verdict/{name}")} if f"verdict/{name}" in scalars else {}
            )
            expected = _MARKS[values[step]] if step in values else "…" if "not enough evidence yet" in line else "–"
            assert mark == expected, line


# The lines a chart draws beside its numbers: threshold series, rule-of-thumb references, and the series some
# numbers are compared with (the kernel for the energy window, chance for the pointing game, insertion for deletion).
_DECISION_LINE = re.compile(
    r"(quality/)?threshold/|diagnostics/kernel_size/|quality/[^/]+/(pointing_game_chance|insertion_auc)$"
)
_REFERENCE = re.compile(r"reference/")


def _layout(events: Any) -> list[tuple[str, str, list[str]]]:
    """The Custom Scalars layout as the run wrote it: (group, chart title, tag regexes) per chart."""
    (event,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    return [(c.title, chart.title, list(chart.multiline.tag)) for c in layout.category for chart in c.chart]


_LATER = {"diagnostics/loss_rise", "diagnostics/loss_rise_share", "threshold/rise_now", "threshold/rise_floor"}
"""Tags a 20-step fit does not log yet (the loss's best is measured from step 100), for the chart that draws them."""


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")  # single-process loaders on purpose
def test_every_chart_draws_its_numbers_and_the_lines_that_decide_them(tmp_path: Path) -> None:
    """A short run on Shapes (masks: the pointing game) with both monitors that chart numbers. Every chart's regexes
    match logged tags as TensorBoard matches them (at the start of the tag); a chart whose number decides a verdict
    or a warning draws a line that decides it and says which side fails; any other says "no verdict" (or "no
    warning") and draws no threshold, at most a rule of thumb it names."""
    seed_everything(0)
    monitors = [
        TrainingDiagnostics(every_n_steps=10, early_steps=(5,), budget=None),
        ExplanationQualityMonitor(every_n_steps=10, early_steps=(), steps=2, budget=None),
    ]
    trainer = make_trainer(tmp_path, monitors, max_steps=20)
    trainer.fit(
        Classifier(AwkwardNet(num_classes=6)),
        DataLoader(Shapes(96, seed=0), batch_size=8, shuffle=True),
        DataLoader(Shapes(32, seed=1), batch_size=16),
    )
    events = read_events(trainer.logger.log_dir)
    scalars = set(events.Tags()["scalars"])
    charts = _layout(events)
    assert {group for group, _, _ in charts} == set(CUSTOM_SCALARS_LAYOUT)
    drawn: set[str] = set()
    for _, title, patterns in charts:
        tags = {tag for tag in scalars if any(re.match(pattern, tag) for pattern in patterns)}
        drawn |= tags
        if title.startswith("verdict:"):  # empty while it abstains (a 3x3 kernel gets none)
            assert title.endswith("(read at smoothing 0)"), title
            continue
        if "now over its best" in title:  # the loss's best needs 100 steps: its tags, as the monitor names them
            tags = {tag for tag in _LATER if any(re.match(pattern, tag) for pattern in patterns)}
        assert tags, title
        lines = {tag for tag in tags if _DECISION_LINE.match(tag)}
        references = {tag for tag in tags if _REFERENCE.match(tag)}
        assert tags - lines - references, title  # a number, not only lines
        if "(no verdict" in title or "(no warning" in title:
            assert not lines, title
            assert bool(references) == ("rule of thumb" in title), title
        else:
            assert lines and not references, title
            assert re.search(r"\([^)]*line[^)]*: [^)]+\)", title), title  # "(above the line: aliasing)"
    # every line logged is drawn (the linear thresholds beside their drawn log10 forms: for programs)
    logged_lines = {tag for tag in scalars if tag.startswith(("threshold/", "quality/threshold/", "reference/"))}
    assert logged_lines - drawn == {"threshold/min_learned", "threshold/change_low"}
    assert {"threshold/log10_min_learned", "threshold/log10_change_low"} <= drawn
    # each limit a verdict or a warning reads is drawn, as itself or as its log10 (loss_rise on the progress axis;
    # window_share is the energy window's own, low_after a step count)
    assert {f"quality/threshold/{f.name}" for f in fields(QualityThresholds)} <= drawn
    for name in {f.name for f in fields(Thresholds)} - {"window_share", "low_after", "loss_rise"}:
        assert {f"threshold/{name}", f"threshold/log10_{name}"} & drawn, name
    assert "threshold/risen_progress" in drawn
    # the log10 forms are the numbers' log10, and the rule of thumb is 1e-3
    for name in ("update_ratio/net.conv2", "change/net.conv3", "learned_share/net.conv1"):
        linear = {e.step: e.value for e in events.Scalars(f"diagnostics/{name}")}
        for e in events.Scalars(f"diagnostics/log10_{name}"):
            assert e.value == pytest.approx(math.log10(max(linear[e.step], 1e-6)), abs=1e-5), name
    assert {e.value for e in events.Scalars("reference/log10_update_ratio")} == {-3.0}
    assert events.Scalars("threshold/risen_progress")[0].value == pytest.approx(-Thresholds().loss_rise)


def test_a_second_instance_gets_charts_of_its_own(tmp_path: Path) -> None:
    """Two TrainingDiagnostics: the second's tags carry a suffix, and so do its groups and their regexes, so the
    layout keeps both and each chart draws one instance's numbers."""
    monitors = [
        TrainingDiagnostics(every_n_steps=5, early_steps=()),
        TrainingDiagnostics(every_n_steps=10, early_steps=()),
    ]
    _, trainer = fit_classifier(tmp_path, monitors, max_steps=10)
    events = read_events(trainer.logger.log_dir)
    scalars = set(events.Tags()["scalars"])
    suffix = monitors[1].tag_suffix
    assert suffix == "_every_n_steps-10" and f"threshold{suffix}/alias_fraction" in scalars
    charts = _layout(events)
    assert {group for group, _, _ in charts} == {
        *(f"{g}{s}" for g in ("kernel size", "stride", "learning rate") for s in ("", suffix))
    }
    for group, title, patterns in charts:
        tags = {tag for tag in scalars if any(re.match(pattern, tag) for pattern in patterns)}
        assert all((suffix in tag) == group.endswith(suffix) for tag in tags), (group, title, tags)
        assert tags or title.startswith("verdict"), (group, title)


class _Jumping(Classifier):
    """SGD whose rate a scheduler multiplies by 10,000 from step 120 on: the weights overflow within steps."""

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < 120 else 1e4)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _fit_jumping(tmp_path: Path, callbacks: list[Any]) -> Any:
    seed_everything(0)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    loader = DataLoader(TensorDataset(x.repeat(4, 1, 1, 1), y.repeat(4)), batch_size=8, shuffle=True)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))  # fmt: skip
    trainer = make_trainer(tmp_path, callbacks, max_steps=200, limit_val_batches=0)
    trainer.fit(_Jumping(net), loader, loader)
    return read_events(trainer.logger.log_dir)


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_the_learning_rate_is_checked_between_probes_and_a_jump_is_named_at_the_next_check(tmp_path: Path) -> None:
    """Probes at 0, 100 and 200; checks every 50 steps read the loss and the rate (no forward pass), so a rate
    that jumps at step 120 is named at step 150 with the rate it jumped to, and the rate is logged per group."""
    monitor = TrainingDiagnostics(every_n_steps=100, early_steps=(), check_every_n_steps=50, budget=None)
    events = _fit_jumping(tmp_path, [monitor])
    assert {e.step for e in events.Scalars("diagnostics/loss_progress")} == {50, 100, 150, 200}
    verdicts = {e.step: e.value for e in events.Scalars("verdict/learning_rate")}
    assert verdicts[150] == 1 and verdicts[200] == 1 and verdicts.get(100) != 1
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("diagnostics/verdicts/text_summary")}
    line = verdict_lines(texts[150])["learning_rate"]  # the rate went up 10,000 times: the units died, or NaN
    assert line.startswith("✗") and ("rate 500" in line or "(it was 500)" in line) and "try 50" in line, line
    rates = {e.step: e.value for e in events.Scalars("diagnostics/lr/pg0")}
    assert rates[100] == pytest.approx(0.05) and rates[150] == pytest.approx(500.0)
    assert {"diagnostics/loss_progress", "diagnostics/loss_rise"} <= set(events.Tags()["scalars"])
    assert {e.step for e in events.Scalars("diagnostics/band_low/net.0")} == {0, 100, 200}  # the probes' numbers only


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_rates_already_logged_by_lightning_are_not_logged_again(tmp_path: Path) -> None:
    from pytorch_lightning.callbacks import LearningRateMonitor

    monitor = TrainingDiagnostics(every_n_steps=100, early_steps=(), budget=None)
    events = _fit_jumping(tmp_path, [monitor, LearningRateMonitor(logging_interval="step")])
    scalars = set(events.Tags()["scalars"])
    assert "lr-SGD" in scalars and not any(tag.startswith("diagnostics/lr/") for tag in scalars)
    assert {e.step for e in events.Scalars("diagnostics/loss_progress")} == {50, 100, 150, 200}


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_training_is_bit_identical_with_the_learning_rate_checks(tmp_path: Path) -> None:
    """The checks between probes read the losses and the optimizer's rates every 5 steps: training is unchanged."""
    baseline = fit_classifier(tmp_path / "without", [])
    monitor = TrainingDiagnostics(every_n_steps=10, check_every_n_steps=5, budget=None)
    run = fit_classifier(tmp_path / "with", [monitor])
    assert_same_training(run, baseline)
    events = read_events(run[1].logger.log_dir)
    assert {e.step for e in events.Scalars("diagnostics/lr/pg0")} >= {5, 10, 15, 25}
