"""Real model shapes from invariant 3: torch.compile'd modules and half-precision parameters."""

from __future__ import annotations

import torch
from conftest import AwkwardNet

from lightning_viz.methods import grad_cam, isolated


def test_compiled_module_is_probed_eagerly_by_its_plain_layer_names() -> None:
    torch.manual_seed(0)
    net = AwkwardNet().eval()
    images = torch.randn(3, 3, 16, 16)
    expected = grad_cam(net, images, "conv3")
    holder = torch.nn.Sequential(torch.compile(net, backend="eager"))  # a compiled submodule: "0._orig_mod.conv3"
    holder(images)  # compile once, as training would have
    with isolated(holder):
        maps = grad_cam(holder, images, "0.conv3")
    torch.testing.assert_close(maps, expected)


def test_bfloat16_parameters() -> None:
    torch.manual_seed(0)
    net = AwkwardNet().eval()
    images = torch.randn(4, 3, 16, 16)
    reference = grad_cam(net, images, "conv3")
    maps = grad_cam(net.to(torch.bfloat16), images.to(torch.bfloat16), "conv3")
    assert maps.dtype == torch.float32 and maps.min() >= 0 and maps.max() <= 1
    assert torch.corrcoef(torch.stack([maps.flatten(), reference.flatten()]))[0, 1] > 0.95
