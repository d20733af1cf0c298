"""What the default monitor suite costs in training time: bare and monitored ``trainer.fit`` runs, interleaved.

For each workload it trains the same model from the same seed with a real ``Trainer`` (TensorBoardLogger, no
progress bar, summary or checkpointing, ``log_every_n_steps=10``, ``max_steps``) in one process, alternating
bare, suite, bare, suite, ... (``--repeats`` pairs, after an untimed bare and suite warm-up of a few steps), where
the suite is the README's default usage, every argument left at its default:

    [GradCAMMonitor(), DeconvNetMonitor(), FilterMonitor(), TrainingDiagnostics(), ExplanationQualityMonitor()]

Each round runs the bare fit and then one suite fit per ``--budgets`` value; each budget's pairs are (the round's
bare run, its suite run). Each run starts with ``seed_everything(0)`` and a fresh model, so the runs differ only in
the callbacks (the bare run keeps the TensorBoardLogger). It reports the median wall time of ``trainer.fit`` bare
and with the suite, the overhead (suite / bare - 1) with its spread over the pairs, the overhead within runs (each
run's time beyond its own median training step, suite minus bare: the machine's speed drifted 10-20 % between runs
here, which the first ratio counts as cost), the probe steps the suite made (the steps of its ``viz/overhead_ms/*``
scalars), the probe time the monitors logged themselves, the event-file bytes per probe step (suite minus bare) and
whether both runs end with the same weights. Any ``viz/budget*`` scalar the suite logs is printed too.

Workloads:
  - ``example``: ShapesNet (lightning_viz.demos, the example's net) on Shapes(6000, seed=0), batch 64 shuffled,
    validated on Shapes(1000, seed=10_000) batch 256, as in the example; 1,000 steps.
  - ``shapes_b32``: the same net on Shapes(3000, seed=0), batch 32 shuffled, no validation loop; 1,500 steps.
  - ``resnet18``: torchvision resnet18 (weights=None, 6 classes) on the 64x64 Shapes images, batch 64 shuffled,
    SGD lr 0.02 momentum 0.9, no validation loop (the probe comes from the train loader); 300 steps.
  - ``resnet50``: the same with resnet50 and the images (and masks) upsampled to 224x224 when batched; 300 steps,
    only on CUDA.

    python benchmarks/overhead.py                          # every workload (resnet50 on CUDA only), budgets
                                                           # 0.05, 0.02 and none; writes overhead_<workload>.md
    python benchmarks/overhead.py --workloads example --steps 500 --repeats 5 --device cpu
    python benchmarks/overhead.py --quick                  # 60 steps, one pair: a smoke test that only prints

On a busy CPU machine, ``--threads 1`` keeps the timings usable: torch's compute threads wait for each other at
every operation, so one descheduled thread stalls them all (bare runs measured 2-10x slower, at random).

Needs tensorboard and torchvision (both installed with the package).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from pytorch_lightning import Callback, LightningModule, Trainer, seed_everything
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor
from torch.utils.data import DataLoader, default_collate

from lightning_viz import (
    DeconvNetMonitor,
    ExplanationQualityMonitor,
    FilterMonitor,
    GradCAMMonitor,
    TrainingDiagnostics,
)
from lightning_viz.data import Shapes
from lightning_viz.demos import ShapesNet

DEFAULT_STEPS = {"example": 1000, "shapes_b32": 1500, "resnet18": 300, "resnet50": 300}
WARMUP_STEPS = 10
OVERHEAD_TAG = "viz/overhead_ms/"
PROBE_STEP_TAG = OVERHEAD_TAG + "probe_step"
BUDGET_TAG = "viz/budget"
SPENT_TAG = "viz/budget/spent_s"
BUSY_LOAD = 0.5  # a 1-minute load average above this before the runs: something else is running

Batch = tuple[Tensor, Tensor, Tensor]


def quiet() -> None:
    """Silence Lightning's advice that does not apply to a benchmark, and its per-Trainer banners; nothing else."""
    for message in (
        r".*does not have many workers",
        r".*The number of training batches .* is smaller than the logging interval",
        r".*GPU available but not used",
        r".*`isinstance\(treespec, LeafSpec\)` is deprecated",
        r".*pkg_resources is deprecated",
    ):
        warnings.filterwarnings("ignore", message=message)
    # "GPU available: ...", "`Trainer.fit` stopped: `max_steps=N` reached." and the CUDA_VISIBLE_DEVICES line
    for name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


class TorchvisionClassifier(LightningModule):
    """A torchvision classifier (no pretrained weights) trained with SGD and cross-entropy."""

    def __init__(self, arch: str, num_classes: int = 6, lr: float = 0.02) -> None:
        super().__init__()
        self.lr = lr
        self.net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.net(x)
        return logits

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, labels, _ = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


@functools.cache
def shapes(size: int, seed: int) -> Shapes:
    """The Shapes data set, generated once per process."""
    return Shapes(size, seed=seed)


def upsampled_collate(size: int) -> Callable[[list[Batch]], Batch]:
    """A collate function that resizes images (bilinear) and masks (nearest) to ``size`` x ``size``."""

    def collate(samples: list[Batch]) -> Batch:
        images, labels, masks = default_collate(samples)
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        masks = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0] > 0.5
        return images, labels, masks

    return collate


@dataclass(frozen=True)
class Workload:
    name: str
    model: Callable[[], LightningModule]
    loaders: Callable[[], tuple[DataLoader[Batch], DataLoader[Batch] | None]]


def example_loaders() -> tuple[DataLoader[Batch], DataLoader[Batch] | None]:
    return DataLoader(shapes(6000, 0), batch_size=64, shuffle=True), DataLoader(shapes(1000, 10_000), batch_size=256)


def small_batch_loaders() -> tuple[DataLoader[Batch], DataLoader[Batch] | None]:
    return DataLoader(shapes(3000, 0), batch_size=32, shuffle=True), None


def resnet_loaders(size: int | None) -> tuple[DataLoader[Batch], DataLoader[Batch] | None]:
    collate = None if size is None else upsampled_collate(size)
    return DataLoader(shapes(6000, 0), batch_size=64, shuffle=True, collate_fn=collate), None


WORKLOADS = {
    "example": Workload("example", ShapesNet, example_loaders),
    "shapes_b32": Workload("shapes_b32", ShapesNet, small_batch_loaders),
    "resnet18": Workload("resnet18", lambda: TorchvisionClassifier("resnet18"), lambda: resnet_loaders(None)),
    "resnet50": Workload("resnet50", lambda: TorchvisionClassifier("resnet50"), lambda: resnet_loaders(224)),
}


MONITORS = (GradCAMMonitor, DeconvNetMonitor, FilterMonitor, TrainingDiagnostics, ExplanationQualityMonitor)


def suite(budget: float | None) -> list[Any]:
    """The README's default usage: all five monitors, every argument at its default but ``budget`` (Lightning
    callbacks at run time, typed on no Lightning base)."""
    return [monitor(budget=budget) for monitor in MONITORS]


RENDER_TAG = "viz/render_ms/"


def cost_table(run: Run, phases: dict[str, Callable[[int], bool]]) -> dict[str, dict[str, float]]:
    """Seconds of the suite's work by kind and phase: each monitor's regular probes (``viz/overhead_ms/<Monitor>``,
    with its share of the shared forward pass) and expensive parts (``.../<Monitor>/<part>``) on the training thread,
    the rest of each probe step (``probe_step`` less the monitors: the isolation, the non-finite check) and the writer
    thread's CPU time drawing and writing each monitor's panels (``viz/render_ms/<Monitor>``, with its expensive
    parts' panels; on a CPU it costs training about as much: ``benchmarks/writer_contention.py``)."""
    table: dict[str, dict[str, float]] = {}
    monitors_at: dict[int, float] = {}

    def add(row: str, step: int, ms: float) -> None:
        phase = next((name for name, test in phases.items() if test(step)), None)
        if phase is not None:
            cells = table.setdefault(row, {})
            cells[phase] = cells.get(phase, 0.0) + ms / 1000

    for tag, points in sorted(run.scalars.items()):
        name = tag[len(OVERHEAD_TAG) :]
        if tag.startswith(OVERHEAD_TAG) and name != "probe_step" and name.count("/") <= 1:
            kind = "regular probe" if "/" not in name else "expensive part"
            for step, ms in points:
                add(f"{name} ({kind})", step, ms)
                monitors_at[step] = monitors_at.get(step, 0.0) + ms
        elif tag.startswith(RENDER_TAG):
            for step, ms in points:
                add(f"writer: {tag[len(RENDER_TAG) :]}", step, ms)
    for step, ms in run.scalars.get(PROBE_STEP_TAG, []):
        add("rest of the probe step: isolation, checks", step, max(0.0, ms - monitors_at.get(step, 0.0)))
    return table


def widest_gap(run: Run, after: int = 100) -> int | None:
    """The most optimizer steps any monitor went without a regular probe after step ``after`` (its
    ``viz/overhead_ms/<Monitor>`` steps; the run's end counts as a probe)."""
    gaps = []
    for tag, points in run.scalars.items():
        name = tag[len(OVERHEAD_TAG) :]
        if not tag.startswith(OVERHEAD_TAG) or "/" in name or name == "probe_step":
            continue
        steps = sorted({step for step, _ in points if step >= after})
        if steps:
            gaps.append(max(b - a for a, b in zip([after, *steps], steps, strict=False)))
    return max(gaps) if gaps else None


@dataclass
class Run:
    seconds: float
    event_bytes: int
    scalars: dict[str, list[tuple[int, float]]]
    checksum: float
    typical_step: float  # the median time between the starts of two training batches

    def excess(self, steps: int) -> float:
        """Seconds of the fit beyond ``steps`` typical steps: setup, validation, probes, the writer's work."""
        return self.seconds - steps * self.typical_step


class StepClock(Callback):
    """The start time of every training batch (the same callback in the bare and the monitored runs)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.starts.append(time.perf_counter())

    def typical(self) -> float:
        return statistics.median(b - a for a, b in zip(self.starts, self.starts[1:], strict=False))


def event_files(log_dir: Path) -> list[Path]:
    return sorted(log_dir.rglob("events.out.tfevents.*"))


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's event files, by tag, as (step, value) pairs."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in event_files(log_dir):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0}).Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return scalars


def fit(workload: Workload, steps: int, device: str, monitored: bool, budget: float | None = 0.05) -> Run:
    """One seeded training run of ``steps`` optimizer steps, timed around ``trainer.fit``."""
    seed_everything(0, verbose=False)
    model = workload.model()
    train, val = workload.loaders()
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        logger = TensorBoardLogger(tmp)
        trainer = Trainer(
            accelerator=device,
            devices=1,
            logger=logger,
            callbacks=[*(suite(budget) if monitored else []), clock],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            log_every_n_steps=10,
            max_steps=steps,
        )
        start = time.perf_counter()
        trainer.fit(model, train, val)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        log_dir = Path(logger.log_dir)
        event_bytes = sum(path.stat().st_size for path in event_files(log_dir))
        scalars = read_scalars(log_dir)
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    return Run(seconds, event_bytes, scalars, checksum, clock.typical() if len(clock.starts) > 1 else seconds / steps)


def within_run(bare: Run, monitored: Run, steps: int) -> float:
    """The suite's cost measured against each run's own typical step: (the suite run's excess over its typical steps
    - the bare run's) / the bare run's typical steps. The machine's speed drifts between runs (bare runs of one
    benchmark measured 41-49 s), which the ratio of the two totals takes for the suite's cost; a training step that
    no probe touches measured the same with and without the suite, so each run's median step is its own yardstick."""
    return (monitored.excess(steps) - bare.excess(steps)) / (steps * bare.typical_step)


def probe_steps(run: Run) -> list[int]:
    """The steps at which any monitor probed: those of its ``viz/overhead_ms/*`` scalars."""
    return sorted({step for tag, points in run.scalars.items() if tag.startswith(OVERHEAD_TAG) for step, _ in points})


def logged_probe_seconds(run: Run) -> float:
    """The probe time the monitors logged, summed over steps: ``viz/overhead_ms/probe_step`` (all monitors of a
    step together) where it is logged, else ``viz/overhead_ms/<Monitor>`` (not its parts) summed over monitors."""
    tags = [PROBE_STEP_TAG] if PROBE_STEP_TAG in run.scalars else []
    tags = tags or [tag for tag in run.scalars if tag.startswith(OVERHEAD_TAG) and "/" not in tag[len(OVERHEAD_TAG) :]]
    return sum(value for tag in tags for _, value in run.scalars[tag]) / 1000


@dataclass
class Result:
    workload: str
    steps: int
    budget: float | None
    bare: list[Run]
    monitored: list[Run]

    def probes_per_monitor(self) -> str:
        """How many regular probes each monitor made (the steps of its ``viz/overhead_ms/<Monitor>``), first run."""
        counts = []
        for monitor in MONITORS:
            points = self.monitored[0].scalars.get(OVERHEAD_TAG + monitor.__name__, [])
            counts.append(f"{monitor.__name__.removesuffix('Monitor')} {len({step for step, _ in points})}")
        return ", ".join(counts)

    def row(self) -> list[str]:
        pairs = list(zip(self.bare, self.monitored, strict=True))
        bare = statistics.median(r.seconds for r in self.bare)
        monitored = statistics.median(r.seconds for r in self.monitored)
        ratios = [m.seconds / b.seconds - 1 for b, m in pairs]
        within = [within_run(b, m, self.steps) for b, m in pairs]
        probes = len(probe_steps(self.monitored[0]))
        extra = statistics.median(m.event_bytes - b.event_bytes for b, m in pairs)
        logged = statistics.median(logged_probe_seconds(r) for r in self.monitored)
        same = all(b.checksum == m.checksum for b, m in pairs)
        gap = widest_gap(self.monitored[0])
        counted = [
            max(r.scalars[SPENT_TAG])[1] / (self.steps * b.typical_step) for b, r in pairs if SPENT_TAG in r.scalars
        ]
        return [
            self.workload,
            str(self.steps),
            "none" if self.budget is None else f"{self.budget:g}",
            str(len(self.bare)),
            f"{bare:.1f}",
            f"{monitored:.1f}",
            f"{100 * (monitored / bare - 1):+.0f}%",
            f"{100 * min(ratios):+.0f}%..{100 * max(ratios):+.0f}%",
            f"{100 * statistics.median(within):+.1f}% ({100 * min(within):+.1f}%..{100 * max(within):+.1f}%)",
            f"{100 * statistics.median(counted):.1f}%" if counted else "-",
            str(probes),
            self.probes_per_monitor(),
            "-" if gap is None else str(gap),
            f"{logged:.1f}",
            f"{extra / probes / 1024:.0f} KiB" if probes else "-",
            "yes" if same else "no",
        ]

    def accounting(self) -> list[str]:
        """Where the suite's time went, from the monitors' own scalars (median over the suite runs): a markdown table
        of seconds per kind of work and phase of the fit, and each kind's share of the bare run's training time."""
        final = max(probe_steps(self.monitored[0]), default=0)
        phases: dict[str, Callable[[int], bool]] = {
            "step 0": lambda s: s == 0,
            "steps 1-99": lambda s: 0 < s < 100,
            f"steps 100-{final - 1}": lambda s: 100 <= s < final,
            f"final ({final})": lambda s: s == final,
        }
        per_run = [cost_table(run, phases) for run in self.monitored]
        rows = list(dict.fromkeys(row for table in per_run for row in table))
        training = self.steps * statistics.median(r.typical_step for r in self.bare)
        lines = [
            f"Where the suite's time went ({self.workload}, seconds, median of the suite runs; share: of the bare "
            f"run's {self.steps} steps at its median step time, {training:.1f} s):",
            "",
            "| work | " + " | ".join(phases) + " | total | share |",
            "| --- " * (len(phases) + 3) + "|",
        ]
        for row in rows:
            cells = [statistics.median(t.get(row, {}).get(phase, 0.0) for t in per_run) for phase in phases]
            total = statistics.median(sum(t.get(row, {}).values()) for t in per_run)
            lines.append(f"| {row} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {total:.2f} | "
                         f"{100 * total / training:.1f}% |")  # fmt: skip
        return lines

    def budget_lines(self) -> list[str]:
        """The suite's ``viz/budget*`` scalars (first monitored run), one line per tag; none if it logs none."""
        scalars = self.monitored[0].scalars
        lines = []
        for tag in sorted(t for t in scalars if t.startswith(BUDGET_TAG)):
            points = ", ".join(f"{step}: {value:g}" for step, value in sorted(scalars[tag]))
            lines.append(f"- {self.workload} `{tag}` (step: value): {points}")
        return lines


HEADER = [
    "workload",
    "steps",
    "budget",
    "pairs",
    "bare median (s)",
    "suite median (s)",
    "overhead",
    "per-pair range",
    "within runs (pairs)",
    "the suite's own count",
    "probe steps",
    "regular probes per monitor",
    "widest gap after step 100",
    "probe time logged (s)",
    "event bytes / probe step",
    "same weights",
]


def table(results: list[Result]) -> str:
    rows = [HEADER, ["---"] * len(HEADER), *(result.row() for result in results)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def bench(workload: Workload, steps: int, repeats: int, device: str, budgets: list[float | None]) -> list[Result]:
    """``repeats`` rounds of a bare run followed by one suite run per budget, interleaved; each budget's pairs are
    (the round's bare run, its suite run)."""
    print(f"{workload.name}: warm-up, then {repeats} x (bare, suite at each of {budgets}) of {steps} steps", flush=True)
    fit(workload, min(steps, WARMUP_STEPS), device, monitored=False)
    fit(workload, min(steps, WARMUP_STEPS), device, monitored=True)
    results = [Result(workload.name, steps, budget, [], []) for budget in budgets]
    for pair in range(repeats):
        bare = fit(workload, steps, device, monitored=False)
        for result in results:
            result.bare.append(bare)
            result.monitored.append(fit(workload, steps, device, monitored=True, budget=result.budget))
            print(f"  round {pair + 1}, budget {result.budget}: bare {bare.seconds:.1f} s, suite "
                  f"{result.monitored[-1].seconds:.1f} s, within runs "
                  f"{100 * within_run(bare, result.monitored[-1], steps):+.1f}%", flush=True)  # fmt: skip
    return results


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine shows here, and in the timings."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def fmt_load(load: float | None) -> str:
    return "unknown" if load is None else f"{load:.2f}"


def busy_note(load: float | None) -> str | None:
    """A warning when the machine was not idle before the runs: other processes disturb wall times (and the
    process's CPU time too, as the compute threads spin while they wait for a core)."""
    if load is None or load < BUSY_LOAD:
        return None
    hint = " (or with --threads 1, which contention slows down far less)" if torch.get_num_threads() > 1 else ""
    return (f"- warning: the 1-minute load average was {load:.2f} before the runs ({os.cpu_count()} cores): other "
            f"work was running, and it disturbs the timings; rerun on an idle machine{hint}.")  # fmt: skip


def report(results: list[Result], device: str, notes: list[str], load_before: float | None) -> str:
    command = shlex.join(["python", *sys.argv])
    budget = [line for result in results for line in result.budget_lines()]
    accounting = [line for result in results for line in ["", *result.accounting()]]
    return "\n".join(
        [
            "# Training-time overhead of the default monitor suite",
            "",
            f"`{command}`",
            "",
            f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            f"- torch {torch.__version__}, device {device}: {device_name(device)}",
            f"- cores: os.cpu_count() = {os.cpu_count()}, torch.get_num_threads() = {torch.get_num_threads()}",
            f"- 1-minute load average: {fmt_load(load_before)} before the runs, {fmt_load(load_average())} after",
            "",
            table(results),
            "",
            "overhead: median suite time / median bare time - 1; per-pair range: min..max of suite / bare - 1 over "
            "the pairs; within runs: each pair's (suite fit time - its steps at its own median step time) - (the same "
            "for the bare run), over the bare run's steps at its median step time: the suite's cost with the drift of "
            "the machine's speed between runs taken out (median, min..max over the pairs); the suite's own count: what "
            "it counted against its budget at the end (`viz/budget/spent_s`) over the bare run's steps at its median "
            "step time (median run); widest gap: the most "
            "steps any monitor went without a regular probe after step 100 (the end of "
            "the run counts); probe time logged: the monitors' own `viz/overhead_ms/probe_step` (else "
            "`viz/overhead_ms/<Monitor>`) scalars summed (median run); event bytes: suite minus bare event files "
            "(median pair), per probe step; same weights: the parameters sum to the same value after the bare and "
            "the suite run of every pair.",
            *accounting,
            *([""] if budget or notes else []),
            *budget,
            *notes,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=None, help="default: all")
    parser.add_argument("--steps", type=int, default=None, help=f"steps of every workload (default {DEFAULT_STEPS})")
    parser.add_argument("--repeats", type=int, default=None, help="bare/suite pairs per workload (default 3)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if cuda else "cpu")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown report (default: benchmarks/overhead_<workload>.md, one per workload)",
    )
    parser.add_argument("--quick", action="store_true", help="60 steps, 1 pair; writes only to an explicit --out")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--budgets", nargs="+", default=["0.05", "0.02", "none"], help="the monitors' budget= values")
    args = parser.parse_args()
    budgets = [None if b.lower() == "none" else float(b) for b in args.budgets]
    if args.device == "cuda" and not cuda:
        parser.error("--device cuda: CUDA is not available")
    quiet()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    repeats = args.repeats or (1 if args.quick else 3)
    names = args.workloads or list(WORKLOADS)
    notes = []
    if "resnet50" in names and args.device != "cuda":
        names.remove("resnet50")
        notes.append("- resnet50 (224x224) skipped: it runs only on CUDA.")
        print(notes[-1][2:])
    for name in names:
        load_before = load_average()
        busy = busy_note(load_before)
        if busy is not None:
            print(busy[2:])
        steps = args.steps or (60 if args.quick else DEFAULT_STEPS[name])
        results = bench(WORKLOADS[name], steps, repeats, args.device, budgets)
        text = report(results, args.device, [*notes, *([busy] if busy else [])], load_before)
        print("\n" + text)
        here = Path(__file__).resolve().parent
        out = args.out if args.out is not None or args.quick else here / f"overhead_{name}.md"
        if out is not None:
            out.write_text(text)
            print(f"written to {out}")


if __name__ == "__main__":
    main()
