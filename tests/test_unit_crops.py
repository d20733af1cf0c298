"""Single-unit projections on crops of the image equal the whole-image projections, wherever crops are used."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import trained_shapes_net
from torch import nn

from lightning_viz.methods import project_units, resolve_layer, stage_layers
from lightning_viz.methods._hooks import forward_until
from lightning_viz.methods.unit_crops import crop_grid, project_units_cropped
from lightning_viz.probe import ProbeBatch
from lightning_viz.probing import ProbeContext


def _units_everywhere(act: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One unit per image: the four corners, the borders' middles, the centre and random positions."""
    h, w = act.shape[-2:]
    corners = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]
    fixed = [*corners, (0, w // 2), (h // 2, 0), (h - 1, w // 2), (h // 2, w // 2)]
    more = [(int(torch.randint(h, (1,), generator=generator)), int(torch.randint(w, (1,), generator=generator)))
            for _ in range(len(act) - len(fixed))]  # fmt: skip
    yx = torch.tensor(fixed + more)[: len(act)]
    channels = torch.randint(act.shape[1], (len(yx),), generator=generator)
    return torch.cat([channels[:, None], yx], dim=1)


@pytest.mark.parametrize(
    ("name", "size"), [("shapes_net", 64), ("resnet18", 64), ("vgg11", 64), ("resnet18", 80), ("alexnet", 96)]
)
@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_cropped_projections_equal_whole_image_ones(name: str, size: int, rule: str) -> None:
    torch.manual_seed(0)
    model = trained_shapes_net() if name == "shapes_net" else getattr(torchvision.models, name)(weights=None)
    model.eval()
    images = torch.rand(12, 3, size, size)
    generator = torch.Generator().manual_seed(1)
    cropped_layers = 0
    for layer in stage_layers(model, images):
        with torch.no_grad():
            act = forward_until(model, images, dict([resolve_layer(model, layer)]))[layer]
        grid = crop_grid(model, (3, size, size), layer, tuple(act.shape[-2:]))
        if grid is None:
            continue
        cropped_layers += 1
        cyx = _units_everywhere(act, generator)
        whole = project_units(model, images, {layer: (torch.arange(len(cyx)), cyx)}, rule)  # type: ignore[arg-type]
        cropped = project_units_cropped(model, images, layer, cyx, grid, rule)  # type: ignore[arg-type]
        assert whole.abs().max() > 0
        assert torch.allclose(cropped, whole, rtol=1e-4, atol=1e-6 * float(whole.abs().max())), (layer, grid)
        assert max(grid.size) < size
    assert cropped_layers >= 1


def test_no_crop_where_a_unit_sees_the_whole_image() -> None:
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()  # squeeze-excitation: global pooling inside
    images = torch.rand(2, 3, 96, 96)
    layer = "features.4.block.0"
    with torch.no_grad():
        act = forward_until(model, images, dict([resolve_layer(model, layer)]))[layer]
    assert crop_grid(model, (3, 96, 96), layer, tuple(act.shape[-2:])) is None


class ResizingNet(nn.Module):
    """Resizes every input to 64x64 first: a crop is not seen as the same pixels, so crops must not be used."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("model_name", ["shapes_net", "resizing"])
def test_the_probe_context_uses_crops_only_where_they_were_shown_exact(model_name: str) -> None:
    torch.manual_seed(0)
    model = (trained_shapes_net() if model_name == "shapes_net" else ResizingNet()).eval()
    images = torch.rand(6, 3, 64, 64)
    layer = "relu2"
    memo: dict = {}
    units = torch.tensor([[0, 1, 0, 0], [1, 2, 3, 5], [5, 0, 7, 7]])
    for step in range(2):  # the first context checks the crops against whole images, the second uses them
        context = ProbeContext(model, ProbeBatch(images), [layer], memo=memo)
        projected = context.project(layer, units)
        cyx = units[:, 1:]
        whole = project_units(model, images[units[:, 0]], {layer: (torch.arange(len(units)), cyx)})
        assert torch.allclose(projected, whole, rtol=1e-4, atol=1e-6 * float(whole.abs().max())), step
    grid = memo[("crop_grid", layer, (3, 64, 64))]
    assert (grid is not None) == (model_name == "shapes_net")


@pytest.mark.parametrize(("name", "layer"), [("shapes_net", "relu2"), ("resnet18", "layer2"), ("resnet18", "layer4")])
def test_receptive_fields_from_the_diagonal_equal_each_position_traced(name: str, layer: str) -> None:
    from lightning_viz import DeconvNetMonitor
    from lightning_viz.methods import receptive_fields

    model = trained_shapes_net() if name == "shapes_net" else torchvision.models.resnet18(weights=None)
    model.eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        h, w = forward_until(model, images, dict([resolve_layer(model, layer)]))[layer].shape[-2:]
    monitor = DeconvNetMonitor()
    monitor._trace_fields(model, (3, 64, 64), layer, (h, w))
    everywhere = torch.tensor([(y, x) for y in range(h) for x in range(w)])
    traced = receptive_fields(model, (3, 64, 64), layer, everywhere).tolist()
    assert [monitor._fields[layer][(y, x)] for y, x in everywhere.tolist()] == traced
