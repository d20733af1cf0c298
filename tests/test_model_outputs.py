"""Real models' outputs: dicts, tuples, one logit per image, no forward, uint8 batches, and probes the model cannot
take: a working run or a message at setup that says what was found and what to pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import AwkwardNet, Classifier, make_trainer, random_loader, read_events
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_viz import (
    DeconvNetMonitor,
    ExplanationQualityMonitor,
    FilterMonitor,
    GradCAMMonitor,
    TrainingDiagnostics,
)
from lightning_viz.methods._outputs import as_classifier, select_logits


def test_one_logit_becomes_two_class_scores_whose_softmax_is_the_sigmoid() -> None:
    z = torch.randn(5, 1)
    scores = select_logits(z)
    assert scores.shape == (5, 2)
    torch.testing.assert_close(scores.softmax(dim=1)[:, 1], torch.sigmoid(z[:, 0]))
    assert select_logits({"logits": z, "aux": 1}, "logits").shape == (5, 2)
    assert select_logits((torch.ones(5, 3), z), 0).shape == (5, 3)
    assert select_logits(z, lambda out: out * 2).shape == (5, 2)


def test_as_classifier_is_undone_and_keeps_layer_names() -> None:
    net = AwkwardNet()
    x = torch.randn(2, 3, 16, 16)
    with as_classifier(net, lambda out: out[:, :2]):
        assert net(x).shape == (2, 2)
    assert net(x).shape == (2, 4) and not net._forward_hooks and "forward" not in vars(net)


class _Returns(Classifier):
    """The network's logits wrapped as a real model might return them."""

    def __init__(self, wrap: str) -> None:
        super().__init__(AwkwardNet())
        self.wrap = wrap

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.net(x)
        return {"logits": logits, "features": x.mean()} if self.wrap == "dict" else (logits, x.mean())

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        out = self(batch[0])
        return F.cross_entropy(out["logits"] if self.wrap == "dict" else out[0], batch[1])

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass


def _all_five(**kwargs: Any) -> list[Any]:
    every = {"every_n_steps": 2, "early_steps": (), **kwargs}
    return [GradCAMMonitor(**every), DeconvNetMonitor(**every), FilterMonitor(**every, activation_max_steps=2),
            TrainingDiagnostics(**every), ExplanationQualityMonitor(**every, steps=2)]  # fmt: skip


@pytest.mark.parametrize(("wrap", "message", "output"), [
    ("dict", r"returns a dict with keys \['logits', 'features'\] for the probe batch \(images of shape \(16, 3, 16, "
             r"16\), float32.*: pass output=\"logits\"", "logits"),
    ("tuple", r"returns a tuple of 2 \(a float32 tensor of shape \(16, 4\), a float32 tensor of shape \(\)\).*: pass "
              r"output=0", 0),
])  # fmt: skip
def test_dict_and_tuple_outputs_are_named_at_setup_and_read_with_output(
    tmp_path: Path, wrap: str, message: str, output: Any
) -> None:
    # checked whether the layers are given or chosen
    trainer = make_trainer(
        tmp_path / "without", [GradCAMMonitor(layers="net.conv3")], max_steps=2, val_check_interval=1.0
    )
    with pytest.raises(MisconfigurationException, match=message):
        trainer.fit(_Returns(wrap), random_loader(), random_loader(n=32, seed=1, shuffle=False))
    assert trainer.global_step == 0
    trainer = make_trainer(tmp_path / "with", _all_five(output=output), max_steps=4, val_check_interval=1.0)
    trainer.fit(_Returns(wrap), random_loader(), random_loader(n=32, seed=1, shuffle=False))
    events = read_events(trainer.logger.log_dir)
    for prefix in ("gradcam/", "deconvnet/", "filters/", "responses/"):
        assert [t for t in events.Tags()["images"] if t.startswith(prefix)], prefix
    assert "quality/gradcam/class_sensitivity" in events.Tags()["scalars"]
    assert "diagnostics/probe_loss" in events.Tags()["scalars"]


class _Binary(Classifier):
    """One logit per image, trained with BCE on float targets."""

    def __init__(self) -> None:
        super().__init__(AwkwardNet(num_classes=1))

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return F.binary_cross_entropy_with_logits(self(batch[0])[:, 0], batch[1])

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass


def _binary_loader(seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.randn(32, 3, 16, 16, generator=g), (torch.arange(32) % 2).float()),
                      batch_size=8)  # fmt: skip


def test_a_binary_classifier_with_one_logit_is_explained_for_both_classes(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, _all_five(), max_steps=4, val_check_interval=1.0)
    trainer.fit(_Binary(), _binary_loader(), _binary_loader(seed=1))
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Images("gradcam/net.conv3/images_00-03")] == [0, 2, 4]
    assert events.Scalars("quality/gradcam/class_sensitivity")[-1].value < 1.0  # the two classes' maps differ
    monitor = trainer.callbacks[0]
    assert monitor.probe.labels is not None and set(monitor.probe.labels.tolist()) == {0, 1}


class _NoForward(Classifier):
    """Steps call self.net; the LightningModule has no forward of its own."""

    forward = nn.Module.forward  # nn.Module's: raises NotImplementedError

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass


def test_a_module_without_forward_is_named_and_network_probes_its_submodule(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path / "without", [GradCAMMonitor()], max_steps=2, val_check_interval=1.0)
    with pytest.raises(MisconfigurationException, match=r"_NoForward has no forward .*pass network='<the submodule"):
        trainer.fit(_NoForward(AwkwardNet()), random_loader(), random_loader(n=32, seed=1, shuffle=False))
    trainer = make_trainer(tmp_path / "with", _all_five(network="net"), max_steps=4, val_check_interval=1.0)
    model = _NoForward(AwkwardNet())
    trainer.fit(model, random_loader(), random_loader(n=32, seed=1, shuffle=False))
    assert [e.step for e in read_events(trainer.logger.log_dir).Images("gradcam/net.conv3/images_00-03")] == [0, 2, 4]
    assert "forward" not in vars(model)  # the stand-in forward is gone after every probe


def test_a_probe_the_model_cannot_take_is_named_with_its_shape_and_dtype(tmp_path: Path) -> None:
    monitor = GradCAMMonitor(probe=torch.randn(4, 1, 16, 16))  # one channel for a 3-channel net
    trainer = make_trainer(tmp_path, [monitor], max_steps=2, val_check_interval=1.0)
    expected = r"fails on the probe batch \(images of shape \(4, 1, 16, 16\), float32.*RuntimeError: .*pass probe="
    with pytest.raises(MisconfigurationException, match=expected):
        trainer.fit(Classifier(AwkwardNet()), random_loader(), random_loader(n=32, seed=1, shuffle=False))


class _Bytes(Classifier):
    """Takes the loader's uint8 images and scales them itself (as torchvision's v2 pipelines leave them)."""

    def __init__(self, scale_only_bytes: bool = False) -> None:
        super().__init__(AwkwardNet())
        self.scale_only_bytes = scale_only_bytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_only_bytes and x.is_floating_point():  # as ToDtype(scale=True) does: float input kept
            return self.net(x)
        return self.net(x.float() / 255)


def _bytes_loader(seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (32, 3, 16, 16), generator=g, dtype=torch.uint8)
    return DataLoader(TensorDataset(images, torch.arange(32) % 4), batch_size=8)


def test_uint8_batches_are_probed_or_the_fix_is_named(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path / "scales", _all_five(), max_steps=4, val_check_interval=1.0)
    trainer.fit(_Bytes(), _bytes_loader(), _bytes_loader(seed=1))
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Images("gradcam/net.conv3/images_00-03")] == [0, 2, 4]
    assert trainer.callbacks[0].probe.images.dtype == torch.uint8  # kept as the loader gave it
    trainer = make_trainer(tmp_path / "only_bytes", [GradCAMMonitor()], max_steps=2, val_check_interval=1.0)
    with pytest.raises(MisconfigurationException, match=r"output depends on the dtype of the probe batch .*uint8"):
        trainer.fit(_Bytes(scale_only_bytes=True), _bytes_loader(), _bytes_loader(seed=1))
