"""The advice check of TrainingDiagnostics: which advice is tried, how the blur is judged, and in a real Trainer
that the check runs, is logged and read back, and leaves training bit for bit as it was."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import Classifier, assert_same_training, make_trainer, random_loader, read_events
from pytorch_lightning import Callback, seed_everything
from torch import nn

from lightning_viz import TrainingDiagnostics
from lightning_viz.callbacks import _advice
from lightning_viz.callbacks._advice import AdviceCheck, judge_trial, trials_for, with_tried
from lightning_viz.diagnostics.counterfactual import Judgement, Result, Scores
from lightning_viz.diagnostics.verdicts import (
    KernelEvidence,
    LearningRateEvidence,
    Thresholds,
    Verdict,
    kernel_size_verdict,
    learning_rate_verdict,
    verdict_lines,
)

# -- which advice a check tries --------------------------------------------------------------------------------------


def test_each_failing_verdict_with_a_testable_advice_gets_a_trial() -> None:
    verdicts = [
        Verdict("kernel_size", -1, "✗ too small", suggestion=3),
        Verdict("stride", 1, "✗ aliasing"),
        Verdict("learning_rate", 1, "✗ too high", suggestion=0.002),
    ]
    trials = trials_for(verdicts, "conv1", rate=0.02)
    assert [(t.verdict, t.value, t.name, t.on_shifts) for t in trials] == [
        ("kernel_size", -1, "kernel 3", False),
        ("stride", 1, "a blurred conv1", True),
        ("learning_rate", 1, "rate 0.002", False),
    ]


def test_ok_abstaining_and_untestable_verdicts_get_none() -> None:
    verdicts = [
        Verdict("kernel_size", 1, "✗ larger than it uses: try kernel 5", suggestion=None),  # saves compute only
        Verdict("stride", 0, "✓ ok"),
        Verdict("learning_rate", None, "… not enough evidence yet"),
    ]
    assert trials_for(verdicts, "conv1", rate=0.02) == []
    unknown = learning_rate_verdict(LearningRateEvidence(step=40, nonfinite="the training loss"), Thresholds())
    assert unknown.value == 1 and trials_for([unknown], "conv1", rate=0.02) == []  # no rate seen: none to name
    assert trials_for([Verdict("learning_rate", 1, "✗ too high", suggestion=0.002)], "conv1", rate=None) == []


def test_the_verdicts_name_what_they_suggest() -> None:
    diverged = learning_rate_verdict(LearningRateEvidence(step=40, nonfinite="the loss", rate=0.2), Thresholds())
    assert diverged.suggestion == pytest.approx(0.02) and "try 0.02 (it was 0.2)" in diverged.text
    small = kernel_size_verdict(KernelEvidence("conv1", 1, 2), Thresholds())
    assert small.value == -1 and small.suggestion == 3 and "try kernel 3" in small.text
    odd = kernel_size_verdict(KernelEvidence("conv1", 2, 3), Thresholds())
    assert odd.suggestion == 3 and "try kernel 3" in odd.text
    stuck = learning_rate_verdict(
        LearningRateEvidence(step=400, loss_progress=0.0, change=0.001, rate=1e-5), Thresholds()
    )
    assert stuck.value == -1 and stuck.suggestion == pytest.approx(1e-4) and "try 0.0001" in stuck.text
    risen = learning_rate_verdict(
        LearningRateEvidence(
            step=400,
            loss_progress=0.5,
            rate=0.2,
            now=2.0,
            best=0.5,
            start=2.2,
            best_step=100,
            rise_began=300,
            rate_before_rise=0.02,
        ),
        Thresholds(),
    )
    assert risen.value == 1 and risen.suggestion == pytest.approx(0.02) and "try 0.02" in risen.text


def test_a_tried_line_is_appended_only_to_the_verdict_value_it_tried() -> None:
    judgement = Judgement("confirmed", -0.3, 0.02, "confirmed: kernel 3 had 30% lower held-out loss")
    verdicts = [Verdict("kernel_size", -1, "✗ too small: try kernel 3"), Verdict("learning_rate", 0, "✓ ok")]
    shown = with_tried(verdicts, {"kernel_size": (-1, judgement), "learning_rate": (1, judgement)})
    assert shown[0].text == "✗ too small: try kernel 3 — tried: confirmed: kernel 3 had 30% lower held-out loss"
    assert shown[1].text == "✓ ok"  # the learning rate was tried when it was too high: not this verdict's advice


# -- how the blur is judged ------------------------------------------------------------------------------------------


def _scores(loss: list[float], shifts: list[float]) -> Scores:
    return Scores(tuple(loss), tuple(shifts), (1.0,))


def _blur_result(loss: list[float], shifts: list[float]) -> Result:
    control = _scores([1.00, 1.02, 0.98, 1.00], [0.30, 0.31, 0.29, 0.30])
    second = _scores([1.01, 1.01, 0.99, 1.00], [0.30, 0.30, 0.30, 0.31])
    return Result(24, control, second, {"a blurred conv1": _scores(loss, shifts)})


def test_a_blur_steadier_at_a_lower_loss_is_confirmed() -> None:
    (trial,) = trials_for([Verdict("stride", 1, "✗ aliasing")], "conv1", None)
    judgement = judge_trial(_blur_result([0.8, 0.83, 0.77, 0.8], [0.20, 0.21, 0.19, 0.20]), trial)
    assert judgement.outcome == "confirmed" and judgement.difference == pytest.approx(-1 / 3, abs=0.01)
    assert "33% steadier under shifts" in judgement.text and "a lower held-out loss" in judgement.text


def test_a_blur_steadier_at_the_same_loss_is_inconclusive() -> None:
    """In the validation study such copies were no steadier than their controls 300 steps later."""
    (trial,) = trials_for([Verdict("stride", 1, "✗ aliasing")], "conv1", None)
    judgement = judge_trial(_blur_result([1.0, 1.03, 0.97, 1.0], [0.20, 0.21, 0.19, 0.20]), trial)
    assert judgement.outcome == "inconclusive" and "the same held-out loss" in judgement.text


def test_a_blur_steadier_at_a_worse_loss_is_inconclusive() -> None:
    (trial,) = trials_for([Verdict("stride", 1, "✗ aliasing")], "conv1", None)
    judgement = judge_trial(_blur_result([1.5, 1.52, 1.48, 1.5], [0.20, 0.21, 0.19, 0.20]), trial)
    assert judgement.outcome == "inconclusive" and "not adapted" in judgement.text


def test_a_blur_no_steadier_is_not_confirmed() -> None:
    (trial,) = trials_for([Verdict("stride", 1, "✗ aliasing")], "conv1", None)
    judgement = judge_trial(_blur_result([1.0, 1.02, 0.98, 1.0], [0.40, 0.41, 0.39, 0.40]), trial)
    assert judgement.outcome == "not confirmed"


# -- the buffer ------------------------------------------------------------------------------------------------------


def _batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, 8, 8), torch.arange(n) % 2


def test_small_batches_are_always_kept_and_large_ones_only_while_a_trial_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = AdviceCheck(steps=4, batches=2, held_out=2)
    check.update([Verdict("stride", 0, "✓ ok")], 10, "conv1", 0.1)
    check.keep(_batch())
    check.keep({"image": torch.randn(4, 3, 8, 8)})  # another form: not kept, and no trial is due to need it
    assert len(check.buffer) == 1 and not check.ready and check.unavailable is None
    monkeypatch.setattr(_advice, "KEEP_ALWAYS_BYTES", 1000)  # 4 batches of 3 KB: too many to keep always
    check.update([Verdict("stride", 0, "✓ ok")], 10, "conv1", 0.1)
    assert not check.buffer
    check.keep(_batch())
    assert not check.buffer
    check.update([Verdict("stride", 1, "✗ aliasing")], 20, "conv1", 0.1)
    for _ in range(5):
        check.keep(_batch())
    assert len(check.buffer) == 4 and check.ready
    check.update([Verdict("stride", 0, "✓ ok")], 30, "conv1", 0.1)
    assert not check.buffer and not check.ready  # the verdict passed before the check ran: nothing to try


def test_a_verdict_is_tried_again_once_the_run_is_twice_as_long() -> None:
    check = AdviceCheck(steps=4)
    check.checked["stride"] = (1, 300)
    aliasing = [Verdict("stride", 1, "✗ aliasing")]
    check.update(aliasing, 500, "conv1", 0.1)
    assert not check.due
    check.update(aliasing, 600, "conv1", 0.1)
    assert [t.verdict for t in check.due] == ["stride"]


def test_batches_of_another_form_make_the_check_unavailable() -> None:
    check = AdviceCheck(steps=4)
    check.update([Verdict("stride", 1, "✗ aliasing")], 20, "conv1", 0.1)
    check.keep({"image": torch.randn(4, 3, 8, 8)})
    assert check.unavailable is not None and "(images, labels, ...)" in check.unavailable and not check.due


# -- in a real Trainer -------------------------------------------------------------------------------------------------


class SparseNet(nn.Module):
    """A 1x1 first layer at stride 2 (the kernel verdict fails at step 0, from the shapes alone), with BatchNorm and
    Dropout, whose running statistics and random masks the copies must not touch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1, stride=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x)).mean(dim=(2, 3))
        return self.fc(self.drop(x))  # type: ignore[no-any-return]


def _fit(tmp_path: Path, callbacks: list[Any]) -> tuple[Classifier, Any]:
    seed_everything(0)
    model = Classifier(SparseNet())
    trainer = make_trainer(tmp_path, callbacks, max_steps=30)
    trainer.fit(model, random_loader(n=96), random_loader(n=32, seed=1, shuffle=False))
    return model, trainer


def _texts(events: Any, tag: str) -> dict[int, str]:
    return {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors(f"{tag}/text_summary")}


def test_the_check_runs_is_logged_and_leaves_training_unchanged(tmp_path: Path) -> None:
    baseline = _fit(tmp_path / "without", [])
    monitor = TrainingDiagnostics(every_n_steps=10, early_steps=(), budget=None, confirm_steps=6)
    run = _fit(tmp_path / "with", [monitor])
    assert_same_training(run, baseline)  # weights, BatchNorm statistics, gradients, momentum, losses
    events = read_events(run[1].logger.log_dir)
    # failing at step 0; 12 batches kept from step 1: the check runs at step 12 (no budget to wait for), and again
    # once the run is twice as long: after the final probe at 30
    outcomes = events.Scalars("confirmation/kernel_size")
    assert [e.step for e in outcomes] == [12, 30] and {e.value for e in outcomes} <= {-1.0, 0.0, 1.0}
    found = _texts(events, "diagnostics/confirmation")[12]
    assert "6 steps on 8 recent training batches, scored on the 4 latest" in found and "kernel 3" in found
    assert "at the fit's end" not in found
    noise = events.Scalars("confirmation/kernel_size_noise")[0].value
    assert math.isfinite(noise) and noise >= 0
    texts = _texts(events, "diagnostics/verdicts")
    assert "— tried:" not in verdict_lines(texts[10])["kernel_size"]
    line = verdict_lines(texts[20])["kernel_size"]
    assert line.startswith("✗ too small") and "— tried: " in line and "kernel 3" in line.split("— tried:")[1]


def test_a_fit_too_short_for_the_budget_tries_the_advice_at_its_end(tmp_path: Path) -> None:
    """The budget waits for the step time (50 steps): a 30-step fit runs the check before its final probe."""
    monitor = TrainingDiagnostics(every_n_steps=10, early_steps=(), confirm_steps=4, confirm_at_end=True)
    _, trainer = _fit(tmp_path, [monitor])
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Scalars("confirmation/kernel_size")] == [30]
    assert (
        "at the fit's end (the budget could not afford it during the fit)"
        in _texts(events, "diagnostics/confirmation")[30]
    )
    assert "— tried:" in verdict_lines(_texts(events, "diagnostics/verdicts")[30])["kernel_size"]
    budget = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("viz/budget/text_summary")]
    assert len(budget) == 1 and "advice checks" in budget[0]  # the check ran before the final probe, which counts it


def test_a_diverged_run_is_tried_from_the_latest_finite_probe(tmp_path: Path) -> None:
    seed_everything(0)
    model = Classifier(SparseNet(), lr=1e6)  # NaN within a few steps
    monitor = TrainingDiagnostics(every_n_steps=20, early_steps=(2, 4, 6, 8), budget=None, confirm_steps=4)
    trainer = make_trainer(tmp_path, [monitor], max_steps=30)
    trainer.fit(model, random_loader(n=96), random_loader(n=32, seed=1, shuffle=False))
    assert not all(bool(torch.isfinite(p).all()) for p in model.parameters())
    events = read_events(trainer.logger.log_dir)
    (outcome,) = events.Scalars("confirmation/learning_rate")
    found = _texts(events, "diagnostics/confirmation")[outcome.step]
    start = int(found.split("from the weights of step ")[1].split(" ")[0])
    assert start < outcome.step and "rate 100000" in found
    line = verdict_lines(_texts(events, "diagnostics/verdicts")[30])["learning_rate"]
    assert line.startswith("✗ diverged") and f"— tried: (from step {start}'s weights)" in line


def test_by_default_a_check_the_budget_never_affords_is_not_run(tmp_path: Path) -> None:
    _, trainer = _fit(tmp_path, [TrainingDiagnostics(every_n_steps=10, early_steps=(), confirm_steps=4)])
    events = read_events(trainer.logger.log_dir)
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("confirmation/")]


def test_confirm_now_tries_the_failing_advice_on_demand(tmp_path: Path) -> None:
    monitor = TrainingDiagnostics(every_n_steps=10, early_steps=(), confirm_steps=4)

    class AtStep20(Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            if trainer.global_step == 20:
                monitor.confirm_now(trainer, pl_module)

    _, trainer = _fit(tmp_path, [monitor, AtStep20()])
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Scalars("confirmation/kernel_size")] == [20]  # the budget affords none itself


def test_without_confirm_advice_nothing_is_tried(tmp_path: Path) -> None:
    monitor = TrainingDiagnostics(every_n_steps=10, early_steps=(), budget=None, confirm_advice=False)
    _, trainer = _fit(tmp_path, [monitor])
    events = read_events(trainer.logger.log_dir)
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("confirmation/")]
    assert "diagnostics/confirmation/text_summary" not in events.Tags()["tensors"]


def test_bad_options_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="confirm_steps"):
        TrainingDiagnostics(confirm_steps=0)
    with pytest.raises(TypeError, match="confirm_advice"):
        TrainingDiagnostics(confirm_advice="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="confirm_at_end"):
        TrainingDiagnostics(confirm_at_end=1)  # type: ignore[arg-type]
