from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import Deconvolution, GuidedBackprop, NeuronDeconvolution
from conftest import AwkwardNet
from torch import nn

from lightning_viz.methods import deconvnet, project_units, receptive_fields, top_k_units
from lightning_viz.methods._relu_rules import RULES

# captum announces the hooks it sets on ReLU modules; that is its normal operation, not a problem here
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations:UserWarning")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    ("builder", "size"),
    [(torchvision.models.resnet18, 64), (torchvision.models.vgg11, 64), (torchvision.models.alexnet, 96)],
)
@pytest.mark.parametrize(("rule", "reference"), [("deconvnet", Deconvolution), ("guided", GuidedBackprop)])
def test_class_projection_equals_captum(builder, size: int, rule: str, reference) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = builder(weights=None, num_classes=10).eval()
    images, target = torch.randn(2, 3, size, size), torch.tensor([1, 7])
    ours = deconvnet(model, images, target=target, rule=rule)  # type: ignore[arg-type]
    theirs = reference(model).attribute(images.clone().requires_grad_(True), target=target)
    assert theirs.abs().max() > 0
    assert _relative(ours, theirs) < 1e-5


class FunctionalNet(nn.Module):
    """ReLUs called as functions (F.relu, torch.relu, Tensor.relu_) where captum cannot hook them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        x = self.conv3(x).relu_()
        return self.fc(x.mean(dim=(2, 3)))


class ModuleNet(FunctionalNet):
    """The same network with nn.ReLU modules: the reference captum handles."""

    def __init__(self) -> None:
        super().__init__()
        self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.r1(self.conv1(x)), 2)
        x = self.r2(self.conv2(x))
        x = self.r3(self.conv3(x))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize(("rule", "reference"), [("deconvnet", Deconvolution), ("guided", GuidedBackprop)])
def test_functional_relu_is_handled_where_captum_falls_back(rule: str, reference) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    functional = FunctionalNet().eval()
    modules = ModuleNet().eval()
    modules.load_state_dict(functional.state_dict())
    images, target = torch.randn(3, 3, 16, 16), torch.tensor([0, 2, 4])
    ours = deconvnet(functional, images, target=target, rule=rule)  # type: ignore[arg-type]
    expected = reference(modules).attribute(images.clone().requires_grad_(True), target=target)
    assert _relative(ours, expected) < 1e-5
    captum_on_functional = reference(functional).attribute(images.clone().requires_grad_(True), target=target)
    assert _relative(captum_on_functional, expected) > 1e-2  # captum silently gives the plain gradient there


def test_without_relu_all_rules_equal_the_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.MaxPool2d(2), nn.Conv2d(6, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    images = torch.randn(2, 3, 12, 12)
    model(images)
    inputs = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(inputs)[:, 1].sum(), inputs)
    for rule in RULES:
        torch.testing.assert_close(deconvnet(model, images, target=1, rule=rule), gradient)


def test_rules_differ_with_relu() -> None:
    torch.manual_seed(0)
    model = ModuleNet().eval()
    images = torch.randn(2, 3, 16, 16)
    maps = {rule: deconvnet(model, images, target=0, rule=rule) for rule in RULES}
    assert _relative(maps["deconvnet"], maps["gradient"]) > 1e-2
    assert _relative(maps["guided"], maps["gradient"]) > 1e-2


def test_unit_projection_equals_captum_neuron_deconvolution() -> None:
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None).eval()
    images = torch.randn(2, 3, 64, 64)
    ours = deconvnet(model, images, "features.8", unit=(5, 3, 4))
    theirs = NeuronDeconvolution(model, model.features[8]).attribute(
        images.clone().requires_grad_(True), neuron_selector=(5, 3, 4)
    )
    assert _relative(ours, theirs) < 1e-5


def test_projection_is_zero_outside_the_receptive_field() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        layer2 = model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(images))))))
    top = top_k_units(layer2, 6).index  # strong units (image, channel, y, x) in the 8x8 map: none is dead
    images, units = images[top[:, 0]], top[:, 1:]
    for rule in RULES:
        projection = deconvnet(model, images, "layer2", unit=units, rule=rule)  # type: ignore[arg-type]
        boxes = receptive_fields(model, (3, 64, 64), "layer2", units[:, 1:])
        for p, (y0, y1, x0, x1) in zip(projection, boxes.tolist(), strict=True):
            inside = p[:, y0:y1, x0:x1].abs().sum()
            assert inside > 0 and torch.isclose(inside, p.abs().sum()), (rule, (y0, y1, x0, x1))
    # the corner unit's field is clipped by the border; an interior unit's is not, and is larger
    corner, interior = receptive_fields(model, (3, 64, 64), "layer2", torch.tensor([[0, 0], [4, 4]])).tolist()
    assert corner[0] == 0 and corner[2] == 0
    assert interior[1] - interior[0] > corner[1] - corner[0]


def test_receptive_field_of_a_known_stack() -> None:
    # conv 3x3 pad 1 -> maxpool 2 -> conv 3x3 pad 1, an 8 px field: unit (2, 2) sees pooled rows 1-3, so conv
    # rows 2-7, so input rows 1-8; unit (0, 0) sees pooled rows -1-1, clipped to input rows 0-4
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding=1))
    boxes = receptive_fields(model, (1, 16, 16), "3", torch.tensor([[2, 2], [0, 0]]))
    assert boxes.tolist() == [[1, 9, 1, 9], [0, 5, 0, 5]]


def test_top_k_units_and_batched_projection_equals_one_at_a_time() -> None:
    torch.manual_seed(0)
    acts = torch.zeros(3, 5, 4, 4)
    acts[2, 1, 3, 0] = 9.0
    acts[0, 4, 1, 2] = 7.0
    acts[1, 0, 2, 2] = 5.0
    top = top_k_units(acts, 2)
    assert top.index.tolist() == [[2, 1, 3, 0], [0, 4, 1, 2]] and top.value.tolist() == [9.0, 7.0]

    model = AwkwardNet().eval()  # in-place ReLU used twice, F.relu, BatchNorm, residual add
    images = torch.randn(4, 3, 16, 16)
    cyx = torch.tensor([[1, 2, 3], [5, 0, 7], [2, 4, 4], [0, 7, 7]])
    batched = project_units(model, images, {"conv2": (torch.arange(4), cyx)})
    for i in range(4):
        alone = project_units(model, images[i : i + 1], {"conv2": (torch.tensor([0]), cyx[i : i + 1])})
        torch.testing.assert_close(batched[i : i + 1], alone)
    # two layers in one pass: each image carries the unit of its own layer
    both = project_units(
        model, images, {"conv2": (torch.tensor([0, 1]), cyx[:2]), "conv3": (torch.tensor([2, 3]), cyx[2:] % 8)}
    )
    torch.testing.assert_close(both[:2], batched[:2])


def test_no_trace_left_on_the_model() -> None:
    torch.manual_seed(0)
    model = AwkwardNet().eval()
    deconvnet(model, torch.randn(2, 3, 16, 16), "conv3", unit=2, rule="guided")
    assert all(p.grad is None for p in model.parameters())
    assert model.relu.inplace and not any(m._forward_hooks for m in model.modules())


def test_bad_arguments() -> None:
    model = AwkwardNet().eval()
    with pytest.raises(ValueError, match="rule must be one of"):
        deconvnet(model, torch.randn(1, 3, 16, 16), target=0, rule="smooth")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="give the unit to project"):
        deconvnet(model, torch.randn(1, 3, 16, 16), "conv3")
    with pytest.raises(ValueError, match=r"unit must give \(channel, y, x\) for each of the 2 images"):
        deconvnet(model, torch.randn(2, 3, 16, 16), "conv3", unit=torch.zeros(3, 3))


def test_receptive_fields_through_relu6_and_batchnorm_without_bias() -> None:
    """MobileNetV2: conv (no bias) -> BatchNorm -> ReLU6. The linearized pass must not die at ReLU6's zero input."""
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    boxes = receptive_fields(model, (3, 64, 64), "features.3", torch.tensor([[8, 8], [0, 0]]))
    (y0, y1, x0, x1), corner = boxes.tolist()
    assert 0 < y0 < 32 < y1 < 64 and 0 < x0 < 32 < x1 < 64 and corner[0] == corner[2] == 0
