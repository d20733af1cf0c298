"""The worlds the verdicts are validated in: architectures x data x optimizers, for benchmarks/diagnosis_study.py.

A world is an (architecture, data, optimizer) triple. Every architecture takes the first layer's kernel size and
stride as arguments, so the study can train counterfactual pairs (the same net with the stride halved, with a
smaller or larger kernel). Nothing here is part of the package: scikit-image and scikit-learn are needed only for
the natural images (``pip install -e ".[study]"``), and nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import Tensor, nn
from torch.utils.data import Dataset

from lightning_viz.data import SHAPES_MEAN, SHAPES_STD, Shapes, ShapesStyle

# -- data ------------------------------------------------------------------------------------------------------------

# Variants of the embedded dataset: smaller and larger objects, other grating frequencies, another background.
SHAPES_STYLES = {
    "shapes": ShapesStyle(),
    "shapes-small": ShapesStyle(radius_range=(5.0, 9.0), frequencies=(1 / 6, 1 / 2.5), background_contrast=(0.1, 0.2)),
    "shapes-large": ShapesStyle(
        radius_range=(14.0, 22.0), frequencies=(1 / 12, 1 / 4), background_contrast=(0.04, 0.1)
    ),
}

# Photographs and textures that scikit-image and scikit-learn ship inside their wheels (no download): one class each.
_SKIMAGE_FILES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "brick.png",
                  "grass.png", "gravel.png")  # fmt: skip


def _natural_sources() -> list[Tensor]:
    import os

    import numpy as np
    import skimage
    from skimage.io import imread
    from sklearn.datasets import load_sample_images

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    arrays = [imread(os.path.join(folder, name)) for name in _SKIMAGE_FILES] + list(load_sample_images().images)
    sources = []
    for array in arrays:
        image = torch.from_numpy(np.array(array, copy=True)).float() / 255.0  # a writable copy
        image = image[..., None].expand(*image.shape, 3) if image.dim() == 2 else image[..., :3]
        sources.append(image.permute(2, 0, 1).contiguous())
    return sources


class NaturalCrops(Dataset[tuple[Tensor, Tensor]]):
    """Random 64x64 crops of ten photographs and textures; the label says which picture a crop comes from.

    Each crop is taken at a random position, at a random scale (the picture downsampled by 1 to 2.5 first), flipped
    at random and given a random brightness and contrast, so the net must learn the pictures' texture and colour
    statistics, which are those of natural images (about 1/f^2), not one fixed patch.
    """

    def __init__(self, size: int, seed: int, image_size: int = 64) -> None:
        generator = torch.Generator().manual_seed(seed)
        sources = _natural_sources()
        self.classes = [name.split(".")[0] for name in _SKIMAGE_FILES] + ["china", "flower"]
        self.targets = torch.arange(size) % len(sources)
        self.targets = self.targets[torch.randperm(size, generator=generator)]
        images = torch.empty(size, 3, image_size, image_size)
        for i, label in enumerate(self.targets.tolist()):
            source = sources[label]
            scale = 1.0 + 1.5 * float(torch.rand((), generator=generator))
            h, w = source.shape[-2:]
            side = min(int(image_size * scale), h, w)
            y = int(torch.randint(0, h - side + 1, (), generator=generator))
            x = int(torch.randint(0, w - side + 1, (), generator=generator))
            crop = F.interpolate(source[None, :, y : y + side, x : x + side], size=image_size, mode="area")[0]
            if bool(torch.rand((), generator=generator) < 0.5):
                crop = crop.flip(-1)
            gain = 0.7 + 0.6 * float(torch.rand((), generator=generator))
            offset = 0.2 * (float(torch.rand((), generator=generator)) - 0.5)
            images[i] = (crop * gain + offset).clamp(0, 1)
        mean = torch.tensor(SHAPES_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(SHAPES_STD).view(1, 3, 1, 1)
        self.images = (images - mean) / std

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.targets[index]


def make_data(name: str, size: int, seed: int) -> Dataset:  # type: ignore[type-arg]
    """``"natural"`` or a key of SHAPES_STYLES."""
    if name == "natural":
        return NaturalCrops(size, seed)
    return Shapes(size, seed=seed, style=SHAPES_STYLES[name])


def num_classes(name: str) -> int:
    return 10 if name == "natural" else 3 * len(SHAPES_STYLES[name].frequencies)


# -- architectures ---------------------------------------------------------------------------------------------------


class ZFNet(nn.Module):
    """The example's ZF-style net: conv1 (k, s, 32) -> maxpool 3/2 -> 3x3 conv 64 -> maxpool -> 3x3 conv 64 -> GAP."""

    def __init__(self, kernel: int, stride: int, classes: int, batch_norm: bool = False) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if batch_norm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(3, 32, kernel, stride, padding=kernel // 2)
        self.bn1, self.relu1, self.pool1 = norm(32), nn.ReLU(), nn.MaxPool2d(3, 2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2, self.relu2, self.pool2 = norm(64), nn.ReLU(), nn.MaxPool2d(3, 2)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.bn3, self.relu3 = norm(64), nn.ReLU()
        self.fc = nn.Linear(64, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.fc(x.mean(dim=(2, 3)))


def vgg_net(kernel: int, stride: int, classes: int) -> nn.Sequential:
    """A VGG-style ``nn.Sequential`` with in-place ReLUs, as torchvision's VGG: two convolutions per stage."""
    return nn.Sequential(
        nn.Conv2d(3, 32, kernel, stride, padding=kernel // 2), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, classes),
    )  # fmt: skip


def resnet18_net(kernel: int, stride: int, classes: int) -> nn.Module:
    """torchvision's resnet18 (weights=None, BatchNorm, residual adds, a ReLU module reused) with its first
    convolution set to ``kernel``/``stride``; at 64x64 its last stage is 2x2."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=classes)
    net.conv1 = nn.Conv2d(3, 64, kernel, stride, padding=kernel // 2, bias=False)
    return net


def mobilenet_net(kernel: int, stride: int, classes: int) -> nn.Module:
    """torchvision's mobilenet_v3_small (weights=None: depthwise convolutions, hard-swish, squeeze-excitation,
    BatchNorm) with its first convolution set to ``kernel``/``stride``."""
    from torchvision.models import mobilenet_v3_small

    net = mobilenet_v3_small(weights=None, num_classes=classes)
    net.features[0][0] = nn.Conv2d(3, 16, kernel, stride, padding=kernel // 2, bias=False)
    return net


ARCHITECTURES = {
    "zf": lambda k, s, c: ZFNet(k, s, c),
    "zf-bn": lambda k, s, c: ZFNet(k, s, c, batch_norm=True),
    "vgg": vgg_net,
    "resnet18": resnet18_net,
    "mobilenet": mobilenet_net,
}

# -- optimizers and the LightningModule ------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr),
}


class Classifier(LightningModule):
    """Cross-entropy training of any net with any of OPTIMIZERS; batches are (images, labels[, masks])."""

    def __init__(self, net: nn.Module, optimizer: str, lr: float) -> None:
        super().__init__()
        self.net, self.optimizer, self.lr = net, optimizer, lr

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss = F.cross_entropy(self(batch[0]), batch[1])
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return OPTIMIZERS[self.optimizer](self.parameters(), self.lr)


class BlurPool(nn.Module):
    """A fixed binomial low-pass per channel, then subsampling by ``stride`` (Zhang 2019, "Making Convolutional
    Networks Shift-Invariant Again"): what a strided convolution becomes when it is anti-aliased."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        taps = torch.tensor([math.comb(stride, i) for i in range(stride + 1)], dtype=torch.float32)
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("kernel", (kernel / kernel.sum()).expand(channels, 1, *kernel.shape).contiguous())
        self.stride, self.channels = stride, channels

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel.shape[-1]
        x = F.pad(x, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), mode="reflect")
        return F.conv2d(x, self.kernel, stride=self.stride, groups=self.channels)


def anti_aliased(net: nn.Module) -> nn.Module:
    """The same net with its first convolution anti-aliased: evaluated at stride 1, blurred, then subsampled by
    its stride. The output grid and everything after it are unchanged; only the aliasing of the first layer goes."""
    name, conv = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    stride = conv.stride[0]
    dense = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, 1, conv.padding, bias=conv.bias is not None
    )
    parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
    setattr(parent, name.rsplit(".", 1)[-1], nn.Sequential(dense, BlurPool(conv.out_channels, stride)))
    return net


@dataclass(frozen=True)
class World:
    """An (architecture, data, optimizer) triple and the first layer it is studied around."""

    name: str
    arch: str
    data: str
    optimizer: str
    kernel: int
    stride: int

    def net(self, kernel: int | None = None, stride: int | None = None, anti_alias: bool = False) -> nn.Module:
        net = ARCHITECTURES[self.arch](kernel or self.kernel, stride or self.stride, num_classes(self.data))
        return anti_aliased(net) if anti_alias else net
