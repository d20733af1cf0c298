"""FilterMonitor and the pieces it draws with: filter tiles, scalings, grids, activation maximisation."""

from __future__ import annotations

import copy
from pathlib import Path

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
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_viz import FilterMonitor, ProbeBatch, TrainingDiagnostics
from lightning_viz.callbacks.filters import filter_tiles
from lightning_viz.data import SHAPES_MEAN, SHAPES_STD, Shapes
from lightning_viz.demos import ShapesNet
from lightning_viz.methods.activation_max import ActivationMaxConfig, maximize_channels
from lightning_viz.render import grid, own_scale, signed_display


def test_a_filter_tile_undone_from_its_display_scaling_is_the_weight() -> None:
    torch.manual_seed(0)
    weight = torch.randn(6, 3, 5, 5) * 0.1
    scale = float(weight.abs().max())
    zoom, columns = 3, 4
    picture = grid(signed_display(filter_tiles(weight), scale), columns, zoom)
    for i in range(6):  # tile i sits at row i // columns, column i % columns, one gap pixel apart
        y, x = 1 + (i // columns) * (5 * zoom + 1), 1 + (i % columns) * (5 * zoom + 1)
        tile = picture[:, y : y + 5 * zoom : zoom, x : x + 5 * zoom : zoom]
        torch.testing.assert_close((tile - 0.5) * 2 * scale, weight[i], atol=1e-6, rtol=0)
        quantised = torch.round(tile * 255) / 255  # what a uint8 image in TensorBoard keeps
        assert ((quantised - 0.5) * 2 * scale - weight[i]).abs().max() <= scale / 255 + 1e-7


def test_other_input_channel_counts_get_one_grey_tile_each() -> None:
    assert filter_tiles(torch.zeros(4, 1, 3, 3)).shape == (4, 1, 3, 3)
    assert filter_tiles(torch.zeros(4, 2, 3, 3)).shape == (8, 1, 3, 3)
    constant = own_scale(torch.ones(2, 1, 3, 3))
    assert torch.all(constant == 0.5)


def test_grid_frames_marked_tiles_in_red() -> None:
    picture = grid(torch.zeros(4, 1, 2, 2), columns=2, gap=1, marked=torch.tensor([False, True, False, False]))
    red = (picture[0] > 0.8) & (picture[1] < 0.2)
    assert red[0:4, 3:7].sum() == 12 and red.sum() == 12  # the frame around tile 1 and nowhere else


@pytest.fixture(scope="module")
def shapes_net() -> ShapesNet:
    torch.manual_seed(0)
    return ShapesNet().eval()


def _channel_means(model: ShapesNet, images: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        x = model.pool2(model.relu2(model.conv2(model.pool1(model.relu1(model.conv1(images))))))
        act = model.relu3(model.conv3(x))
    return act[:, channels].mean(dim=(2, 3))  # (N, K)


def test_activation_maximisation_excites_its_channel_far_beyond_the_data(shapes_net: ShapesNet) -> None:
    mean, std = torch.tensor(SHAPES_MEAN), torch.tensor(SHAPES_STD)
    channels = torch.tensor([0, 3, 6, 9])
    images, noise = maximize_channels(shapes_net, "relu3", channels, (3, 64, 64), -mean / std, (1 - mean) / std)
    reached = _channel_means(shapes_net, images, channels).diagonal()
    probe = torch.stack([Shapes(size=64, seed=5)[i][0] for i in range(64)])
    best_on_data = _channel_means(shapes_net, probe, channels).amax(dim=0)
    at_start = _channel_means(shapes_net, noise, channels).diagonal()
    assert torch.all(reached > 2 * best_on_data), (reached, best_on_data)
    assert torch.all(reached > 2 * at_start), (reached, at_start)
    assert images.min() >= (-mean / std).min() - 1e-6 and images.max() <= ((1 - mean) / std).max() + 1e-6


def test_batched_activation_maximisation_equals_one_channel_at_a_time(shapes_net: ShapesNet) -> None:
    # in float64: Adam moves every pixel by about its step size whatever the gradient's magnitude, so a float32
    # rounding difference between the batched and the single convolution can flip a small gradient's sign and move a
    # pixel by a whole step; float64 rounding lies far below any gradient that matters
    net = copy.deepcopy(shapes_net).double()
    low, high = torch.full((3,), -2.0), torch.full((3,), 2.0)
    config = ActivationMaxConfig(steps=12)
    channels = torch.tensor([1, 4, 7])
    together, _ = maximize_channels(net, "relu3", channels, (3, 32, 32), low, high, config)
    for i, channel in enumerate(channels):
        alone, _ = maximize_channels(net, "relu3", channel[None], (3, 32, 32), low, high, config)
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-4, rtol=0)


def test_training_is_bit_identical_with_filter_monitor(tmp_path: Path) -> None:
    baseline = fit_classifier(tmp_path / "without", [])
    monitor = FilterMonitor(
        every_n_steps=5, activation_max_every_n_steps=10, activation_max_steps=4, activation_max_channels=3
    )
    run = fit_classifier(tmp_path / "with", [monitor])
    assert_same_training(run, baseline)
    events = read_events(run[1].logger.log_dir)
    tags = set(events.Tags()["images"])
    expected = {"filters/net.conv1/own_scale", "responses/net.bn1/image_0", "responses/net.conv3/image_0"}
    assert expected | {"responses/net.conv3/activation_max"} <= tags
    assert [e.step for e in events.Images("responses/net.conv3/activation_max")] == [10, 20, 30]  # never at step 0
    for tag in tags:
        assert decode_image(events.Images(tag)[-1]).std() > 20, tag
    # the change panel compares with a copy of the previous weights (taken at the last probe, step 30), not with
    # the live parameter, which training updates in place
    assert monitor._previous_weight is not None and monitor._previous_weight[0] == 30
    assert monitor._previous_weight[1].data_ptr() != run[0].net.conv1.weight.data_ptr()


class DeadChannels(AwkwardNet):
    """conv3 channels 0-3 can never fire: zero weights and a negative bias before F.relu."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.conv3.weight[:4] = 0
            self.conv3.bias[:4] = -1
        self.conv3.weight.register_hook(lambda g: g * (torch.arange(16) >= 4).view(-1, 1, 1, 1))
        self.conv3.bias.register_hook(lambda g: g * (torch.arange(16) >= 4))


def test_dead_channels_are_counted(tmp_path: Path) -> None:
    monitor = FilterMonitor(layers="net.out", every_n_steps=2, activation_max_channels=0)
    diagnostics = TrainingDiagnostics(layers="net.out", every_n_steps=2)
    trainer = make_trainer(tmp_path, [monitor, diagnostics], max_steps=2)

    class Net(DeadChannels):
        def __init__(self) -> None:
            super().__init__()
            self.out = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(self.relu(self.bn1(self.conv1(x))))
            x = self.relu(self.conv2(x)) + x
            x = self.out(self.conv3(x))
            return self.fc(self.drop(x.mean(dim=(2, 3))))

    trainer.fit(Classifier(Net()), random_loader(n=96), random_loader(n=32, seed=1, shuffle=False))
    events = read_events(trainer.logger.log_dir)
    fraction = events.Scalars("diagnostics/dead_channels/net.out")
    assert [e.value for e in fraction] == [0.25, 0.25]  # 4 of 16 channels, at steps 0 and 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="activation_max_steps must be a positive int, got 0"):
        FilterMonitor(activation_max_steps=0)
    with pytest.raises(ValueError, match="feature_map_images must be a positive int, got 0"):
        FilterMonitor(feature_map_images=0)


def test_activation_maximisation_with_one_normalisation_value_for_all_channels(tmp_path: Path) -> None:
    # ProbeBatch takes one mean and std for all channels; the optimised images' range is then that value's in each
    # channel (it was refused: "low must have shape (3,), got (1,)")
    torch.manual_seed(0)
    images = torch.randn(96, 3, 16, 16)
    probe = ProbeBatch(images[:8], torch.arange(8) % 4, mean=(0.5,), std=(0.25,))
    loader = DataLoader(TensorDataset(images, torch.arange(96) % 4), batch_size=8)
    monitor = FilterMonitor(
        probe=probe, every_n_steps=5, activation_max_every_n_steps=5, activation_max_steps=2,
        activation_max_channels=2, on_error="raise", budget=None,
    )  # fmt: skip
    trainer = make_trainer(tmp_path, [monitor], max_steps=5)
    trainer.fit(Classifier(AwkwardNet()), loader, loader)
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Images("responses/net.conv3/activation_max")] == [5]
