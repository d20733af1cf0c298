"""Validation study for the verdicts of TrainingDiagnostics, over several worlds (architecture x data x optimizer).

For each world (benchmarks/worlds.py):

1. a learning-rate range test: four rates, 100 steps each (50 for resnet18), no callbacks; the working rate
   is the one whose training loss over the last 20 steps is lowest;
2. runs with TrainingDiagnostics attached (probes at 0, 5, 10, 25, 50, then every 50 steps): the world's first
   layer at the working rate (two seeds, for the seed spread), at ten times and a hundredth of it, and
   counterfactuals at the working rate: the first layer anti-aliased (blurred before subsampling, Zhang 2019),
   smaller and larger kernels at the same stride (two seeds each where affordable), a kernel smaller than its
   stride;
3. held-out outcomes on 1,000 other images: accuracy, and shift consistency (mean total variation distance of the
   softmax under 1-3 px shifts, Zhang 2019) on 400 of them; the training loss at the start and the end.

Each run's truth comes from these outcomes, never from its label (see ``truths``), and each verdict's thresholds
are chosen on all worlds but one and tested on the one left out, for every world in turn (see ``fit``). The study
writes benchmarks/diagnosis_study.md (the tables) and benchmarks/diagnosis_study.json (every run's evidence), so
the analysis can be rerun without training:

    python benchmarks/diagnosis_study.py                    # all worlds, 2 processes, about 35 minutes on 2 cores
    python benchmarks/diagnosis_study.py --from-json benchmarks/diagnosis_study.json   # the analysis only
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from worlds import World  # noqa: E402

from lightning_viz.diagnostics.verdicts import (  # noqa: E402
    KernelEvidence,
    LearningRateEvidence,
    StrideEvidence,
    Thresholds,
    kernel_size_verdict,
    learning_rate_verdict,
    stride_verdict,
    unless_too_high,
)

# name, arch, data, optimizer, kernel, stride
WORLDS = [
    World("zf/shapes/sgd", "zf", "shapes", "sgd", 7, 2),
    World("zf/shapes-small/adam", "zf", "shapes-small", "adam", 7, 2),
    World("zf-bn/shapes-large/sgd", "zf-bn", "shapes-large", "sgd", 7, 2),
    World("vgg/shapes-large/sgd", "vgg", "shapes-large", "sgd", 11, 4),
    World("vgg/natural/adamw", "vgg", "natural", "adamw", 7, 2),
    World("resnet18/shapes/adamw", "resnet18", "shapes", "adamw", 7, 2),
    World("resnet18/natural/sgd", "resnet18", "natural", "sgd", 7, 2),
    World("mobilenet/natural/adam", "mobilenet", "natural", "adam", 3, 2),
]
RATES = {"sgd": (0.003, 0.01, 0.03, 0.1), "adam": (1e-4, 3e-4, 1e-3, 3e-3), "adamw": (1e-4, 3e-4, 1e-3, 3e-3)}
SLOW = {"resnet18"}  # fewer steps, so the study fits its time
# world -> more first layers at the working rate: kernel ladders at the world's stride (two seeds each, as the base),
# and first layers with a larger stride (one seed, with an anti-aliased twin)
KERNELS = {
    "zf/shapes/sgd": [(1, 2), (11, 2), (15, 2)],
    "vgg/shapes-large/sgd": [(3, 4), (7, 4)],
}
STRIDES = {  # each with its twin at half the stride (the world's own first layer where that is it)
    "zf/shapes/sgd": [(11, 4)],  # its twin 11/2 is on the kernel ladder
    "zf-bn/shapes-large/sgd": [(11, 4), (11, 2)],
    "resnet18/shapes/adamw": [(7, 4)],
}
PROBE_STEPS = (0, 5, 10, 25, 50)
EVERY = 50


def steps_for(world: World, quick: bool) -> int:
    return (60 if quick else 150) if world.arch in SLOW else (80 if quick else 300)


# -- one training run ------------------------------------------------------------------------------------------------


def train(job: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration; with ``diagnose`` read back every diagnostic scalar at every probe."""
    import torch

    torch.set_num_threads(1)
    from pytorch_lightning import Trainer, seed_everything
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader
    from worlds import Classifier, make_data

    from lightning_viz import ProbeBatch, TrainingDiagnostics
    from lightning_viz.diagnostics import shift_consistency

    world = World(**job["world"])
    seed = job["seed"]
    seed_everything(seed, workers=True)
    train_set = make_data(world.data, job["train_size"], seed)
    held_out = make_data(world.data, 1000, 20_000 + seed)
    loader = DataLoader(train_set, batch_size=64, shuffle=True, drop_last=True)
    model = Classifier(
        world.net(job["kernel"], job["stride"], job.get("anti_alias", False)), world.optimizer, job["lr"]
    )
    losses: list[float] = []
    model.on_train_batch_end = lambda outputs, batch, batch_idx: losses.append(float(outputs["loss"]))  # type: ignore[method-assign]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as logdir:
        callbacks = []
        if job["diagnose"]:
            probe = ProbeBatch.from_dataloader(DataLoader(make_data(world.data, 200, 10_000 + seed), batch_size=200))
            callbacks = [TrainingDiagnostics(probe=probe, every_n_steps=EVERY, early_steps=PROBE_STEPS)]
        trainer = Trainer(
            max_steps=job["steps"], accelerator="cpu",
            logger=TensorBoardLogger(logdir, name="run") if callbacks else False,
            callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            log_every_n_steps=EVERY,
        )  # fmt: skip
        trainer.fit(model, loader)
        series: dict[str, dict[int, float]] = {}
        texts: dict[int, str] = {}
        if callbacks:
            (path,) = glob.glob(os.path.join(logdir, "run", "version_0", "events.*"))
            events = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
            events.Reload()
            for tag in events.Tags()["scalars"]:
                if tag.startswith(("diagnostics/", "verdict/")):
                    series[tag] = {e.step: e.value for e in events.Scalars(tag)}
            for event in events.Tensors("diagnostics/verdicts/text_summary"):
                texts[event.step] = event.tensor_proto.string_val[0].decode()
    seconds = time.perf_counter() - start
    finite = all(math.isfinite(x) for x in losses) and all(bool(torch.isfinite(p).all()) for p in model.parameters())
    if finite:
        recalibrate_batch_norm(model, loader)
    model.eval()
    images = torch.stack([held_out[i][0] for i in range(len(held_out))])
    labels = torch.stack([held_out[i][1] for i in range(len(held_out))])
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).float().mean()) if finite else float("nan")
    tvd = shift_consistency(model, images[:400]) if finite else float("nan")
    return {**job, "series": series, "texts": texts, "losses": losses, "finite": finite, "accuracy": accuracy,
            "shift_tvd": tvd, "seconds": seconds}  # fmt: skip


def recalibrate_batch_norm(model: Any, loader: Any, batches: int = 30) -> None:
    """Re-estimate BatchNorm running statistics as plain averages over training batches before the held-out
    evaluation, so that the outcome reflects the trained weights: torchvision's mobilenet_v3_small updates them with
    momentum 0.01, too slowly to follow 300 steps of training. Training is over; this changes no result of it."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i == batches:
                break
            model(batch[0])


def range_jobs(worlds: list[World], quick: bool) -> list[dict[str, Any]]:
    return [{"world": asdict(w), "kind": "range", "kernel": w.kernel, "stride": w.stride, "lr": lr, "seed": 0,
             "steps": 30 if quick else (50 if w.arch in SLOW else 100), "train_size": 6000, "diagnose": False}
            for w in worlds for lr in RATES[w.optimizer]]  # fmt: skip


def working_rate(runs: list[dict[str, Any]]) -> float:
    """The rate whose mean training loss over the last 20 steps is lowest (a non-finite loss disqualifies)."""

    def score(run: dict[str, Any]) -> float:
        return statistics.fmean(run["losses"][-20:]) if run["finite"] else math.inf

    if not runs:
        raise ValueError("no range-test runs")

    return min(runs, key=score)["lr"]


def main_jobs(world: World, lr: float, quick: bool, blur: bool = False) -> list[dict[str, Any]]:
    k, s = world.kernel, world.stride
    smaller = k // 2 if (k // 2) % 2 else k // 2 + 1  # an odd kernel about half the size: 7 -> 3, 11 -> 5
    slow = world.arch in SLOW
    seeds = (0,) if slow else (0, 1)  # kernel truths compare accuracies: two seeds where affordable
    configs = [("base", k, s, lr, 0, False), ("base", k, s, lr, 1, False), ("lr x10", k, s, 10 * lr, 0, False),
               ("lr /100", k, s, lr / 100, 0, False)]  # fmt: skip
    if s > 1 and not slow:  # a stride-1 resnet18 would cost 4 times its world
        configs.append(("stride halved", k, s // 2, lr, 0, False))
    if s > 1 and blur:
        configs.append(("anti-aliased", k, s, lr, 0, True))
    if s <= smaller < k and not slow:
        configs += [("kernel smaller", smaller, s, lr, seed, False) for seed in seeds]
    configs += [(f"{kk}/{ss}", kk, ss, lr, seed, False) for kk, ss in KERNELS.get(world.name, []) for seed in seeds]
    for kk, ss in STRIDES.get(world.name, []):
        configs.append((f"{kk}/{ss}", kk, ss, lr, 0, False))
        if blur:
            configs.append((f"{kk}/{ss} anti-aliased", kk, ss, lr, 0, True))
    return [{"world": asdict(world), "kind": name, "kernel": kk, "stride": ss, "lr": rate, "seed": seed,
             "anti_alias": blur, "steps": steps_for(world, quick), "train_size": 6000, "diagnose": True}
            for name, kk, ss, rate, seed, blur in configs]  # fmt: skip


def run_all(worlds: list[World], processes: int, quick: bool, blur: bool) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes) as pool:
        ranged = pool.map(train, range_jobs(worlds, quick), chunksize=1)
        jobs = []
        for world in worlds:
            lr = working_rate([r for r in ranged if r["world"]["name"] == world.name])
            print(f"{world.name}: working rate {lr:g}", flush=True)
            jobs += main_jobs(world, lr, quick, blur)
        # the slowest first, so the two processes finish together
        jobs.sort(
            key=lambda j: (
                -j["steps"]
                * (3 if j["anti_alias"] else 4 / j["stride"] ** 2)
                * (3 if j["world"]["arch"] in SLOW else 1)
            )
        )
        runs = pool.map(train, jobs, chunksize=1)
    return ranged + runs


# -- truth from outcomes -------------------------------------------------------------------------------------------


def chance(run: dict[str, Any]) -> float:
    from worlds import num_classes

    return 1.0 / num_classes(run["world"]["data"])


def loss_drop(run: dict[str, Any]) -> float:
    """The first batch's loss minus the mean of the last 20; -inf for a diverged run."""
    if not run["finite"]:
        return -math.inf
    return run["losses"][0] - statistics.fmean(run["losses"][-20:])


def seed_spread(runs: list[dict[str, Any]]) -> float:
    """The held-out accuracy's seed-to-seed spread: the median over worlds of the difference between the working
    rate's two seeds (at least 0.02). One seed that fails in one world does not widen every comparison."""
    gaps = []
    for world in {r["world"]["name"] for r in runs}:
        bases = [r["accuracy"] for r in runs if r["world"]["name"] == world and r["kind"] == "base"]
        if len(bases) == 2:
            gaps.append(abs(bases[0] - bases[1]))
    return max(0.02, statistics.median(gaps)) if gaps else 0.02


def truths(runs: list[dict[str, Any]]) -> float:
    """Each run's truth for each verdict, from held-out outcomes and counterfactual runs (None: no clear truth);
    returns the seed spread used. Accuracies are averaged over the seeds a configuration has.

    - learning rate: ten times the working rate is too high (1) when the run diverges or gains less than half the
      working rate's held-out accuracy over chance, ok (0) when it gains at least 0.8 of it; a hundredth is too low
      (-1) when its training loss falls less than a tenth as much as the working rate's, ok when at least half as
      much; in between, no clear truth. Other runs at the working rate that gain at least 0.8 of its accuracy gain
      are ok.
    - stride, for a first layer with stride > 1 and its twin at half the stride (Zhang 2019's held-out shift
      consistency): aliasing (1) when its held-out shift TVD is at least 1.5 times and 0.01 above the twin's while
      the twin is not less accurate by more than twice the seed spread (the fix costs no accuracy); ok (0) when it
      is less than 1.25 times; unclear in between. With --anti-aliased the study also trains each strided first
      layer blurred before subsampling and reports it beside (not as a truth: on Shapes the blur removes the fine
      grating that tells the classes apart, so it costs accuracy).
    - kernel size, among the first layers trained at the same stride and rate: too small (-1) when a larger kernel
      is more accurate by more than twice the seed spread; larger than it uses (1) when the learned filters keep 90 %
      of their energy inside a smaller window and a smaller kernel is as accurate within the spread; ok (0) when a
      larger kernel is no more accurate than the spread, or every smaller one is less accurate by more than twice
      it.
    """
    spread = seed_spread(runs)
    by_world: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run["kind"] != "range":
            by_world.setdefault(run["world"]["name"], []).append(run)
    for world_runs in by_world.values():
        bases = [r for r in world_runs if r["kind"] == "base"]
        rate = bases[0]["lr"]
        work_gain = statistics.fmean(r["accuracy"] for r in bases) - chance(bases[0])
        work_drop = statistics.fmean(loss_drop(r) for r in bases)
        for run in world_runs:
            gain = run["accuracy"] - chance(run) if run["finite"] else -math.inf
            lr = None
            if run["kind"] == "lr x10":
                lr = 1 if gain < 0.5 * work_gain else (0 if gain >= 0.8 * work_gain else None)
            elif run["kind"] == "lr /100":
                drop = loss_drop(run)
                lr = -1 if drop < 0.1 * work_drop else (0 if drop >= 0.5 * work_drop else None)
            elif gain >= 0.8 * work_gain:
                lr = 0
            run["truth"] = {"learning_rate": lr, "stride": None, "kernel_size": None}

        configs: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for run in world_runs:  # first layers trained at the working rate (anti-aliased ones are a fix apart)
            if run["lr"] == rate and run["finite"] and not run.get("anti_alias"):
                configs.setdefault((run["kernel"], run["stride"]), []).append(run)
        accuracy = {c: statistics.fmean(r["accuracy"] for r in rs) for c, rs in configs.items()}
        tvd = {c: statistics.fmean(r["shift_tvd"] for r in rs) for c, rs in configs.items()}
        for (k, s), config_runs in configs.items():
            stride = kernel = None
            twin = (k, s // 2)  # the same first layer at half the stride
            if s > 1 and twin in configs:
                ratio = tvd[(k, s)] / max(tvd[twin], 1e-9)
                if ratio >= 1.5 and tvd[(k, s)] - tvd[twin] >= 0.01 and accuracy[twin] >= accuracy[(k, s)] - 2 * spread:
                    stride = 1
                elif ratio < 1.25:
                    stride = 0
            larger = [accuracy[c] for c in configs if c[1] == s and c[0] > k]
            smaller = {c[0]: accuracy[c] for c in configs if c[1] == s and s <= c[0] < k}
            windows = [v for r in config_runs if (v := last_value(r, "diagnostics/energy_window/")) is not None]
            window = max(windows) if windows else k
            if any(a > accuracy[(k, s)] + 2 * spread for a in larger):
                kernel = -1
            elif window < k and any(kk >= window and a >= accuracy[(k, s)] - spread for kk, a in smaller.items()):
                kernel = 1
            elif (larger and all(a <= accuracy[(k, s)] + spread for a in larger)) or (
                smaller and all(a < accuracy[(k, s)] - 2 * spread for a in smaller.values())
            ):
                kernel = 0
            for run in config_runs:
                run["truth"]["stride"], run["truth"]["kernel_size"] = stride, kernel
    return spread


# -- evidence, read back from the event files, and the verdicts replayed on it ----------------------------------------


def value(run: dict[str, Any], prefix: str, step: int) -> float | None:
    tag = next((t for t in run["series"] if t.startswith(prefix)), None)
    return None if tag is None else run["series"][tag].get(step)


def last_value(run: dict[str, Any], prefix: str) -> float | None:
    return value(run, prefix, last_probe(run))


def last_probe(run: dict[str, Any]) -> int:
    return max(int(s) for s in run["series"]["diagnostics/shift_tvd/model"]) if run["series"] else 0


def probe_steps(run: dict[str, Any]) -> list[int]:
    tags = ("verdict/learning_rate", "diagnostics/loss_progress", "diagnostics/shift_tvd/model")
    return sorted({int(s) for t in tags for s in run["series"].get(t, {})})


def evidence(run: dict[str, Any], step: int) -> tuple[LearningRateEvidence, StrideEvidence, KernelEvidence]:
    first = "first layer"
    k, s = run["kernel"], run["stride"]
    text = run["texts"].get(step, "")
    nonfinite = "not finite (NaN or inf)" if "diverged" in text else None
    learned = value(run, "diagnostics/learned_share/", step)
    window = value(run, "diagnostics/energy_window/", step)
    return (
        LearningRateEvidence(step, nonfinite, value(run, "diagnostics/loss_progress", step),
                             value(run, "diagnostics/loss_spike", step), value(run, "diagnostics/change/", step),
                             dead_channels(run, step)),
        StrideEvidence(first, k, s, learned, value(run, "diagnostics/alias_fraction/", step),
                       None if (m := value(run, "diagnostics/map_size/", step)) is None else int(m)),
        KernelEvidence(first, k, s, learned, value(run, "diagnostics/learned_rim_share/", step),
                       None if window is None else int(window)),
    )  # fmt: skip


def dead_channels(run: dict[str, Any], step: int) -> float | None:
    """The deepest stage's dead-channel fraction: the stage TrainingDiagnostics measures its change on."""
    change = next((t for t in run["series"] if t.startswith("diagnostics/change/")), None)
    if change is None:
        return None
    return run["series"].get("diagnostics/dead_channels/" + change.removeprefix("diagnostics/change/"), {}).get(step)


def verdicts(run: dict[str, Any], step: int, t: Thresholds) -> dict[str, int | None]:
    lr, stride, kernel = evidence(run, step)
    learning_rate = learning_rate_verdict(lr, t)
    return {"learning_rate": learning_rate.value,
            "stride": unless_too_high(stride_verdict(stride, t), learning_rate).value,
            "kernel_size": unless_too_high(kernel_size_verdict(kernel, t), learning_rate).value}  # fmt: skip


# -- choosing the thresholds ------------------------------------------------------------------------------------------


def line(above: list[float], below: list[float], log: bool = False) -> float | None:
    """The threshold between values that should lie above it and values that should lie below it: the middle of
    the widest gap that misclassifies fewest (geometric middle for ``log``). None without both kinds."""
    above = [v for v in above if v is not None and math.isfinite(v)]
    below = [v for v in below if v is not None and math.isfinite(v)]
    if not above or not below:
        return None
    points = sorted({*above, *below})
    best: tuple[int, float, float] | None = None
    for lo, hi in itertools.pairwise(points):
        cut = math.sqrt(lo * hi) if log and lo > 0 else (lo + hi) / 2
        errors = sum(v <= cut for v in above) + sum(v > cut for v in below)
        gap = math.log(hi / lo) if log and lo > 0 else hi - lo
        if best is None or (errors, -gap) < (best[0], -best[1]):
            best = (errors, gap, cut)
    return None if best is None else best[2]


FITTED = ("spike", "dead_channels", "alias_fraction")


def sides(runs: list[dict[str, Any]], t: Thresholds) -> dict[str, tuple[list[float], list[float]]]:
    """For each line: the values that must lie above it and those that must lie below it for every verdict on
    these runs to come out right (values at the probes where the line decides)."""
    main = [r for r in runs if r["kind"] != "range" and r["series"]]
    ok = [r for r in main if r["truth"]["learning_rate"] == 0]
    low = [r for r in main if r["truth"]["learning_rate"] == -1]
    high = [r for r in main if r["truth"]["learning_rate"] == 1 and r["finite"]]

    def at(rs: list[dict[str, Any]], prefix: str, keep: Any = lambda r, s: True) -> list[float]:
        return [v for r in rs for s in probe_steps(r) if keep(r, s) and (v := value(r, prefix, s)) is not None]

    def last(rs: list[dict[str, Any]], prefix: str) -> list[float]:
        return [v for r in rs if (v := last_value(r, prefix)) is not None]

    def trouble(r: dict[str, Any], s: int) -> bool:  # a sign the loss's progress must overrule
        return (value(r, "diagnostics/loss_spike", s) or 0) > t.spike or (dead_channels(r, s) or 0) > t.dead_channels

    def alias_decides(r: dict[str, Any]) -> bool:  # a stride verdict that the alias fraction can decide
        step = last_probe(r)
        learned = value(r, "diagnostics/learned_share/", step)
        lr = learning_rate_verdict(evidence(r, step)[0], t).value
        return r["stride"] > 1 and learned is not None and learned >= t.min_learned and lr != 1

    def coarse(r: dict[str, Any]) -> bool:
        size = value(r, "diagnostics/map_size/", last_probe(r))
        return size is not None and size <= t.coarse_map

    judged = [r for r in main if alias_decides(r)]
    later = lambda r, s: s >= t.low_after  # noqa: E731  (trouble is named by then)
    plateau = lambda r, s: later(r, s) and (value(r, "diagnostics/loss_progress", s) or 0) < t.progress_ok  # noqa: E731
    return {
        # collapse: the too-high runs' dead channels at the last probe above, the working runs' at every probe below
        "dead_channels": ([v for r in high if (v := dead_channels(r, last_probe(r))) is not None],
                          [v for r in ok for s in probe_steps(r) if (v := dead_channels(r, s)) is not None]),
        # a jump: the too-high runs' largest loss above, the working runs' below
        "spike": (last(high, "diagnostics/loss_spike"), at(ok, "diagnostics/loss_spike")),
        # a working run's progress where it shows a sign of trouble above; the too-high runs' from step 100 below
        "progress_ok": (at(ok, "diagnostics/loss_progress", trouble), at(high, "diagnostics/loss_progress", later)),
        # while the loss has not fallen: the working runs' change from step 100 on above, the too-low runs' below
        "change_low": (at(ok, "diagnostics/change/", plateau), at(low, "diagnostics/change/", later)),
        # where the alias fraction decides: the first layer has learned, the learning rate is not too high, and
        # (for an ok verdict) the deepest map is not so small that the stride is judged by resolution instead
        "alias_fraction": (
            last([r for r in judged if r["truth"]["stride"] == 1 and not coarse(r)], "diagnostics/alias_fraction/"),
            last([r for r in judged if r["truth"]["stride"] == 0], "diagnostics/alias_fraction/"),
        ),
    }  # fmt: skip


def fit(runs: list[dict[str, Any]], defaults: Thresholds) -> tuple[Thresholds, dict[str, float]]:
    """The FITTED lines chosen on these runs, each in the widest gap between the values that must lie above it and
    those that must lie below (fewest on the wrong side first; geometric middle for ratios). The other thresholds
    are definitions, checked against the same values (see ``margins``). A line without evidence on both sides
    keeps its default."""
    found = sides(runs, defaults)
    chosen = {name: v for name in FITTED if (v := line(*found[name], log=name == "spike")) is not None}
    return replace(defaults, **chosen), chosen  # type: ignore[arg-type]


def margins(runs: list[dict[str, Any]], t: Thresholds) -> str:
    """Where each line lies between the values on its two sides, over all worlds."""
    rows = ["| line | value | fitted or fixed | largest values that must lie below "
            "| smallest values that must lie above |", "|---|---|---|---|---|"]  # fmt: skip
    for name, (above, below) in sides(runs, t).items():
        hi = ", ".join(f"{v:.3g}" for v in sorted(below)[-3:]) or "none"
        lo = ", ".join(f"{v:.3g}" for v in sorted(above)[:3]) or "none"
        rows.append(f"| {name} | {getattr(t, name):.3g} | {'fitted' if name in FITTED else 'fixed'} | {hi} | {lo} |")
    return "\n".join(rows)


# -- tables -----------------------------------------------------------------------------------------------------------

NAMES = ("learning_rate", "stride", "kernel_size")
SHOW = {None: "-", 1: "1", 0: "0", -1: "-1"}


def evaluate(runs: list[dict[str, Any]], worlds: list[str], defaults: Thresholds) -> tuple[str, dict[str, Any]]:
    """Leave one world out: thresholds fitted on the others, verdicts replayed on the held-out world's runs."""
    rows, confusion = [], {n: {} for n in NAMES}  # type: ignore[var-annotated]
    held_thresholds = {}
    for world in worlds:
        t, _ = fit([r for r in runs if r["world"]["name"] != world], defaults)
        held_thresholds[world] = t
        for run in [r for r in runs if r["world"]["name"] == world and r["kind"] != "range" and r["series"]]:
            per_probe = {s: verdicts(run, s, t) for s in probe_steps(run)}
            verdict = per_probe[last_probe(run)]
            for name in NAMES:
                truth = run["truth"][name]
                if truth is not None:
                    confusion[name][(truth, verdict[name])] = confusion[name].get((truth, verdict[name]), 0) + 1
            rows.append((run, per_probe))
    return _tables(rows, confusion, held_thresholds), {"thresholds": held_thresholds, "confusion": confusion}


def _tables(rows: list[tuple[dict[str, Any], dict[int, dict[str, int | None]]]], confusion: dict[str, Any],
            held: dict[str, Thresholds]) -> str:  # fmt: skip
    out = ["## Per-world runs", "",
           "Verdicts replayed with the thresholds fitted without the run's world; truth from the outcomes "
           "(`-`: no clear truth, or the verdict abstains). `lr verdict per probe` lists the learning-rate verdict at "
           "every probe (steps 0, 5, 10, 25, 50, then every 50). Evidence at the last probe: loss progress (share of "
           "the first batch's loss removed), largest loss over the first, representation change, dead channels of "
           "the deepest stage, alias fraction, learned share and 90 % energy window of the first layer.",
           ""]  # fmt: skip
    header = ("| run | k/s | lr | seed | test acc | shift TVD | truth lr / stride / kernel "
              "| verdict lr / stride / kernel | lr verdict per probe | progress | jump | change | dead | alias "
              "| learned | window |")  # fmt: skip
    for world in sorted({r["world"]["name"] for r, _ in rows}):
        out += [f"### {world}", "", header, "|" + "---|" * 16]
        for run, per_probe in [(r, p) for r, p in rows if r["world"]["name"] == world]:
            step = last_probe(run)

            def fmt(prefix: str, run: dict[str, Any] = run, step: int = step) -> str:
                v = value(run, prefix, step) if prefix != "dead" else dead_channels(run, step)
                return "" if v is None else f"{v:.3g}"

            truth = " / ".join(SHOW[run["truth"][n]] for n in NAMES)
            got = " / ".join(SHOW[per_probe[step][n]] for n in NAMES)
            lr_steps = " ".join(SHOW[per_probe[s]["learning_rate"]] for s in sorted(per_probe))
            out.append(
                f"| {run['kind']} | {run['kernel']}/{run['stride']} | {run['lr']:g} | {run['seed']} | "
                f"{run['accuracy']:.3f} | {run['shift_tvd']:.4f} | {truth} | {got} | {lr_steps} | "
                f"{fmt('diagnostics/loss_progress')} | {fmt('diagnostics/loss_spike')} | "
                f"{fmt('diagnostics/change/')} | "
                f"{fmt('dead')} | {fmt('diagnostics/alias_fraction/')} | {fmt('diagnostics/learned_share/')} | "
                f"{fmt('diagnostics/energy_window/')} |"
            )
        out.append("")
    out += ["## Held-out confusion per verdict", "",
            "Rows: truth from the outcomes; columns: the verdict at the last probe, with the thresholds fitted on the "
            "other worlds. Abstentions are counted apart from hits and errors.", ""]  # fmt: skip
    labels = {"learning_rate": (-1, 0, 1), "stride": (0, 1), "kernel_size": (-1, 0, 1)}
    for name in NAMES:
        values = labels[name]
        out += [f"**{name}**", "", "| truth \\ verdict | " + " | ".join(map(str, values)) + " | abstained |",
                "|---|" + "---|" * (len(values) + 1)]  # fmt: skip
        for truth in values:
            cells = [str(confusion[name].get((truth, v), 0)) for v in values]
            out.append(f"| {truth} | " + " | ".join(cells) + f" | {confusion[name].get((truth, None), 0)} |")
        hits = sum(n for (tr, v), n in confusion[name].items() if tr == v)
        wrong = sum(n for (tr, v), n in confusion[name].items() if v is not None and tr != v)
        abstained = sum(n for (tr, v), n in confusion[name].items() if v is None)
        out += ["", f"{hits} right, {wrong} wrong, {abstained} abstained.", ""]
    trouble = [(r, p) for r, p in rows if r["truth"]["learning_rate"] in (-1, 1)]
    named = [
        f"{r['world']['name']} {r['kind']}: "
        + str(next((s for s in sorted(p) if p[s]["learning_rate"] == r["truth"]["learning_rate"]), "never"))
        for r, p in trouble
    ]
    out += ["First probe that names the learning-rate trouble (held-out thresholds): " + "; ".join(named) + ".", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--worlds", nargs="*", default=None, help="names of the worlds to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps")
    parser.add_argument("--anti-aliased", action="store_true",
                        help="also train each strided first layer anti-aliased (blurred before subsampling); "
                             "about 10 more minutes")  # fmt: skip
    parser.add_argument("--from-json", default=None, help="skip training: analyse the runs saved in this file")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "diagnosis_study"), help="output path stem")
    args = parser.parse_args()
    worlds = [w for w in WORLDS if args.worlds is None or w.name in args.worlds]
    start = time.perf_counter()
    if args.from_json:
        runs = json.loads(Path(args.from_json).read_text())
        for run in runs:  # JSON keys are strings
            run["series"] = {t: {int(s): v for s, v in series.items()} for t, series in run["series"].items()}
            run["texts"] = {int(s): v for s, v in run["texts"].items()}
    else:
        runs = run_all(worlds, args.processes, args.quick, args.anti_aliased)
        Path(args.out + ".json").write_text(json.dumps(runs))
    spread = truths(runs)
    names = sorted({r["world"]["name"] for r in runs})
    defaults = Thresholds()
    table, result = evaluate(runs, names, defaults)
    chosen, _ = fit(runs, defaults)
    text = ["# Diagnosis study", "", f"Written by `python benchmarks/diagnosis_study.py`: {len(runs)} runs, "
            f"{sum(r['seconds'] for r in runs):.0f} s of training in all. Seed spread of the held-out accuracy "
            f"(median over worlds of the working rate's two seeds): {spread:.3f}.", "",
            "## Worlds and their working rates (range test: the lowest training loss over the last 20 steps)", "",
            "| world | architecture | data | optimizer | first layer | working rate |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for w in names:
        spec = next(r["world"] for r in runs if r["world"]["name"] == w)
        rate = working_rate([r for r in runs if r["kind"] == "range" and r["world"]["name"] == w])
        text.append(f"| {w} | {spec['arch']} | {spec['data']} | {spec['optimizer']} "
                    f"| {spec['kernel']}/{spec['stride']} | {rate:g} |")  # fmt: skip
    text += ["", "## Thresholds: fitted on all worlds (the defaults) and without each world", "",
             "| threshold | all worlds | " + " | ".join(f"without {w}" for w in names) + " |",
             "|---|---|" + "---|" * len(names)]  # fmt: skip
    for f in fields(Thresholds):
        held = " | ".join(f"{getattr(result['thresholds'][w], f.name):.3g}" for w in names)
        how = "" if f.name in FITTED else " (fixed)"
        text.append(f"| {f.name}{how} | {getattr(chosen, f.name):.3g} | {held} |")
    text += ["", "## Where each line lies (all worlds; a value on the wrong side is a wrong verdict)", "",
             margins(runs, chosen)]  # fmt: skip
    source = f", from the runs saved in {args.from_json}" if args.from_json else ", training included"
    report = "\n".join([*text, "", table, f"This analysis took {time.perf_counter() - start:.0f} s{source}."])
    print(report)
    Path(args.out + ".md").write_text(report + "\n")


if __name__ == "__main__":
    main()
