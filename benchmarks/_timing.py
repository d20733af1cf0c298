"""Shared by the benchmark scripts: a median wall time, and the bare training step every cost is compared with."""

from __future__ import annotations

import datetime
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


def median_ms(fn: Callable[[], object], repeats: int = 15, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def bare_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """A bare forward + backward (cross-entropy, parameter gradients): the unit every cost is divided by."""

    def run() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()

    return run


def write_result(out: Path, title: str, packages: list[str], timing: str, tables: list[str]) -> None:
    """A result file: its title, the command that wrote it, the date, the versions of torch, torchvision and
    ``packages``, the thread count, ``timing`` (how each row is timed), then the tables."""
    versions = ", ".join(f"{name} {version(name)}" for name in packages)
    text = "\n".join(
        [
            f"# {title}",
            "",
            f"Written by `{shlex.join(['python', *sys.argv])}` (what each row times: its docstring).",
            "",
            f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}, {versions}; CPU, {torch.get_num_threads()} threads",
            f"- {timing}",
            "",
            "\n\n".join(tables),
            "",
        ]
    )
    out.write_text(text)
    print(f"\nwritten to {out}")
