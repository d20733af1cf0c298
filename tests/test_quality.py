"""Explanation quality: the metric functions' known answers, and ExplanationQualityMonitor in a real Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import (
    AwkwardNet,
    Classifier,
    assert_same_training,
    fit_classifier,
    make_trainer,
    random_loader,
    read_events,
    trained_shapes_net,
)
from pytorch_lightning import Callback, Trainer, seed_everything
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_viz import ExplanationQualityMonitor, ProbeBatch
from lightning_viz.data import Shapes
from lightning_viz.demos import ShapesNet
from lightning_viz.diagnostics import (
    blank_maps,
    class_sensitivity,
    deletion_insertion,
    map_stability,
    noisy_linear_imputation,
    randomization_similarity,
)
from lightning_viz.diagnostics.verdicts import QualityThresholds, quality_warnings
from lightning_viz.methods import default_cam_layer, grad_cam, isolated, parametrized_layers, reinitialized
from lightning_viz.probing import ProbeContext

# -- noisy linear imputation ----------------------------------------------------------------------------------------


def _ramp(n: int = 2, size: int = 32) -> torch.Tensor:
    """Linear ramps: harmonic, so the exact imputation of any hole reproduces them."""
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    return torch.stack([torch.stack([0.1 * xx, -0.05 * yy, 0.03 * (xx + yy)]) for _ in range(n)])


def test_imputation_keeps_known_pixels_and_continues_a_ramp_without_an_edge() -> None:
    images = _ramp()
    removed = torch.zeros(2, 32, 32, dtype=torch.bool)
    removed[0, 8:20, 10:24] = True
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    removed[1] = (yy - 16) ** 2 + (xx - 14) ** 2 < 64  # a disk
    exact = noisy_linear_imputation(images, removed, noise=0.0, iterations=400)
    assert torch.equal(exact[~removed[:, None].expand_as(images)], images[~removed[:, None].expand_as(images)])
    assert (exact - images).abs().max() < 1e-3  # nothing of the hole's outline is left
    fast = noisy_linear_imputation(images, removed, noise=0.0)  # the default: a few iterations per scale
    span = images.amax(dim=(2, 3)) - images.amin(dim=(2, 3))
    assert ((fast - images).abs().amax(dim=(2, 3)) / span).max() < 0.03


def test_neighbour_sum_is_roads_weighted_sum_of_the_eight_neighbours() -> None:
    """The in-place separable sum equals its definition: a 3x3 convolution (1/6 direct, 1/12 diagonal neighbours,
    0 the centre), zero beyond the border."""
    from lightning_viz.diagnostics.faithfulness import _neighbour_sum

    x = torch.randn(3, 2, 9, 7, generator=torch.Generator().manual_seed(0))
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 0.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64) / 12
    expected = F.conv2d(x.double().flatten(0, 1)[:, None], kernel[None, None], padding=1).view(x.shape)
    before = x.clone()
    assert torch.allclose(_neighbour_sum(x).double(), expected, atol=1e-6)
    assert torch.equal(x, before)  # in place only on its own buffers


def test_imputation_noise_is_seeded_scaled_and_leaves_the_global_generator_alone() -> None:
    images = torch.randn(2, 3, 16, 16)
    removed = torch.zeros(2, 16, 16, dtype=torch.bool)
    removed[:, 4:12, 4:12] = True
    state = torch.get_rng_state()
    a = noisy_linear_imputation(images, removed, 0.5, generator=torch.Generator().manual_seed(1))
    b = noisy_linear_imputation(images, removed, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    smooth = noisy_linear_imputation(images, removed, 0.0)
    jitter = (a - smooth)[:, :, 4:12, 4:12]
    expected = 0.5 * images.std(dim=(2, 3))
    assert torch.allclose(jitter.std(dim=(2, 3)), expected, rtol=0.3)
    everything = noisy_linear_imputation(images, torch.ones(2, 16, 16, dtype=torch.bool), 0.0)
    assert torch.allclose(everything, images.mean(dim=(2, 3), keepdim=True).expand_as(images))  # RISE's canvas


def test_imputation_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"removed be a bool mask \(N, H, W\)"):
        noisy_linear_imputation(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8))


# -- deletion and insertion ----------------------------------------------------------------------------------------


class _CornerModel(nn.Module):
    """Class 0 is the brightness of the top-left quadrant: a known answer for deletion and insertion."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 8 * x[:, :, :8, :8].mean(dim=(1, 2, 3))
        return torch.stack([score, -score], dim=1)


def test_deletion_and_insertion_on_a_model_with_a_known_answer() -> None:
    images = torch.zeros(3, 3, 16, 16)
    images[:, :, :8, :8] = 1.0
    right = torch.zeros(3, 16, 16)
    right[:, :8, :8] = 1.0
    targets = torch.zeros(3, dtype=torch.long)
    good = deletion_insertion(_CornerModel(), images, right, targets, steps=4, noise=0.0)
    wrong = deletion_insertion(_CornerModel(), images, 1 - right, targets, steps=4, noise=0.0)
    assert (good.deletion < wrong.deletion).all() and (good.insertion > wrong.insertion).all()
    assert good.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert torch.equal(good.deletion_curve[0], good.insertion_curve[-1])  # both: the unchanged image
    assert torch.equal(good.deletion_curve[-1], good.insertion_curve[0])  # both: every pixel removed
    assert good.deletion_curve[1].max() < good.deletion_curve[0].min()  # the quadrant is gone after one step
    manual = torch.trapezoid(good.deletion_curve, good.fractions, dim=0)
    assert torch.equal(manual, good.deletion)
    state = torch.get_rng_state()
    again = deletion_insertion(_CornerModel(), images, right, targets, steps=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(again.deletion, deletion_insertion(_CornerModel(), images, right, targets, steps=4).deletion)


def test_deletion_insertion_rejects_bad_arguments() -> None:
    images, maps, targets = torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"maps must have shape \(2, 8, 8\)"):
        deletion_insertion(_CornerModel(), images, torch.zeros(2, 4, 4), targets)
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        deletion_insertion(_CornerModel(), images, maps, targets, steps=0)


# -- re-initialised layers -----------------------------------------------------------------------------------------


def test_reinitialized_swaps_in_fresh_layers_without_touching_the_model(awkward_net: AwkwardNet) -> None:
    model = awkward_net.eval()
    images = torch.randn(4, 3, 16, 16)
    assert parametrized_layers(model, images) == ["conv1", "bn1", "conv2", "conv3", "fc"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pointers = [p.data_ptr() for p in model.parameters()]
    rng = torch.get_rng_state()
    with torch.no_grad():
        reference = model(images)
        assert torch.equal(reinitialized(model, [])(images), reference)
        head = reinitialized(model, ["fc"], seed=3)
        assert not torch.allclose(head(images), reference)
        assert torch.equal(head(images), reinitialized(model, ["fc"], seed=3)(images))  # seeded
        everything = reinitialized(model, parametrized_layers(model, images))
        assert not torch.allclose(everything(images), reference)
        assert torch.equal(model(images), reference)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [p.data_ptr() for p in model.parameters()] == pointers
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules())


def test_rank_and_correlation_metrics_known_answers() -> None:
    torch.manual_seed(0)
    maps = torch.rand(3, 8, 8)
    ones = torch.ones(3, dtype=torch.float64)
    assert torch.allclose(map_stability(maps, maps**3), ones)  # monotone: same ranks
    assert torch.allclose(randomization_similarity(maps, -maps), -ones)
    flat = torch.zeros(3, 8, 8)
    assert class_sensitivity(flat, flat).tolist() == [1.0, 1.0, 1.0]  # two blank maps: no class dependence at all
    assert blank_maps(torch.stack([maps[0], flat[0], flat[0] + 2])).tolist() == [False, True, True]


def test_quality_warnings_fire_on_each_rule_and_only_then() -> None:
    t = QualityThresholds()
    healthy = {
        "blank_maps": 0.0,
        "class_sensitivity": -0.2,
        "randomization": 0.1,
        "deletion_auc": 0.2,
        "insertion_auc": 0.5,
        "pointing_game": 0.9,
        "pointing_game_chance": 0.08,
    }
    assert quality_warnings("gradcam", healthy, t) == {}
    assert quality_warnings("gradcam", {}, t) == {}
    cases = {  # metric: (value, the check's key, phrase)
        "blank_maps": (0.75, "blank_maps", "75% of the probe's maps are blank"),
        "class_sensitivity": (0.95, "class_sensitivity", "a sign of a dead or collapsed network"),
        "randomization": (0.8, "randomization", "maps survive re-initialising the network"),
        "deletion_auc": (0.6, "deletion_insertion", "deletion AUC 0.60 >= insertion AUC 0.50"),
        "pointing_game": (0.05, "pointing_game", "no more often than chance"),
    }
    for metric, (value, check, phrase) in cases.items():
        ((key, warning),) = quality_warnings("gradcam", {**healthy, metric: value}, t).items()
        assert key == check and warning.startswith("gradcam: ") and phrase in warning, warning
    assert "dead" not in quality_warnings("deconvnet", {"class_sensitivity": 0.9}, t)["class_sensitivity"]


# -- the monitor in a real Trainer ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")  # single-process loaders on purpose
def test_training_is_bit_identical_with_the_quality_monitor(tmp_path: Path) -> None:
    baseline = fit_classifier(tmp_path / "without", [])
    monitor = ExplanationQualityMonitor(methods=("gradcam", "deconvnet", "guided"), every_n_steps=10, steps=4)
    run = fit_classifier(tmp_path / "with", [monitor])
    assert_same_training(run, baseline)
    events = read_events(run[1].logger.log_dir)
    for method in ("gradcam", "deconvnet", "guided"):
        for metric in ("class_sensitivity", "blank_maps"):
            assert [e.step for e in events.Scalars(f"quality/{method}/{metric}")] == [0, 10, 20, 30]
        for metric in ("randomization", "deletion_auc", "insertion_auc"):  # their own cadence, and the final probe
            assert [e.step for e in events.Scalars(f"quality/{method}/{metric}")] == [30]
        assert len(events.Scalars(f"quality/{method}/stability")) == 3
        assert "pointing_game" not in " ".join(events.Tags()["scalars"])  # random_loader has no masks
    assert [e.step for e in events.Scalars("viz/overhead_ms/ExplanationQualityMonitor")] == [0, 10, 20, 30]
    assert len(events.Scalars("viz/overhead_ms/ExplanationQualityMonitor/guided/deletion_insertion")) == 1


class _DeadHead(AwkwardNet):
    """The last features are switched off: every Grad-CAM map is blank."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.conv3.bias.fill_(-1e4)


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_a_dead_network_is_flagged(tmp_path: Path) -> None:
    seed_everything(0)
    trainer = make_trainer(tmp_path, [ExplanationQualityMonitor(methods=("gradcam",), early_steps=())], max_steps=2)
    trainer.fit(Classifier(_DeadHead()), random_loader(n=96), random_loader(n=16, seed=1, shuffle=False))
    events = read_events(trainer.logger.log_dir)
    assert events.Scalars("quality/gradcam/blank_maps")[0].value == 1.0
    assert events.Scalars("quality/gradcam/class_sensitivity")[0].value == 1.0
    text = events.Tensors("quality/warnings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "100% of the probe's maps are blank" in text and "a sign of a dead or collapsed network" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ("gradcam", "lime")}, "methods must be distinct names from"),
        ({"methods": ()}, "methods must be distinct names from"),
        ({"steps": 0}, "steps must be a positive int, got 0"),
        ({"randomize_top": 0}, "randomize_top must be a positive int or None, got 0"),
        ({"layers": ["net.conv2", "net.conv3"]}, "layers must name one Grad-CAM layer"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExplanationQualityMonitor(**kwargs)


def test_state_key_and_state_dict() -> None:
    a, b = ExplanationQualityMonitor(), ExplanationQualityMonitor(methods=("gradcam",))
    assert a.state_key != b.state_key
    a._previous = {"gradcam": torch.rand(2, 4, 4)}
    a.last_step = 7
    a._warn(5, "maps", {"gradcam/blank_maps": "gradcam: 60% of the probe's maps are blank"})
    c = ExplanationQualityMonitor()
    c.load_state_dict(a.state_dict())
    assert c.last_step == 7 and torch.equal(c._previous["gradcam"], a._previous["gradcam"])
    assert (c._standing, c._said, c._said_step, c._said_before) == (a._standing, a._said, 5, None)


# -- quality/warnings: said when they change, and across a resume ---------------------------------------------------

# Limits that make two warnings fire at every probe whatever the numbers (no map correlates below -2 or has a
# negative share of blanks), and the class-sensitivity limit out of reach; randomisation never warns.
ALWAYS = QualityThresholds(class_sensitivity=-2.0, randomization=2.0, blank_maps=-1.0)
NEVER_CLASS = QualityThresholds(class_sensitivity=2.0, randomization=2.0, blank_maps=-1.0)


class _Loosen(Callback):
    """Before the monitor's probe at ``step``, its class-sensitivity limit moves out of reach: that warning clears."""

    def __init__(self, monitor: ExplanationQualityMonitor, step: int) -> None:
        self.monitor, self.step = monitor, step

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            self.monitor.thresholds = NEVER_CLASS


def _warnings(trainer: Trainer) -> dict[int, str]:
    events = read_events(trainer.logger.log_dir)
    if "quality/warnings/text_summary" not in events.Tags()["tensors"]:
        return {}
    return {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("quality/warnings/text_summary")}


def _quality(thresholds: QualityThresholds) -> ExplanationQualityMonitor:
    return ExplanationQualityMonitor(methods=("gradcam",), every_n_steps=5, early_steps=(), steps=2,
                                     thresholds=thresholds, expensive_every_n_steps=1000, budget=None)  # fmt: skip


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_warnings_are_said_once_when_they_change_and_a_resumed_run_remembers_them(tmp_path: Path) -> None:
    """Probes at 0, 5, 10, 15 and 20: two warnings from step 0, one of them cleared at step 10. The text comes at
    0 and 10 only (at 20 only if deletion/insertion, which run at the final probe, find something new); a run resumed
    from step 12 carries on without saying again what was said."""
    monitor = _quality(ALWAYS)
    _, trainer = fit_classifier(tmp_path / "whole", [_Loosen(monitor, 10), monitor], max_steps=20)
    texts = _warnings(trainer)
    assert 0 in texts and 10 in texts and not {5, 15} & set(texts), texts
    first, cleared = texts[0], texts[10]
    assert first.startswith("Step 0: 2 warnings") and first.count("- ✗ gradcam: ") == 2, first
    assert "blank (limit -100%)" in first and "maps barely depend on the class" in first
    assert first.count("(since step 0)") == 2 and "no longer" not in first
    assert cleared.startswith("Step 10: 1 warning;") and "- ✗ gradcam: 0% of the probe's maps are blank" in cleared
    assert "(since step 0)" in cleared and cleared.count("- ✓ no longer: ") == 1
    assert "- ✓ no longer: gradcam: maps barely depend on the class" in cleared and "(warned from step 0)" in cleared
    if 20 in texts:  # only a new warning from the final probe's deletion/insertion
        assert "deletion AUC" in texts[20] and "(since step 20)" in texts[20] and "no longer" not in texts[20]

    first_half = _quality(ALWAYS)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _, half = fit_classifier(tmp_path / "first", [_Loosen(first_half, 10), first_half, checkpoint], max_steps=12,
                             enable_checkpointing=True)  # fmt: skip
    assert texts[0] == _warnings(half)[0] and texts[10] == _warnings(half)[10]  # the same run, so far
    resumed = _quality(NEVER_CLASS)  # the limits the uninterrupted run has from step 10 on
    seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    second = make_trainer(tmp_path / "second", [resumed, checkpoint], max_steps=20, enable_checkpointing=True)
    second.fit(Classifier(AwkwardNet()), random_loader(n=96), random_loader(n=32, seed=1, shuffle=False),
               ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))  # fmt: skip
    after = _warnings(second)
    probed = [e.step for e in read_events(second.logger.log_dir).Scalars("quality/gradcam/blank_maps")]
    assert probed == [15, 20] and 15 not in after, after  # the standing warning was said before the checkpoint
    assert set(after) <= {20} and all("deletion AUC" in text for text in after.values()), after


# -- the literature's findings on a trained Shapes model -----------------------------------------------------------


@pytest.fixture(scope="module")
def trained_shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[ShapesNet, Any, int]:
    """The committed ShapesNet checkpoint (4 epochs on Shapes, about 0.55 accuracy, chance 0.17; see
    tests/checkpoints/make_shapes_net.py), probed by the quality monitor in a real Trainer. It fits one step at
    learning rate 0, which leaves the weights as they are: no training in the test, so the findings do not depend on
    the processor's rounding."""
    seed_everything(0)
    model = trained_shapes_net(lr=0.0)
    before = {name: p.clone() for name, p in model.state_dict().items()}
    logdir = tmp_path_factory.mktemp("quality")
    monitor = ExplanationQualityMonitor(every_n_steps=None, every_n_epochs=1, early_steps=())
    trainer = Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=TensorBoardLogger(str(logdir), name="run"),
        callbacks=[monitor],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(
        model, DataLoader(Shapes(64, seed=0), batch_size=64), DataLoader(Shapes(256, seed=10_000), batch_size=256)
    )
    assert all(torch.equal(p, before[name]) for name, p in model.state_dict().items())
    return model.eval(), read_events(trainer.logger.log_dir), trainer.global_step


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
def test_gradcam_passes_the_sanity_checks_and_deconvnet_is_class_blind(trained_shapes: tuple[Any, Any, int]) -> None:
    _, events, last = trained_shapes

    def value(method: str, metric: str) -> float:
        (final,) = [e.value for e in events.Scalars(f"quality/{method}/{metric}") if e.step == last]
        return final

    # Adebayo et al. 2018: Grad-CAM changes when the weights are re-initialised; deconvnet keeps showing the input
    assert value("gradcam", "randomization") < QualityThresholds().randomization
    assert value("deconvnet", "randomization") > value("gradcam", "randomization") + 0.1
    # Nie et al. 2018: Grad-CAM depends on the class (negative: the object is evidence against the least likely
    # class), deconvnet hardly does
    assert value("gradcam", "class_sensitivity") < 0 < value("deconvnet", "class_sensitivity")
    assert value("deconvnet", "class_sensitivity") - value("gradcam", "class_sensitivity") > 0.2
    # the maps are faithful and point at the object
    assert value("gradcam", "deletion_auc") < value("gradcam", "insertion_auc")
    assert value("gradcam", "pointing_game") > 3 * value("gradcam", "pointing_game_chance")
    text = events.Tensors("quality/warnings/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "gradcam" not in text, text


def test_the_mask_beats_a_random_map_at_deletion_and_insertion(trained_shapes: tuple[Any, Any, int]) -> None:
    model, _, _ = trained_shapes
    data = Shapes(64, seed=20_000)
    images = torch.stack([data[i][0] for i in range(64)])
    masks = torch.stack([data[i][2] for i in range(64)]).float()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    by_mask = deletion_insertion(model, images, masks, predicted)
    noise = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    by_chance = deletion_insertion(model, images, noise, predicted)
    assert by_mask.deletion.mean() < by_chance.deletion.mean() - 0.05
    assert by_mask.insertion.mean() > by_chance.insertion.mean() + 0.05


# -- other model shapes ---------------------------------------------------------------------------------------------


def _probe_once(model: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, float]:

    monitor = ExplanationQualityMonitor(methods=("gradcam", "deconvnet", "guided"), steps=2)
    with isolated(model):
        monitor.layer_names = [default_cam_layer(model, images)]
        labels = torch.arange(len(images)) % 3
        context = ProbeContext(model, ProbeBatch(images, labels, masks), monitor.layer_names)
        logs = monitor.compute(context, step=0)
        (part,) = monitor.parts()
        logs.update(part.compute(context, 0))
    return logs.scalars


def test_resnet18_with_masks_and_an_odd_image_size() -> None:

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(4, 3, 45, 61)
    masks = torch.zeros(4, 45, 61)
    masks[:, 10:30, 20:40] = 1
    scalars = _probe_once(model, images, masks)
    for method in ("gradcam", "deconvnet", "guided"):
        assert 0 <= scalars[f"quality/{method}/pointing_game"] <= 1
        assert scalars[f"quality/{method}/pointing_game_chance"] == pytest.approx(400 / (45 * 61))
        assert -1 <= scalars[f"quality/{method}/randomization"] <= 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_compiled_submodule_and_bfloat16_parameters(awkward_net: AwkwardNet) -> None:
    images = torch.randn(3, 3, 16, 16)
    compiled = nn.Sequential(torch.compile(awkward_net, backend="eager"))
    compiled(images)
    scalars = _probe_once(compiled, images)
    assert -1 <= scalars["quality/gradcam/randomization"] <= 1
    half = _probe_once(AwkwardNet().to(torch.bfloat16), images.to(torch.bfloat16))
    assert 0 <= half["quality/deconvnet/insertion_auc"] <= 1


def test_without_labels_the_predicted_class_is_the_reference(awkward_net: AwkwardNet) -> None:

    model = awkward_net.eval()
    images = torch.randn(4, 3, 16, 16)
    masks = torch.zeros(4, 16, 16)
    masks[:, :8, :8] = 1
    monitor = ExplanationQualityMonitor(methods=("gradcam",), layers="conv3", steps=2)
    monitor.layer_names = ["conv3"]
    with isolated(model):
        logs = monitor.compute(ProbeContext(model, ProbeBatch(images, masks=masks), ["conv3"]), step=0)
        own = grad_cam(model, images, "conv3")  # predicted class
    assert torch.equal(monitor._previous["gradcam"], own)
    assert 0 <= logs.scalars["quality/gradcam/pointing_game"] <= 1
