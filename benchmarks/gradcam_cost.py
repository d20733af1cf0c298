"""What one Grad-CAM probe costs, measured side by side in one run.

For a batch of probe images it times (median of repeats, after warm-up):
  - a bare forward + backward of the batch (cross-entropy, parameter gradients): the unit of cost;
  - lightning_viz's grad_cam (one forward, one partial backward), and grad_cam_maps for two targets (the
    predicted and the true class, as GradCAMMonitor computes them);
  - captum's LayerGradCam and pytorch-grad-cam's GradCAM on the same model, layer and targets (their default
    use; pytorch-grad-cam leaves the model in eval mode, so it is put back in train mode between calls);
  - the monitor's panel rendering and TensorBoard's add_image + flush of that panel.

    python benchmarks/gradcam_cost.py            # the example's ShapesNet and torchvision resnet18, 16 images

Needs the bench extra: pip install -e ".[bench]".
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torchvision
from captum.attr import LayerGradCam
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import bare_step, median_ms
from train_shapes import ShapesNet

from lightning_viz import GradCAMMonitor, ProbeBatch
from lightning_viz.data import Shapes
from lightning_viz.methods import grad_cam, grad_cam_maps, isolated, resolve_layer


def bench(name: str, model: nn.Module, layer: str, probe: ProbeBatch) -> None:
    images, labels = probe.images, probe.labels
    assert labels is not None
    module = resolve_layer(model, layer)[1]

    def ours() -> None:
        with isolated(model):
            grad_cam(model, images, layer)

    def ours_two() -> None:
        with isolated(model):
            grad_cam_maps(model, images, [layer], [None, labels])

    captum = LayerGradCam(model, module)

    def captum_cam() -> None:
        model.eval()
        target = model(images).argmax(1)
        captum.attribute(images, target=target, relu_attributions=True)
        model.train()

    cam = GradCAM(model=model, target_layers=[module])

    def pgc() -> None:
        target = model.eval()(images).argmax(1).tolist()
        cam(input_tensor=images, targets=[ClassifierOutputTarget(t) for t in target])
        model.train()

    monitor = GradCAMMonitor()
    monitor.layer_names = [layer]
    with isolated(model):
        logs = monitor.compute(model, probe, 0)
    panel = logs.images[f"gradcam/{layer}"]

    def render() -> None:
        with isolated(model):
            monitor.compute(model, probe, 0)

    with tempfile.TemporaryDirectory() as logdir:
        writer = SummaryWriter(logdir)
        step = iter(range(10**6))

        def log() -> None:
            writer.add_image("gradcam/x", panel, next(step), dataformats="HWC")
            writer.flush()

        rows = {
            "bare forward+backward": median_ms(bare_step(model, images, labels)),
            "lightning_viz grad_cam (predicted class)": median_ms(ours),
            "lightning_viz grad_cam_maps (predicted + true class)": median_ms(ours_two),
            "captum LayerGradCam (predicted class)": median_ms(captum_cam),
            "pytorch-grad-cam GradCAM (predicted class)": median_ms(pgc),
            "GradCAMMonitor.compute (maps + overlays + panel)": median_ms(render),
            "SummaryWriter.add_image + flush of the panel": median_ms(log),
        }
        writer.close()
    unit = rows["bare forward+backward"]
    print(
        f"\n{name}, layer {layer!r}, {len(images)} images {tuple(images.shape[1:])}, {torch.get_num_threads()} threads"
    )
    print(f"{'':55s} {'ms':>8s} {'x bare':>8s}")
    for label, ms in rows.items():
        print(f"{label:55s} {ms:8.1f} {ms / unit:8.2f}")


def main() -> None:
    torch.manual_seed(0)
    shapes = Shapes(size=600, seed=1)
    probe = ProbeBatch.from_dataloader(torch.utils.data.DataLoader(shapes), size=16)
    bench("ShapesNet (examples/train_shapes.py, 7x7 stride 2)", ShapesNet(), "relu3", probe)
    bench(
        "torchvision resnet18 (weights=None, 6 classes)",
        torchvision.models.resnet18(weights=None, num_classes=6),
        "layer4",
        probe,
    )


if __name__ == "__main__":
    main()
