"""The pictures as TensorBoard shows them: every panel fits the default image card, wrong predictions and failures
are marked, the deconvnet shows each channel's top probe images, and the filter views have their known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    AwkwardNet,
    Classifier,
    decode_image,
    fit_classifier,
    make_trainer,
    random_loader,
    read_events,
)
from torch import nn

from lightning_viz import (
    DeconvNetMonitor,
    ExplanationQualityMonitor,
    FilterMonitor,
    GradCAMMonitor,
    TrainingDiagnostics,
)
from lightning_viz.diagnostics import beyond_nyquist, filter_spectra, kernel_energy, nyquist_half_width
from lightning_viz.methods import isolated, top_images
from lightning_viz.probe import ProbeBatch
from lightning_viz.probing import ProbeContext
from lightning_viz.render import _RED, CARD_WIDTH, notice, stack, tile_panel


def test_every_panel_fits_the_default_card_and_is_not_blank(tmp_path: Path) -> None:
    monitors = [
        GradCAMMonitor(every_n_steps=5, budget=None),
        DeconvNetMonitor(every_n_steps=5, budget=None),
        FilterMonitor(every_n_steps=5, activation_max_every_n_steps=5, activation_max_steps=4, budget=None),
        TrainingDiagnostics(every_n_steps=5, budget=None),
        ExplanationQualityMonitor(every_n_steps=5, budget=None, steps=2),
    ]
    fit_classifier(tmp_path, monitors, max_steps=10)
    events = read_events(str(next(tmp_path.rglob("version_0"))))
    tags = events.Tags()["images"]
    assert len([t for t in tags if t.startswith("gradcam/net.conv3/images_")]) == math.ceil(16 / 4)
    views = ("own_scale", "one_scale", "change", "spectra", "kernel_energy")
    assert {f"filters/net.conv1/{view}" for view in views} <= set(tags)
    for tag in tags:
        panel = decode_image(events.Images(tag)[-1])
        assert panel.shape[1] <= CARD_WIDTH, (tag, panel.shape)
        assert panel.std() > 20, f"blank panel {tag}"


def _framed(panel: np.ndarray) -> int:
    """Pixels of our red frame colour in a panel."""
    return int(np.all(panel == _RED, axis=2).sum())


def test_wrong_predictions_are_framed_in_red() -> None:
    torch.manual_seed(0)
    model = AwkwardNet().eval()
    images = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    labels = predicted.clone()
    labels[[1, 4]] = (predicted[[1, 4]] + 1) % 4  # two wrong predictions
    monitor = GradCAMMonitor(layers="conv3", images_per_panel=3)
    monitor.layer_names = ["conv3"]
    with isolated(model):
        logs = monitor.compute(ProbeContext(model, ProbeBatch(images, labels), ["conv3"], gradients=True), step=0)
    panels = {tag: render() for tag, render in logs.images.items()}  # type: ignore[operator]
    assert sorted(panels) == ["gradcam/conv3/images_0-2", "gradcam/conv3/images_3-5"]
    assert logs.scalars["gradcam/probe_accuracy"] == pytest.approx(4 / 6)
    sizes = [_framed(panel) for panel in panels.values()]
    assert sizes[0] == sizes[1] > 0  # one framed tile in each panel (images 1 and 4)
    labels[[1, 4]] = predicted[[1, 4]]
    with isolated(model):
        logs = monitor.compute(ProbeContext(model, ProbeBatch(images, labels), ["conv3"], gradients=True), step=0)
    assert all(_framed(render()) == 0 for render in logs.images.values())  # type: ignore[operator]


def test_tile_panel_frames_marked_tiles_and_cuts_long_captions() -> None:
    tiles = [[np.full((3, 8, 8), 0.5, dtype=np.float32)] * 2] * 2
    plain = tile_panel(tiles, [["a", "b"]] * 2, tile_size=32)
    framed = tile_panel(tiles, [["a", "b"]] * 2, tile_size=32, marked=[[False, True], [False, False]])
    assert _framed(plain) == 0 and _framed(framed) == (32 + 4) ** 2 - 32**2
    long = tile_panel(tiles, [["x" * 80, "b"]] * 2, tile_size=32, columns=1)
    short = tile_panel(tiles, [["", "b"]] * 2, tile_size=32, columns=1)
    assert long.shape == short.shape and not np.array_equal(long, short)
    np.testing.assert_array_equal(long[:, 8 + 32 :], short[:, 8 + 32 :])  # cut before the next tile
    wide = tile_panel(tiles, [["a", "b"]] * 2, tile_size=32, title="t", subtitle="word " * 40, min_width=CARD_WIDTH)
    assert wide.shape[1] == CARD_WIDTH and wide.shape[0] > plain.shape[0] + 40  # the subtitle wraps


def test_notice_and_stack() -> None:
    card = notice("✗ diverged by step 50", "the weights are not finite " * 5)
    assert card.shape[1] == CARD_WIDTH and _framed(card) > 0
    both = stack([card, card[:10, :100]])
    assert both.shape == (card.shape[0] + 10, CARD_WIDTH, 3) and (both[card.shape[0] :, 100:] == 255).all()


def test_top_images_are_distinct_images_strongest_first() -> None:
    acts = torch.zeros(5, 2, 4, 4)
    acts[0, 1, 2, 3] = 3.0
    acts[0, 1, 0, 0] = 2.5  # a second peak in the same image: not a second patch
    acts[2, 1, 1, 1] = 5.0
    acts[3, 1, 3, 0] = 1.0
    rows = top_images(acts, channel=1, count=9)
    assert rows.tolist() == [[2, 1, 1, 1], [0, 1, 2, 3], [3, 1, 3, 0]]  # images 1 and 4 are silent
    assert top_images(acts, channel=1, count=2).tolist() == [[2, 1, 1, 1], [0, 1, 2, 3]]
    assert top_images(torch.zeros(3, 1, 2, 2), channel=0, count=9).shape == (1, 4)  # a silent channel: one row


def test_deconvnet_fig2_panel_shows_each_channels_top_images_at_a_whole_scale() -> None:
    torch.manual_seed(0)
    model = AwkwardNet().eval()
    images = torch.rand(10, 3, 16, 16)
    monitor = DeconvNetMonitor(layers="conv3", top_k=3, patches=4)
    monitor.layer_names = ["conv3"]
    with isolated(model):
        context = ProbeContext(model, ProbeBatch(images), ["conv3"])
        logs = monitor.compute(context, step=0)
        assert context.unit_passes == 1  # 3 channels x 4 images projected in one pass
        strongest = int(context.top_units("conv3", 1).index[0, 1])
        again = context.project_many({"conv3": top_images(context.activation("conv3"), strongest, 4)})
        assert context.unit_passes == 1 and len(again["conv3"]) == 4  # the panel's own units, cached
    panel = logs.images["deconvnet/conv3"]()  # type: ignore[operator]
    assert panel.shape[1] <= CARD_WIDTH
    with pytest.raises(ValueError, match="layout must be 'fig2' or 'units'"):
        DeconvNetMonitor(layout="grid")  # type: ignore[arg-type]
    units_view = DeconvNetMonitor(layers="conv3", layout="units")
    assert units_view.top_k == 9 and DeconvNetMonitor().top_k == 4


def _cosine_filter(k: int, cycles_per_pixel: float) -> torch.Tensor:
    x = torch.arange(k, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * cycles_per_pixel * x)[None, :].expand(k, k)
    return wave.reshape(1, 1, k, k).float()


def test_filter_spectra_peak_at_the_filters_frequency() -> None:
    size = 64
    spectra = filter_spectra(_cosine_filter(16, 0.375), size)
    assert spectra.shape == (1, size, size)
    row = spectra[0, size // 2]  # zero vertical frequency
    peak = int(row.argmax()) - size // 2
    assert abs(abs(peak) - 0.375 * size) <= 1
    assert float(spectra[0].sum(dim=1).argmax()) == size // 2  # all of it at zero vertical frequency


def test_energy_beyond_the_nyquist_box() -> None:
    size = 64
    assert nyquist_half_width(size, 2) == 16
    fast = filter_spectra(_cosine_filter(16, 0.375), size)  # beyond stride 2's limit of 1/4
    slow = filter_spectra(_cosine_filter(16, 0.0625), size)  # well inside it
    assert beyond_nyquist(fast, 2) > 0.8
    assert beyond_nyquist(slow, 2) < 0.1
    assert beyond_nyquist(fast, 1) == 0.0
    assert beyond_nyquist(slow, 4) < beyond_nyquist(slow, 8)


def test_kernel_energy_is_a_share_per_position() -> None:
    weight = torch.zeros(4, 3, 5, 5)
    weight[:, :, 2, 2] = 1.0
    energy = kernel_energy(weight)
    assert energy.shape == (5, 5) and float(energy.sum()) == pytest.approx(1.0)
    assert float(energy[2, 2]) == pytest.approx(1.0)
    even = kernel_energy(torch.ones(2, 1, 3, 3))
    torch.testing.assert_close(even, torch.full((3, 3), 1 / 9))
    assert float(kernel_energy(torch.zeros(1, 1, 3, 3)).sum()) == 0.0


def test_a_filter_panel_of_a_larger_kernel_still_fits(tmp_path: Path) -> None:
    class Wide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 96, 11, stride=4, padding=5)
            self.fc = nn.Linear(96, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv1(x)).mean(dim=(2, 3)))

    monitor = FilterMonitor(every_n_steps=2, activation_max_channels=0, budget=None)
    trainer = make_trainer(tmp_path, [monitor], max_steps=2)
    trainer.fit(Classifier(Wide()), random_loader(n=96, size=32), random_loader(n=16, size=32, seed=1, shuffle=False))
    events = read_events(str(next(tmp_path.rglob("version_0"))))
    for tag in events.Tags()["images"]:
        assert decode_image(events.Images(tag)[-1]).shape[1] <= CARD_WIDTH, tag


@pytest.mark.parametrize("field", [3, 7, 11, 19, 35, 43, 62, 100, 200, 400])
def test_deconvnet_grids_fit_the_card_at_whole_number_scales(field: int) -> None:
    from lightning_viz.callbacks.deconvnet import _grid_scales

    room = CARD_WIDTH - 2 * 8 - 4
    shown, seen = _grid_scales(field, 3, room)
    assert seen <= shown <= 2 * seen  # the projections get the larger scale, the patches at least half of it
    for scale in (shown, seen):
        assert scale == int(scale) or (1 / scale) == round(1 / scale)  # x n or 1/n
    width = sum(3 * max(1, round(field * s)) + 4 for s in (shown, seen))
    assert width <= room
    if 1 <= shown < 8:  # a larger whole scale for the projections (up to 8) would not fit
        assert 3 * field * (shown + 1) + 4 + 3 * field * math.ceil((shown + 1) / 2) + 4 > room
