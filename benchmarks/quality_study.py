"""How robust are the explanation-quality contrasts? Train ShapesNet several times and measure, for Grad-CAM,
deconvnet and guided backpropagation, the class sensitivity against the runner-up and the least likely class, and
the randomisation similarity with only the head or every layer re-initialised, over several draws.

    python benchmarks/quality_study.py            # 4 nets, about 3 minutes on 2 CPU cores

The README's ranges come from this script.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_viz.data import Shapes
from lightning_viz.demos import ShapesNet
from lightning_viz.diagnostics import class_sensitivity, randomization_similarity
from lightning_viz.methods import deconvnet, grad_cam_maps, parametrized_layers, reinitialized

RUNS = ((3000, 4, 0), (3000, 4, 1), (3000, 4, 2), (6000, 8, 0))  # (images, epochs, seed)
DRAWS = 5


def train(size: int, epochs: int, seed: int) -> ShapesNet:
    torch.manual_seed(seed)
    net = ShapesNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    for _ in range(epochs):
        for images, labels, _ in DataLoader(Shapes(size, seed=seed), batch_size=64, shuffle=True):
            optimizer.zero_grad()
            F.cross_entropy(net(images), labels).backward()
            optimizer.step()
    return net.eval()


def maps(method: str, model: nn.Module, layer: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    if method == "gradcam":
        return next(iter(grad_cam_maps(model, images, [layer], [target])[1].values()))[0]
    return deconvnet(model, images, target=target, rule=method).abs().sum(dim=1)  # type: ignore[arg-type]


def main() -> None:
    data = Shapes(16, seed=10_000)
    images = torch.stack([data[i][0] for i in range(len(data))])
    print("| net | acc | method | cs runner-up | cs least likely | rand head (5 draws) | rand all (5 draws) |")
    print("| --- | ---: | --- | ---: | ---: | --- | --- |")
    for size, epochs, seed in RUNS:
        start = time.perf_counter()
        net = train(size, epochs, seed)
        evaluation = Shapes(1000, seed=10_000 + seed)
        with torch.no_grad():
            x = torch.stack([evaluation[i][0] for i in range(len(evaluation))])
            y = torch.tensor([evaluation[i][1] for i in range(len(evaluation))])
            accuracy = float((net(x).argmax(dim=1) == y).float().mean())
            order = net(images).argsort(dim=1, descending=True)
        predicted, runner_up, least = order[:, 0], order[:, 1], order[:, -1]
        layers = parametrized_layers(net, images)
        for method in ("gradcam", "deconvnet", "guided"):
            own = maps(method, net, net.relu3, images, predicted)
            cs_runner = class_sensitivity(own, maps(method, net, net.relu3, images, runner_up)).mean()
            cs_least = class_sensitivity(own, maps(method, net, net.relu3, images, least)).mean()
            draws: dict[str, list[float]] = {"head": [], "all": []}
            for name, chosen in (("head", layers[-1:]), ("all", layers)):
                for draw in range(DRAWS):  # seeds far from the training seeds, which would redraw the initial net
                    again = maps(method, reinitialized(net, chosen, 1000 + draw), net.relu3, images, predicted)
                    draws[name].append(float(randomization_similarity(own, again).mean()))
            head = " ".join(f"{v:+.2f}" for v in draws["head"])
            every = " ".join(f"{v:+.2f}" for v in draws["all"])
            print(f"| {size}x{epochs} seed {seed} | {accuracy:.3f} | {method} | {cs_runner:+.2f} | {cs_least:+.2f} | "
                  f"{head} | {every} |", flush=True)  # fmt: skip
        print(f"<!-- {size}x{epochs} seed {seed}: {time.perf_counter() - start:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
