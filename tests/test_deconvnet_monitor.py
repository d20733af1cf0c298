"""DeconvNetMonitor in a real Trainer, and the geometry of what it draws."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import AwkwardNet, assert_same_training, decode_image, fit_classifier, read_events

from lightning_viz import DeconvNetMonitor
from lightning_viz.callbacks.deconvnet import _crop, _square_boxes
from lightning_viz.methods import project_units, receptive_fields, top_k_units


def test_training_is_bit_identical_with_deconvnet_monitor(tmp_path: Path) -> None:
    baseline = fit_classifier(tmp_path / "without", [])
    monitor = DeconvNetMonitor(every_n_steps=5, top_k=4)
    run = fit_classifier(tmp_path / "with", [monitor])
    assert_same_training(run, baseline)
    assert monitor.layer_names == ["net.bn1", "net.conv3"]  # 16x16 and 8x8 stages; net.relu is called twice
    events = read_events(run[1].logger.log_dir)
    for layer in monitor.layer_names:
        images = events.Images(f"deconvnet/{layer}")
        assert [e.step for e in images] == [0, 5, 10, 15, 20, 25, 30]
        panel = decode_image(images[-1])
        assert panel.std() > 20, "blank panel"
        assert (panel == 255).all(axis=2).mean() < 0.9, "saturated panel"
        stability = [e.value for e in events.Scalars(f"diagnostics/deconv_stability/{layer}")]
        assert len(stability) == 6 and all(-1 <= v <= 1 for v in stability)


def test_drawn_patch_contains_the_projection_support() -> None:
    torch.manual_seed(0)
    model = AwkwardNet().eval()
    images = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        acts = model.conv3(model.relu(model.conv2(model.pool(model.relu(model.bn1(model.conv1(images)))))))
    top = top_k_units(acts, 6)
    projections = project_units(model, images[top.index[:, 0]], {"conv3": (torch.arange(6), top.index[:, 1:])})
    center = receptive_fields(model, (3, 16, 16), "conv3", torch.tensor([[4, 4]]))[0]
    size = int(center[1] - center[0])
    boxes = _square_boxes(receptive_fields(model, (3, 16, 16), "conv3", top.index[:, 2:]), size, 16, 16)
    crops = _crop(projections, boxes, 0.0)
    assert crops.shape == (6, 3, size, size)
    torch.testing.assert_close(crops.abs().flatten(1).sum(1), projections.abs().flatten(1).sum(1))


def test_border_patches_are_padded_in_place() -> None:
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    boxes = _square_boxes(torch.tensor([[0, 2, 1, 4]]), size=3, height=4, width=4)  # clipped at the top
    assert boxes.tolist() == [[-1, 2, 1, 4]]
    crop = _crop(image, boxes, fill=-1.0)[0, 0]
    assert crop.tolist() == [[-1, -1, -1], [1, 2, 3], [5, 6, 7]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, "top_k must be a positive int, got 0"),
        ({"rule": "smooth"}, "rule must be one of"),
        ({"columns": 0}, "columns must be a positive int or None, got 0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeconvNetMonitor(**kwargs)  # type: ignore[arg-type]


def test_two_monitors_of_one_class_can_coexist(tmp_path: Path) -> None:
    monitors = [DeconvNetMonitor(rule="deconvnet", top_k=2), DeconvNetMonitor(rule="guided", top_k=2)]
    assert monitors[0].state_key != monitors[1].state_key
    _, trainer = fit_classifier(tmp_path, monitors, max_steps=2)  # Lightning refuses equal state keys
    assert trainer.global_step == 2


def test_square_boxes_centre_a_field_larger_than_the_image() -> None:
    boxes = _square_boxes(torch.tensor([[0, 4, 0, 4]]), size=8, height=4, width=4)
    assert boxes.tolist() == [[-2, 6, -2, 6]]
