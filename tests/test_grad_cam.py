from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from lightning_viz.methods import (
    cam_from,
    default_cam_layer,
    grad_cam,
    normalize_maps,
    resolve_layer,
    stage_layers,
)


class ConvGapLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_grad_cam_equals_cam_on_conv_gap_linear() -> None:
    torch.manual_seed(0)
    model = ConvGapLinear().eval()
    images = torch.randn(4, 3, 20, 20)
    target = torch.tensor([0, 1, 2, 4])
    maps = grad_cam(model, images, "features", target)
    # CAM (Zhou et al. 2016): class weights of the linear layer times the last feature maps
    cam = torch.einsum("nkhw,nk->nhw", model.features(images), model.fc.weight[target]).relu()
    cam = F.interpolate(cam[:, None], size=(20, 20), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, normalize_maps(cam.detach()), atol=1e-5, rtol=0)
    assert maps.shape == (4, 20, 20) and maps.min() >= 0 and maps.max() <= 1


def test_cam_from_equals_cam_on_conv_gap_linear() -> None:
    """The shared formula alone, on the gradient a GAP-linear head gives: the class weights over h*w."""
    torch.manual_seed(0)
    model = ConvGapLinear().eval()
    images = torch.randn(4, 3, 20, 20)
    target = torch.tensor([0, 1, 2, 4])
    with torch.no_grad():
        act = model.features(images)
        gradient = (model.fc.weight[target] / act[0, 0].numel())[:, :, None, None].expand_as(act)
        cam = torch.einsum("nkhw,nk->nhw", act, model.fc.weight[target]).relu()
    cam = F.interpolate(cam[:, None], size=(20, 20), mode="bilinear", align_corners=False)[:, 0]
    maps = cam_from(act, gradient, (20, 20))
    torch.testing.assert_close(maps, normalize_maps(cam), atol=1e-5, rtol=0)
    assert maps.shape == (4, 20, 20) and maps.min() >= 0 and maps.max() <= 1
    # grad_cam is this formula on autograd's gradient, to the bit
    act = model.features(images)
    (gradient,) = torch.autograd.grad(model.fc(act.mean(dim=(2, 3))).gather(1, target[:, None]).sum(), [act])
    assert torch.equal(cam_from(act, gradient, (20, 20)), grad_cam(model, images, "features", target))


def test_cam_from_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"one shape \(N, C, H, W\), got \(2, 4, 5, 5\) and \(2, 4, 5\)"):
        cam_from(torch.rand(2, 4, 5, 5), torch.rand(2, 4, 5), (10, 10))


def _captum_reference(model: nn.Module, images: torch.Tensor, layer: nn.Module, target: torch.Tensor) -> torch.Tensor:
    attr = LayerGradCam(model, layer).attribute(images, target=target, relu_attributions=True)
    up = LayerAttribution.interpolate(attr, images.shape[-2:], interpolate_mode="bilinear")
    return normalize_maps(up[:, 0].detach())


@pytest.mark.parametrize(
    ("builder", "layer", "size"),
    [
        (torchvision.models.resnet18, "layer4", 64),
        (torchvision.models.resnet18, "layer3.1.conv2", 64),
        (torchvision.models.vgg11_bn, "features.24", 64),  # last conv, BatchNorm and in-place ReLU follow
        (torchvision.models.alexnet, "features.10", 96),  # an in-place ReLU overwrites this conv's output
        (torchvision.models.alexnet, "features.6", 96),
    ],
)
def test_grad_cam_agrees_with_captum(builder, layer: str, size: int) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = builder(weights=None, num_classes=10).eval()
    images = torch.randn(3, 3, size, size)
    target = torch.tensor([1, 4, 7])
    ours = grad_cam(model, images, layer, target)
    reference = _captum_reference(model, images, resolve_layer(model, layer)[1], target)
    assert ours.abs().sum() > 0, "all-zero maps prove nothing"
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_in_place_relu_layer_differs_from_naive_hooking() -> None:
    """The map at alexnet features.10 is not the map at features.11 (what a hook that keeps the overwritten
    activation computes)."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None, num_classes=10).eval()
    images = torch.randn(2, 3, 96, 96)
    before = grad_cam(model, images, "features.10", 3)
    after = grad_cam(model, images, "features.11", 3)
    assert (before - after).abs().max() > 1e-2


def test_default_target_is_predicted_class() -> None:
    torch.manual_seed(0)
    model = ConvGapLinear().eval()
    images = torch.randn(3, 3, 20, 20)
    torch.testing.assert_close(
        grad_cam(model, images, "features"), grad_cam(model, images, "features", model(images).argmax(1))
    )


def test_grad_cam_leaves_no_grad_and_no_hooks() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    grad_cam(model, torch.randn(2, 3, 64, 64), "layer4")
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_grad_cam_runs_under_inference_mode_when_isolated() -> None:
    from lightning_viz.methods import isolated

    torch.manual_seed(0)
    model = ConvGapLinear()
    images = torch.randn(2, 3, 20, 20)
    expected = grad_cam(model.eval(), images, "features")
    model.train()
    with torch.inference_mode():
        inference_images = images.clone()
        with isolated(model):
            maps = grad_cam(model, inference_images, "features")
    torch.testing.assert_close(maps, expected)
    assert model.training


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        (torchvision.models.resnet18, "layer4"),
        (torchvision.models.vgg11, "features.19"),
        (torchvision.models.alexnet, "features.11"),
    ],
)
def test_default_cam_layer(builder, expected: str) -> None:  # type: ignore[no-untyped-def]
    model = builder(weights=None, num_classes=10).eval()
    assert default_cam_layer(model, torch.randn(1, 3, 64, 64)) == expected


def test_stage_layers_are_feature_maps_not_channels_last_tensors_inside_blocks() -> None:
    # ConvNeXt's blocks permute to (N, H, W, C) for their LayerNorm and Linear layers; read as (N, C, H, W) those
    # outputs had grids of (W, C), 2x3072 at 64 px, and the deconvnet monitor traced 3,074 "positions" at step 0
    model = torchvision.models.convnext_tiny(weights=None, num_classes=6).eval()
    images = torch.randn(1, 3, 64, 64)
    assert stage_layers(model, images) == ["features.1", "features.3", "features.5", "features"]
    assert default_cam_layer(model, images) == "features"
    # a non-square input keeps its feature maps
    assert stage_layers(torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, 64, 48)) == [
        "relu",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        # a bottleneck's 1x1 convolution and BatchNorm run at layer1's grid before its strided 3x3: they open layer2
        # (so layer2.0.bn1, layer3.0.bn1 and layer4.0.bn1 are not stage ends: layer1-layer3 are)
        (torchvision.models.resnet50, ["relu", "layer1", "layer2", "layer3", "layer4"]),
        # an inverted residual's expansion runs before its strided depthwise convolution (not features.2.conv.0, ...)
        (torchvision.models.mobilenet_v2, ["features.1", "features.3", "features.6", "features.13", "features"]),
        # a ShuffleNet unit's first branch downsamples before its second has run at the old grid: the stage is the
        # stage, not a branch (not stage3.0.branch2.2, stage3, stage4.0.branch1, stage4.0.branch2.2, conv5)
        (torchvision.models.shufflenet_v2_x0_5, ["conv1", "stage2.0.branch2.2", "stage2", "stage3", "conv5"]),
        (torchvision.models.regnet_x_400mf, ["stem", *(f"trunk_output.block{i}" for i in (1, 2, 3)), "trunk_output"]),
    ],
)
def test_stage_layers_end_each_stage_before_the_block_that_downsamples(builder, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert stage_layers(builder(weights=None, num_classes=6).eval(), torch.randn(1, 3, 64, 64)) == expected


def test_unknown_layer_lists_close_matches() -> None:
    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match=r"unknown layer 'layer5'.*layer4"):
        grad_cam(model, torch.randn(1, 3, 32, 32), "layer5")


def test_no_conv_layer_is_refused() -> None:
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        default_cam_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.randn(1, 3, 2, 2))


def test_bad_target_shape() -> None:
    with pytest.raises(ValueError, match=r"target must be None, an int or a tensor of shape \(2,\)"):
        grad_cam(ConvGapLinear(), torch.randn(2, 3, 20, 20), "features", torch.tensor([1, 2, 3]))


def test_non_logit_output_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match=r"logits of shape \(N, num_classes\)"):
        grad_cam(model, torch.randn(2, 3, 8, 8), "0")
