"""What a second thread's work costs training on this machine: training steps with and without a busy thread.

Trains the example's ShapesNet (batch 64 of 64x64 random images, SGD) for ``--steps`` steps on the main thread
while a second thread does one kind of work over and over, and prints the training's wall time, the second
thread's CPU time and their ratio: how many seconds of training each CPU second of the thread's work costs. The
kinds are what the monitors' writer thread does: drawing a Grad-CAM panel (``render``: numpy and Pillow), encoding it
as PNG (``png``: mostly C that releases the interpreter lock) and, for comparison, pure Python (``python``: holds the
lock). Each kind runs in a fresh process, in turn with a run without the thread, ``--repeats`` times.

    python benchmarks/writer_contention.py                 # all kinds, 2 repeats
    python benchmarks/writer_contention.py --kinds render --steps 200
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import threading
import time

KINDS = ("render", "png", "python")


def run(kind: str, steps: int) -> tuple[float, float]:
    """Training wall time and the thread's CPU time for one kind ("none": no thread)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from lightning_viz.demos import ShapesNet
    from lightning_viz.render import overlay, tile_panel

    torch.manual_seed(0)
    model = ShapesNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 3, 64, 64), torch.randint(0, 6, (64,))
    rng = np.random.default_rng(0)
    images = rng.random((16, 3, 64, 64), dtype=np.float32)
    maps = [rng.random((16, 64, 64), dtype=np.float32) for _ in range(2)]
    captions = [["true: disk/fine", "pred: disk/fine\np=0.93", "true: disk/fine\np=0.93"]] * 16

    def panel() -> np.ndarray:
        overlays = [overlay(images, m) for m in maps]
        return tile_panel([[images[i], *(o[i] for o in overlays)] for i in range(16)], captions)

    drawn = panel()
    stop, cpu = threading.Event(), [0.0]

    def work() -> None:
        start = time.thread_time()
        while not stop.is_set():
            if kind == "render":
                panel()
            elif kind == "png":
                Image.fromarray(drawn).save(io.BytesIO(), format="PNG", compress_level=1, compress_type=3)
            else:
                sum(i * i for i in range(20_000))
            time.sleep(0.001)
        cpu[0] = time.thread_time() - start

    thread = threading.Thread(target=work, daemon=True) if kind != "none" else None
    for _ in range(5):  # warm-up
        F.cross_entropy(model(x), y).backward()
    if thread is not None:
        thread.start()
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    wall = time.perf_counter() - start
    stop.set()
    if thread is not None:
        thread.join()
    return wall, cpu[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one kind in this process and print its numbers
    args = parser.parse_args()
    if args.one:
        print(*run(args.one, args.steps))
        return

    def measure(kind: str) -> tuple[float, float]:
        out = subprocess.run(
            [sys.executable, __file__, "--one", kind, "--steps", str(args.steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        wall, cpu = out.stdout.split()[-2:]
        return float(wall), float(cpu)

    print(f"{args.steps} training steps of ShapesNet (batch 64, 64x64) on the main thread; {args.repeats} repeats")
    print("| thread's work | training alone (s) | with the thread (s) | thread CPU (s) | lost per CPU second |")
    print("| --- | --- | --- | --- | --- |")
    for kind in args.kinds:
        alone, busy, cpus, ratios = [], [], [], []
        for _ in range(args.repeats):
            wall_alone, _ = measure("none")
            wall_busy, cpu = measure(kind)
            alone.append(wall_alone)
            busy.append(wall_busy)
            cpus.append(cpu)
            ratios.append((wall_busy - wall_alone) / cpu if cpu > 0 else float("nan"))
        medians = " | ".join(f"{statistics.median(v):.2f}" for v in (alone, busy, cpus, ratios))
        print(f"| {kind} | {medians} ({min(ratios):.2f}..{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
