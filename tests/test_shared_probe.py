"""The monitors of one trainer probe together: one forward pass of the probe per step, one probe in the checkpoint,
tags of their own, a writer thread, a budget, and state that survives a resume."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import AwkwardNet, Classifier, fit_classifier, make_trainer, random_loader, read_events
from pytorch_lightning import Callback, Trainer, seed_everything
from pytorch_lightning.callbacks import ModelCheckpoint
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as python_masked_crc32c
from torch.overrides import TorchFunctionMode
from torch.utils.tensorboard import SummaryWriter

from lightning_viz import (
    DeconvNetMonitor,
    ExplanationQualityMonitor,
    FilterMonitor,
    GradCAMMonitor,
    ProbeBatch,
    TrainingDiagnostics,
)
from lightning_viz.callbacks._suite import same_probe
from lightning_viz.callbacks._writer import BackgroundWriter, Written, masked_crc32c


def _suite(**common: Any) -> list[Any]:
    """All five monitors, their expensive parts on a short cadence so that a short run exercises them."""
    return [
        GradCAMMonitor(**common),
        DeconvNetMonitor(**common),
        FilterMonitor(activation_max_every_n_steps=20, activation_max_steps=4, activation_max_channels=2, **common),
        TrainingDiagnostics(shift_every_n_steps=20, **common),
        ExplanationQualityMonitor(expensive_every_n_steps=20, steps=2, **common),
    ]


class CountForwards(Callback):
    """Records every eval-mode forward pass of the network (the probes; training runs in train mode) by step."""

    def __init__(self) -> None:
        self.inputs: dict[int, list[torch.Tensor]] = defaultdict(list)

    def on_fit_start(self, trainer: Trainer, pl_module: Any) -> None:
        own = pl_module.net.conv1.weight

        def record(module: torch.nn.Module, args: Any) -> None:
            # the quality monitor's re-initialised network runs the same modules with other tensors: left out
            if not module.training and module.conv1.weight is own:
                self.inputs[trainer.global_step].append(args[0].detach().clone())

        pl_module.net.register_forward_pre_hook(record)


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_one_forward_pass_of_the_probe_per_step_with_all_five_monitors(tmp_path: Path) -> None:
    counter = CountForwards()
    monitors = _suite(every_n_steps=10, early_steps=(5,), budget=None)
    fit_classifier(tmp_path, [*monitors, counter], max_steps=20, limit_val_batches=0)
    probe = monitors[0].probe
    assert all(m.probe is probe for m in monitors), "one probe batch for the five monitors"
    for step in (5, 10, 20):  # regular probe steps (20 also runs the expensive parts)
        inputs = counter.inputs[step]
        on_probe = [x for x in inputs if x.shape == probe.images.shape and torch.equal(x, probe.images)]
        assert len(on_probe) == 1, (step, len(on_probe), len(inputs))
    # a regular step: the shared pass, and one pass of unit images per layer for the projections DeconvNetMonitor
    # shows and TrainingDiagnostics measures, shared (receptive-field traces run on zeros and are left out)
    layers = len(monitors[1].layer_names)
    assert layers > 1
    for step in (5, 10):
        assert len([x for x in counter.inputs[step] if x.abs().sum() > 0]) == 1 + layers, step


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_the_last_step_on_the_cadence_is_one_probe_step_with_the_final_parts(tmp_path: Path) -> None:
    """Step 20 is both a regular probe step and the fit's last: the final probe's parts (here activation
    maximisation, whose own cadence never falls) run in the same probe step, on the same forward pass, and the step's
    scalars are logged once."""
    counter = CountForwards()
    monitor = FilterMonitor(every_n_steps=10, activation_max_every_n_steps=1000, activation_max_steps=2,
                            activation_max_channels=1, budget=None)  # fmt: skip
    _, trainer = fit_classifier(tmp_path, [monitor, counter], max_steps=20, limit_val_batches=0)
    probe = monitor.probe
    on_probe = [x for x in counter.inputs[20] if x.shape == probe.images.shape and torch.equal(x, probe.images)]
    assert len(on_probe) == 1
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Images("responses/net.conv3/activation_max")] == [20]
    assert [e.step for e in events.Scalars("viz/overhead_ms/probe_step")] == [0, 10, 20]


def _scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """The monitors' scalars (not their timings, ``viz/*``, nor Lightning's own ``train_loss``, ``epoch``)."""
    events = read_events(logdir)
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if "/" in tag and not tag.startswith("viz/")
    }


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")  # the resumed run's
def test_fit_40_steps_equals_fit_20_and_resume_20(tmp_path: Path) -> None:
    def fit(name: str, epochs: int, ckpt_path: str | None = None) -> str:
        seed_everything(0)
        monitors = _suite(every_n_steps=10, early_steps=(5,), budget=None)
        checkpoint = ModelCheckpoint(dirpath=tmp_path / f"ckpt_{name == 'whole'}", save_last=True)
        trainer = make_trainer(tmp_path / name, [*monitors, checkpoint], max_steps=-1, max_epochs=epochs,
                               enable_checkpointing=True, val_check_interval=None)  # fmt: skip
        net = AwkwardNet()
        net.drop = torch.nn.Identity()  # Lightning does not restore the generators: no dropout, so resuming is exact
        trainer.fit(
            Classifier(net),
            random_loader(n=160, shuffle=False),  # 20 steps an epoch; a resume at an epoch's end is exact
            random_loader(n=32, seed=1, shuffle=False),
            ckpt_path=ckpt_path,
        )
        assert trainer.logger is not None and trainer.logger.log_dir is not None
        return trainer.logger.log_dir

    whole = _scalars(fit("whole", 2))
    first = _scalars(fit("first", 1))
    second = _scalars(fit("second", 2, ckpt_path=str(tmp_path / "ckpt_False" / "last.ckpt")))
    assert set(whole) == set(first) | set(second)
    for tag, series in whole.items():
        resumed = [e for e in first.get(tag, []) if e[0] <= 20] + [e for e in second.get(tag, []) if e[0] > 20]
        assert resumed == series, tag
    monitored = {tag.split("/")[0] for tag in whole}
    assert {"gradcam", "diagnostics", "quality", "verdict"} <= monitored  # DeconvNet: diagnostics/deconv_stability
    assert any(tag.startswith("diagnostics/deconv_stability/") for tag in whole)


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_the_checkpoint_holds_one_copy_of_the_probe(tmp_path: Path) -> None:
    monitors = _suite(every_n_steps=5, budget=None)
    _, trainer = fit_classifier(tmp_path, monitors, max_steps=6)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    states = torch.load(tmp_path / "run.ckpt", weights_only=False)["callbacks"]
    storages = {state["probe"]["images"].untyped_storage().data_ptr() for state in states.values()}
    assert len(states) == 5 and len(storages) == 1


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_tags_are_unique_per_monitor_instance_and_the_layout_is_written_once(tmp_path: Path) -> None:
    monitors = [
        DeconvNetMonitor(every_n_steps=5, budget=None),
        DeconvNetMonitor(rule="guided", every_n_steps=5, budget=None),
        GradCAMMonitor(layers="net.conv3", every_n_steps=5, budget=None),
        GradCAMMonitor(layers="net.conv2", every_n_steps=5, budget=None),
        TrainingDiagnostics(every_n_steps=5, budget=None),
        ExplanationQualityMonitor(every_n_steps=5, budget=None),
    ]
    _, trainer = fit_classifier(tmp_path, monitors, max_steps=10)
    events = read_events(trainer.logger.log_dir)
    images, scalars = set(events.Tags()["images"]), set(events.Tags()["scalars"])
    assert {
        "deconvnet/net.conv3",
        "deconvnet_rule-guided/net.conv3",
        "gradcam/net.conv3/images_00-03",
        "gradcam_2/net.conv2/images_00-03",
    } <= images
    assert {"viz/overhead_ms/DeconvNetMonitor", "viz/overhead_ms/DeconvNetMonitor_rule-guided"} <= scalars
    assert {"gradcam/probe_accuracy", "gradcam_2/probe_accuracy"} <= scalars
    for tag in [tag for tag in images | scalars if "/" in tag]:  # ours (Lightning logs epoch at each validation)
        series = events.Images(tag) if tag in images else events.Scalars(tag)
        steps = [e.step for e in series]
        assert len(steps) == len(set(steps)), tag
    assert len(events.Tensors("custom_scalars__config__")) == 1


class _BrokenPanel(GradCAMMonitor):
    """A panel whose drawing fails on the writer thread."""

    def _panel(self, *args: Any) -> Any:
        def render() -> Any:
            raise RuntimeError("the renderer broke")

        return render


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_a_failure_on_the_writer_thread_warns_once_and_training_continues(tmp_path: Path) -> None:
    with pytest.warns(
        UserWarning, match=r"writing to TensorBoard.* failed \(RuntimeError: the renderer broke\)"
    ) as seen:
        _, trainer = fit_classifier(tmp_path, [_BrokenPanel(every_n_steps=2, early_steps=(), budget=None)], max_steps=8)
    assert trainer.global_step == 8
    assert sum("the renderer broke" in str(w.message) for w in seen) == 1
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Scalars("gradcam/probe_accuracy")] == [0, 2, 4, 6, 8]  # the rest was written


class _RecordTorchCalls(TorchFunctionMode):
    """Records every torch function and tensor method called on the thread that entered it."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls.append(getattr(func, "__qualname__", repr(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_the_writer_thread_runs_no_torch_operation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch operation on a second thread starts a second OpenMP thread team, which slowed every later training
    step by 10-20 % on two cores: the panels are drawn from numpy arrays."""
    calls: list[str] = []
    write = BackgroundWriter._write

    def recorded(self: BackgroundWriter, item: Any) -> None:
        with _RecordTorchCalls(calls):
            write(self, item)

    monkeypatch.setattr(BackgroundWriter, "_write", recorded)
    _, trainer = fit_classifier(tmp_path, _suite(every_n_steps=10, early_steps=(5,), budget=None), max_steps=20)
    images = read_events(trainer.logger.log_dir).Tags()["images"]
    assert {t.split("/")[0] for t in images} >= {"gradcam", "deconvnet", "filters", "responses"}
    assert any(t.endswith("/activation_max") for t in images)
    assert calls == []


def test_a_held_writer_waits_for_the_probe_and_a_full_queue_releases_it(tmp_path: Path) -> None:
    """While the training thread probes the writer starts nothing; a probe that fills the queue opens it rather
    than waiting on a worker that waits on the probe."""
    summary = SummaryWriter(str(tmp_path))
    writer = BackgroundWriter(summary, max_queue=2)
    try:
        with writer.held():
            writer.submit(Written(1, scalars={"a": 1.0}))
            time.sleep(0.2)
            assert writer.seconds == 0.0, "the worker wrote while held"
            for step in range(2, 7):  # more than the queue holds: no deadlock
                writer.submit(Written(step, scalars={"a": float(step)}))
        writer.drain()
        assert writer.waits > 0
    finally:
        writer.close()
        summary.close()
    assert [e.step for e in read_events(str(tmp_path)).Scalars("a")] == [1, 2, 3, 4, 5, 6]


def test_the_native_crc32c_is_tensorboards_checksum() -> None:
    rng = random.Random(0)
    for size in (0, 1, 7, 8, 1000, 65_537):
        data = bytes(rng.getrandbits(8) for _ in range(size))
        assert masked_crc32c(data) == python_masked_crc32c(data), size


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_a_small_budget_spaces_the_probes_after_the_warm_up_and_logs_what_it_skipped(tmp_path: Path) -> None:
    monitor = GradCAMMonitor(every_n_steps=10, early_steps=(5,), budget=1e-6)
    _, trainer = fit_classifier(tmp_path, [monitor], max_steps=120, limit_val_batches=0)
    events = read_events(trainer.logger.log_dir)
    steps = [e.step for e in events.Scalars("gradcam/probe_accuracy")]
    # no spacing during the warm-up (the first 50 steps); then nothing fits until the final probe
    assert steps == [0, 5, 10, 20, 30, 40, 120]
    skipped = events.Scalars("viz/budget/skipped")
    assert skipped[-1].step == 120 and skipped[-1].value == 7  # steps 50 to 110
    share = events.Scalars("viz/budget/share")[-1]
    assert share.step == 120 and share.value > 1e-6  # step 0 and the final probe always run: the overspend is shown
    (text,) = [e for e in events.Tensors("viz/budget/text_summary") if e.step == 120]
    assert "Over budget" in text.tensor_proto.string_val[0].decode()


def test_the_probe_batch_is_shared_by_equal_content_after_a_resume() -> None:
    images = torch.rand(4, 3, 8, 8)
    a = ProbeBatch(images, torch.arange(4))
    b = ProbeBatch.from_state_dict(a.state_dict())
    assert same_probe(a, b) and not same_probe(a, ProbeBatch(images + 1, torch.arange(4)))


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
@pytest.mark.parametrize("budget", [1e-6, None])
def test_the_final_probe_runs_an_expensive_part_only_where_the_budget_has_room(tmp_path: Path, budget: Any) -> None:
    """After the warm-up (50 steps) nothing fits a budget of 1e-6: the part that ran at 20 and 40 is skipped at 60,
    the final probe included; without a budget it runs there."""
    monitor = FilterMonitor(every_n_steps=10, activation_max_every_n_steps=20, activation_max_steps=2,
                            activation_max_channels=1, budget=budget)  # fmt: skip
    _, trainer = fit_classifier(tmp_path, [monitor], max_steps=60, limit_val_batches=0)
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Images("filters/net.conv1/own_scale")][-1] == 60  # the final probe's regular part
    shown = [e.step for e in events.Images("responses/net.conv3/activation_max")]
    assert shown == ([20, 40] if budget else [20, 40, 60])


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_an_expensive_part_the_fit_cannot_afford_is_not_run_and_the_text_says_so(tmp_path: Path) -> None:
    """No part runs beyond the budget, not even at the final probe: the budget's text names the part that never ran,
    with its cost and the fix."""
    monitor = FilterMonitor(every_n_steps=10, activation_max_every_n_steps=100, activation_max_steps=2,
                            activation_max_channels=1, budget=1e-6)  # fmt: skip
    _, trainer = fit_classifier(tmp_path, [monitor], max_steps=60, limit_val_batches=0)
    events = read_events(trainer.logger.log_dir)
    assert "responses/net.conv3/activation_max" not in events.Tags()["images"]
    (text,) = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("viz/budget/text_summary")]
    assert "FilterMonitor/activation_max never ran" in text and "Raise budget=" in text
    assert "probe_now(trainer, pl_module, parts=True)" in text


class _ProbeNowWithParts(Callback):
    def __init__(self, monitor: Any, step: int) -> None:
        self.monitor, self.step = monitor, step

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            self.monitor.probe_now(trainer, pl_module, parts=True)


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_probe_now_with_parts_runs_the_expensive_parts_on_demand(tmp_path: Path) -> None:
    monitor = FilterMonitor(every_n_steps=100, activation_max_every_n_steps=1000, activation_max_steps=2,
                            activation_max_channels=1)  # fmt: skip
    _, trainer = fit_classifier(tmp_path, [monitor, _ProbeNowWithParts(monitor, 7)], max_steps=12,
                                limit_val_batches=0)  # fmt: skip
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Images("responses/net.conv3/activation_max")] == [7, 12]


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_early_probes_are_the_learning_rates(tmp_path: Path) -> None:
    """An early probe (not step 0, the cadence or the final one) leaves out what only the regular probes need:
    FilterMonitor its feature maps, TrainingDiagnostics its lattice peaks (and alias fractions while the filters have
    learned too little for the stride verdict); the final probe at an early step is whole."""
    filters = FilterMonitor(every_n_steps=10, early_steps=(3, 6), activation_max_channels=0, budget=None)
    diagnostics = TrainingDiagnostics(every_n_steps=10, early_steps=(3, 6), budget=None)
    _, trainer = fit_classifier(tmp_path, [filters, diagnostics], max_steps=6, limit_val_batches=0)
    assert trainer.logger is not None and trainer.logger.log_dir is not None
    events = read_events(trainer.logger.log_dir)
    tags = events.Tags()
    maps = [t for t in tags["images"] if t.startswith("responses/") and t.endswith("/image_0")]
    assert maps
    for tag in maps:  # step 0 and the final probe (6), not the early probe at 3
        assert [e.step for e in events.Images(tag)] == [0, 6], tag
    (change,) = [t for t in tags["images"] if t.startswith("filters/") and t.endswith("/change")]
    assert [e.step for e in events.Images(change)] == [0, 3, 6]  # the filters at every probe
    lattice = [t for t in tags["scalars"] if t.startswith("diagnostics/lattice_peak_ratio/")]
    assert lattice and all([e.step for e in events.Scalars(t)] == [0, 6] for t in lattice)
    verdicts = [e.step for e in events.Tensors("diagnostics/verdicts/text_summary")]
    assert verdicts == [0, 3, 6]  # the learning-rate verdict at every probe
