"""GradCAMMonitor inside a real Trainer: what it logs, when, and that training does not notice it."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import (
    AwkwardNet,
    Classifier,
    assert_same_training,
    decode_image,
    fit_classifier,
    make_trainer,
    random_loader,
    read_events,
)
from pytorch_lightning import Callback, Trainer, seed_everything
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_viz import GradCAMMonitor


def test_training_is_bit_identical_with_monitor(tmp_path: Path) -> None:
    baseline = fit_classifier(tmp_path / "without", [])
    monitor = GradCAMMonitor(every_n_steps=5)
    with_monitor = fit_classifier(tmp_path / "with", [monitor])
    assert_same_training(with_monitor, baseline)
    assert monitor.layer_names == ["net.conv3"]
    steps = [e.step for e in read_events(with_monitor[1].logger.log_dir).Images("gradcam/net.conv3/images_00-03")]
    assert steps == [0, 5, 10, 15, 20, 25, 30]  # early steps 5, 10, 25 coincide with the cadence


class _LeakyProbe(Callback):
    """A careless visualization: a forward pass in train mode (BatchNorm stats move, Dropout draws)."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, *args: Any) -> None:
        if trainer.global_step % 5 == 0:
            with torch.no_grad():
                pl_module(torch.randn(2, 3, 16, 16))


def test_bit_identity_check_catches_a_leaky_probe(tmp_path: Path) -> None:
    """Negative control: the comparison above does fail for a visualization with side effects."""
    baseline = fit_classifier(tmp_path / "without", [])
    leaky = fit_classifier(tmp_path / "leaky", [_LeakyProbe()])
    with pytest.raises(AssertionError):
        assert_same_training(leaky, baseline)


def test_images_are_logged_flushed_and_not_blank(tmp_path: Path) -> None:
    seen: list[tuple[int, list[int]]] = []

    class LiveReader(Callback):  # the step is on disk within moments, long before SummaryWriter's 120 s flush
        def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
            if trainer.global_step in (4, 8):
                deadline, steps = time.monotonic() + 20, []
                while time.monotonic() < deadline and trainer.global_step not in steps:
                    time.sleep(0.05)
                    events = read_events(trainer.logger.log_dir)
                    steps = (
                        [e.step for e in events.Images("gradcam/net.conv3/images_00-03")]
                        if events.Tags()["images"]
                        else []
                    )
                seen.append((trainer.global_step, steps))

    monitor = GradCAMMonitor(every_n_steps=4, early_steps=())
    _, trainer = fit_classifier(tmp_path, [monitor, LiveReader()], max_steps=9)
    assert seen == [(4, [0, 4]), (8, [0, 4, 8])]
    events = read_events(trainer.logger.log_dir)
    assert {"viz/overhead_ms/GradCAMMonitor", "gradcam/probe_accuracy"} <= set(events.Tags()["scalars"])
    for event in events.Images("gradcam/net.conv3/images_00-03"):
        pixels = decode_image(event)
        assert pixels.shape[1] > 3 * 16 * 4 and pixels.std() > 20, "a blank or flat panel"


def test_cadence_counts_optimizer_steps_under_accumulation(tmp_path: Path) -> None:
    monitor = GradCAMMonitor(every_n_steps=3, early_steps=(1,))
    _, trainer = fit_classifier(tmp_path, [monitor], max_steps=7, accumulate_grad_batches=2)
    steps = [e.step for e in read_events(trainer.logger.log_dir).Images("gradcam/net.conv3/images_00-03")]
    assert steps == [0, 1, 3, 6, 7]  # and the final probe


def test_epoch_cadence(tmp_path: Path) -> None:
    monitor = GradCAMMonitor(every_n_steps=None, every_n_epochs=2, early_steps=())
    _, trainer = fit_classifier(tmp_path, [monitor], max_steps=-1, max_epochs=4, val_check_interval=None)
    steps = [e.step for e in read_events(trainer.logger.log_dir).Images("gradcam/net.conv3/images_00-03")]
    assert steps == [0, 24, 48]  # 12 batches per epoch; probes after epochs 2 and 4


class ProbeAtValidationEnd(Callback):
    """Calls the monitor from a validation hook and records the autograd mode it found there."""

    def __init__(self, monitor: GradCAMMonitor) -> None:
        self.monitor = monitor
        self.modes: list[tuple[bool, bool]] = []
        self.steps: list[int] = []

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        self.modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        self.steps.append(trainer.global_step)
        self.monitor.probe_now(trainer, pl_module)


def test_probe_from_validation_hooks(tmp_path: Path) -> None:
    monitor = GradCAMMonitor(every_n_steps=None, early_steps=())
    hook = ProbeAtValidationEnd(monitor)
    baseline = fit_classifier(tmp_path / "without", [])
    run = fit_classifier(tmp_path / "with", [monitor, hook])
    assert hook.modes and set(hook.modes) == {(False, False)}, "validation during fit runs under no_grad"
    steps = [e.step for e in read_events(run[1].logger.log_dir).Images("gradcam/net.conv3/images_00-03")]
    assert hook.steps[0] == 0 and len(hook.steps) >= 3  # the sanity check at step 0, then validations
    # the sanity check probes nothing; step 0 is the train-start probe, and a final probe ends the fit
    assert steps == sorted({*hook.steps, run[1].global_step})
    assert_same_training(run, baseline)

    # trainer.validate runs its hooks under torch.inference_mode
    again = GradCAMMonitor(probe=monitor.probe, layers="net.conv3")
    hook = ProbeAtValidationEnd(again)
    trainer = make_trainer(tmp_path / "validate", [again, hook])
    with pytest.warns(UserWarning, match=r"GradCAMMonitor probe during fit only: trainer.validate logs nothing"):
        trainer.validate(run[0], random_loader(n=32, seed=1, shuffle=False), verbose=False)
    assert hook.modes == [(True, False)]
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Images("gradcam/net.conv3/images_00-03")] == [0]
    assert decode_image(events.Images("gradcam/net.conv3/images_00-03")[0]).std() > 20


def test_failing_probe_warns_once_and_training_continues(tmp_path: Path) -> None:
    monitor = GradCAMMonitor(layers="net.fc", every_n_steps=2)  # a linear layer: no feature map to explain
    with pytest.warns(UserWarning, match=r"probe at step 0 failed .*4-D") as record:
        _, trainer = fit_classifier(tmp_path, [monitor], max_steps=6)
    assert sum("GradCAMMonitor probe" in str(w.message) for w in record) == 1
    assert trainer.global_step == 6


def test_on_error_raise_stops_training(tmp_path: Path) -> None:
    monitor = GradCAMMonitor(layers="net.fc", on_error="raise")
    with pytest.raises(ValueError, match="4-D"):
        fit_classifier(tmp_path, [monitor], max_steps=6)


def test_fast_dev_run_probes_without_logging(tmp_path: Path) -> None:
    monitor = GradCAMMonitor()
    _, trainer = fit_classifier(tmp_path, [monitor], fast_dev_run=True)
    assert trainer.global_step == 1 and monitor.layer_names == ["net.conv3"]
    assert monitor.state_dict()["last_step"] == 1  # step 0 and the final probe


# Resuming writes the new checkpoints where the old ones are, as ModelCheckpoint wants for its own state; the
# order of the resumed batches does not matter to what this test checks.
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_state_dict_round_trip_and_resume_keeps_the_probe(tmp_path: Path) -> None:
    monitor = GradCAMMonitor(every_n_steps=5)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit_classifier(tmp_path / "first", [monitor, checkpoint], max_steps=12, enable_checkpointing=True)  # one epoch
    state = copy.deepcopy(monitor.state_dict())
    assert monitor.probe is not None and state["probe"]["indices"] == monitor.probe.indices

    restored = GradCAMMonitor(every_n_steps=5)
    restored.load_state_dict(state)
    assert restored.probe is not None and torch.equal(restored.probe.images, monitor.probe.images)

    resumed = GradCAMMonitor(every_n_steps=5)
    seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(tmp_path / "second", [resumed, checkpoint], max_steps=15, enable_checkpointing=True)
    trainer.fit(
        Classifier(AwkwardNet()),
        random_loader(n=96),
        random_loader(n=32, seed=2, shuffle=False),  # other validation images: a new draw would differ
        ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
    )
    assert resumed.probe is not None and torch.equal(resumed.probe.images, monitor.probe.images)
    steps = [e.step for e in read_events(trainer.logger.log_dir).Images("gradcam/net.conv3/images_00-03")]
    assert steps == [15]  # no repeat of step 10, no step-0 probe on resume


def test_two_instances_have_distinct_state_keys() -> None:
    a, b = GradCAMMonitor(layers="net.conv2"), GradCAMMonitor(layers="net.conv3")
    assert a.state_key != b.state_key


class NormalisesInPlace(AwkwardNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.mul_(0.5))  # careless, but legal: it scales the batch it was given


def test_probe_images_survive_a_forward_that_modifies_its_input(tmp_path: Path) -> None:
    from lightning_viz import DeconvNetMonitor

    images = torch.randn(4, 3, 16, 16)
    monitors = [GradCAMMonitor(probe=images.clone(), every_n_steps=1), DeconvNetMonitor(probe=images.clone())]
    seed_everything(0)
    trainer = make_trainer(tmp_path, monitors, max_steps=3)
    trainer.fit(Classifier(NormalisesInPlace()), random_loader(n=96), random_loader(n=32, seed=1, shuffle=False))
    for monitor in monitors:
        assert monitor.probe is not None and torch.equal(monitor.probe.images, images)


def test_probe_comes_from_the_validation_loader_without_sanity_check(tmp_path: Path) -> None:
    monitor = GradCAMMonitor()
    fit_classifier(tmp_path, [monitor], max_steps=1, num_sanity_val_steps=0)
    assert monitor.probe is not None and len(monitor.probe) == 16
    validation = random_loader(n=32, seed=1, shuffle=False).dataset.tensors[0]  # type: ignore[attr-defined]
    assert all(any(torch.equal(p, v) for v in validation) for p in monitor.probe.images)
