"""Validation study of the learning-rate verdict of TrainingDiagnostics over long runs with learning-rate schedules.

Each world is an (architecture, data, optimizer) triple from benchmarks/worlds.py (WORLDS), trained for STEPS steps
at batch BATCH under each of nine per-step schedules (SCHEDULES): a constant rate, five healthy schedules (warm-up
then cosine to zero, step decay x0.1 at 50 % and 75 %, one-cycle, ReduceLROnPlateau on a smoothed training loss,
cosine warm restarts) and three kinds of trouble (the rate divided by 3,000 after 100 steps; multiplied by 100 at
50 %; multiplied by 10 at 50 %). A world's base rate comes from a range test at the study's batch size (of RATES,
the rate whose training loss over the last 50 of RANGE_STEPS steps is lowest). Every run has TrainingDiagnostics
attached at its default settings, except a fixed probe drawn from a separate dataset seed, and records every step's
training loss and rate, the held-out accuracy at the changes and at the end, and everything the monitor logged
under diagnostics/, verdict/ and degree/ (read back from the event files), with the verdicts' text.

Truth comes from outcomes, never from the schedule's name (see ``truths``). A world's reference is the best held-out
accuracy of its constant and healthy schedules. A run that diverged (a non-finite loss or weights) is too high from
the step the trouble began (its schedule's change, else its first non-finite loss). A trouble schedule that ends more
than GAP below the reference is too low (a decay) or too high (a jump) from the step its schedule changed on, and ok
before it; one less than GAP / 2 below is ok throughout ("did not hurt"); in between, or where no healthy schedule of
the world learned, its truth after the change is unclear and not scored. A healthy schedule is ok throughout, unless
it ended within GAP of chance (then its truth is unclear, and the table says so).

The report (benchmarks/long_run_study.md; every run's record in benchmarks/long_run_study.json) gives per world and
schedule when the trouble began and when the verdict first named it with the right sign; confusion tables over all
verdict steps (the monitor's probes and its checks between them), split into healthy schedules, before the change,
the GRACE steps after it, and later; and the verdict replayed from the recorded series (``LossHistory.evidence``),
first at the default thresholds (it must give the monitor's verdicts), then with the FITTED thresholds chosen on all
worlds but one (a grid around their defaults) and scored on the world left out.

    python benchmarks/long_run_study.py               # 4 worlds x 9 schedules x 3,000 steps: about 26 minutes
    python benchmarks/long_run_study.py --quick       # 2 worlds x 9 schedules x 200 steps: about 2 minutes
    python benchmarks/long_run_study.py --measure     # 300 steps of each world: predicts the full run time
    python benchmarks/long_run_study.py --from-json benchmarks/long_run_study.json   # the analysis only, seconds

Times are for 2 processes on 2 otherwise idle cores (CPU time of the one-thread workers, measured with ``--measure``
and ``--quick`` on a busy machine, where the wall time was 2-3 times longer); the measured time of a run heads its
report. ``--quick`` writes long_run_study_quick.md/.json in the temporary directory, not in the repository.
"""

from __future__ import annotations

import argparse
import functools
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
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from worlds import Classifier, World  # noqa: E402

from lightning_viz.diagnostics.verdicts import Thresholds, learning_rate_verdict  # noqa: E402

# name, arch, data, optimizer, kernel, stride; the quick run takes the first QUICK_WORLDS
WORLDS = [
    World("zf/shapes/sgd", "zf", "shapes", "sgd", 7, 2),
    World("zf-bn/shapes-large/adamw", "zf-bn", "shapes-large", "adamw", 7, 2),
    World("vgg/shapes/adam", "vgg", "shapes", "adam", 11, 4),
    World("vgg/shapes-large/sgd", "vgg", "shapes-large", "sgd", 11, 4),
]
QUICK_WORLDS = 2
RATES = {"sgd": (0.003, 0.01, 0.03, 0.1), "adam": (1e-4, 3e-4, 1e-3, 3e-3), "adamw": (1e-4, 3e-4, 1e-3, 3e-3)}

# schedule -> the truth's sign after its change when the outcome is clearly worse (None: a healthy schedule)
SCHEDULES: dict[str, int | None] = {
    "constant": None,
    "warm-up + cosine": None,
    "step decay": None,
    "one-cycle": None,
    "plateau": None,
    "warm restarts": None,
    "decayed at 100": -1,
    "jump x100": 1,
    "jump x10": 1,
}
STEPS, QUICK_STEPS = 3000, 200
RANGE_STEPS, QUICK_RANGE_STEPS = 200, 100
BATCH = 16
TRAIN_SIZE, QUICK_TRAIN_SIZE = 4800, 1600  # 300 and 100 batches an epoch
HELD_OUT = 1000
DECAY_STEP = 100
WARM_UP = 0.05  # share of the steps
PLATEAU_EVERY = 50  # steps between ReduceLROnPlateau's looks at the smoothed loss
GAP = 0.10  # held-out accuracy below the world's best healthy outcome that makes a trouble schedule's truth trouble
GRACE = 200  # steps after a change in which the verdict may still be catching up (reported apart)

# The thresholds the replay tunes (names of Thresholds fields) and the grid around each default.
FITTED = ("rise_now", "stalled_now")
GRID = (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 2.0)

# -- schedules --------------------------------------------------------------------------------------------------------


def change_step(schedule: str, steps: int) -> int | None:
    """The first step whose update uses the changed rate of a trouble schedule (None for a healthy one)."""
    if schedule == "decayed at 100":
        return DECAY_STEP
    if schedule.startswith("jump"):
        return steps // 2
    return None


def _factor(schedule: str, steps: int) -> Callable[[int], float]:
    """The multiplier of the base rate used by update ``s`` (0-based), for the schedules LambdaLR draws."""
    warm = max(1, int(WARM_UP * steps))
    change = change_step(schedule, steps)

    def warm_cosine(s: int) -> float:
        return (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm)))

    def decayed(s: int) -> float:
        return 1.0 if change is None or s < change else 1 / 3000

    def jump(s: int) -> float:
        return 1.0 if change is None or s < change else float(schedule.removeprefix("jump x"))

    return {"warm-up + cosine": warm_cosine, "decayed at 100": decayed}.get(schedule, jump)


def lr_scheduler(optimizer: Any, schedule: str, steps: int, rate: float) -> dict[str, Any] | None:
    """Lightning's ``lr_scheduler`` configuration for ``schedule``, stepped after every update; None: constant."""
    from torch.optim import lr_scheduler as s

    if schedule == "constant":
        return None
    if schedule == "step decay":
        return {"scheduler": s.MultiStepLR(optimizer, [steps // 2, 3 * steps // 4], 0.1), "interval": "step"}
    if schedule == "one-cycle":
        return {"scheduler": s.OneCycleLR(optimizer, max_lr=rate, total_steps=steps), "interval": "step"}
    if schedule == "warm restarts":  # cycles of 1/7, 2/7 and 4/7 of the run, the last ending at the last step
        return {"scheduler": s.CosineAnnealingWarmRestarts(optimizer, T_0=steps // 7, T_mult=2), "interval": "step"}
    if schedule == "plateau":  # a third of the rate after 5 looks (250 steps) without a 1 % better smoothed loss
        plateau = s.ReduceLROnPlateau(optimizer, factor=0.3, patience=4, threshold=0.01)
        return {"scheduler": plateau, "interval": "step", "frequency": PLATEAU_EVERY, "monitor": "train/loss_smooth"}
    return {"scheduler": s.LambdaLR(optimizer, _factor(schedule, steps)), "interval": "step"}


def eval_steps(steps: int) -> list[int]:
    """Steps (updates done) at which the held-out accuracy is measured during training, to place the trouble in
    time: the changes (the decay's, the jumps') and the end of the grace after a jump; the end is measured too."""
    return sorted({s for s in (DECAY_STEP, steps // 2, steps // 2 + GRACE) if 0 < s < steps})


class ScheduledClassifier(Classifier):
    """worlds.Classifier under a learning-rate schedule, recording every step's loss and rate (group 0's, the one
    that step's update uses) and the held-out accuracy at ``evals``."""

    def __init__(self, net: Any, optimizer: str, lr: float, schedule: str, steps: int, held_out: tuple[Any, Any],
                 evals: list[int]) -> None:  # fmt: skip
        super().__init__(net, optimizer, lr)
        self.schedule, self.steps, self.held_out, self.evals = schedule, steps, held_out, set(evals)
        self.losses: list[float] = []
        self.rates: list[float] = []
        self.accuracies: dict[int, float] = {}
        self.smooth: float | None = None
        self.step_cpu: list[float] = []  # CPU time at each training step's start
        self.eval_cpu: list[float] = []  # CPU seconds of each held-out evaluation during training

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        import torch.nn.functional as F

        self.step_cpu.append(time.process_time())
        loss = F.cross_entropy(self(batch[0]), batch[1])
        value = float(loss.detach())
        self.losses.append(value)
        self.rates.append(float(self.trainer.optimizers[0].param_groups[0]["lr"]))  # stepped after each update
        if math.isfinite(value):
            self.smooth = value if self.smooth is None else 0.98 * self.smooth + 0.02 * value
        self.log("train/loss", loss)
        self.log("train/loss_smooth", value if self.smooth is None else self.smooth)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.trainer.global_step in self.evals:  # after the monitor's probe at this step (callbacks run first)
            cpu = time.process_time()
            self.accuracies[self.trainer.global_step] = self.accuracy()
            self.eval_cpu.append(time.process_time() - cpu)

    def accuracy(self) -> float:
        """Held-out accuracy in eval mode (NaN when a weight is not finite); the mode is restored."""
        import torch

        if not all(bool(torch.isfinite(p).all()) for p in self.parameters()):
            return math.nan
        images, labels = self.held_out
        was_training = self.training
        self.eval()
        with torch.no_grad():
            pairs = zip(images.split(250), labels.split(250), strict=True)
            correct = sum(int((self(x).argmax(1) == y).sum()) for x, y in pairs)
        self.train(was_training)
        return correct / len(labels)

    def configure_optimizers(self) -> Any:
        from worlds import OPTIMIZERS

        optimizer = OPTIMIZERS[self.optimizer](self.parameters(), self.lr)
        scheduler = lr_scheduler(optimizer, self.schedule, self.steps, self.lr)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}


# -- one training run ------------------------------------------------------------------------------------------------

PREFIXES = ("diagnostics/", "verdict/", "degree/")
TEXT = "diagnostics/verdicts/text_summary"


def train(job: dict[str, Any]) -> dict[str, Any]:
    """Train one world under one schedule; with ``diagnose``, read back everything the monitor logged."""
    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*", FutureWarning)  # Lightning's, not ours
    from pytorch_lightning import Trainer, seed_everything
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader

    from lightning_viz import ProbeBatch, TrainingDiagnostics

    start, cpu = time.perf_counter(), time.process_time()
    world, seed, steps = World(**job["world"]), job["seed"], job["steps"]
    seed_everything(seed, workers=True)
    train_set = dataset(world.data, job["train_size"], seed)
    held = dataset(world.data, HELD_OUT, 20_000 + seed)
    dataset(world.data, 200, 10_000 + seed)  # the probe's source
    data_cpu = time.process_time() - cpu  # the datasets: drawn by the first run of a world in each process
    items = [held[i] for i in range(HELD_OUT)]
    held_out = (torch.stack([x[0] for x in items]), torch.stack([x[1] for x in items]))
    loader = DataLoader(train_set, batch_size=BATCH, shuffle=True, drop_last=True)
    model = ScheduledClassifier(world.net(), world.optimizer, job["lr"], job["schedule"], steps, held_out, job["evals"])
    series: dict[str, dict[int, float]] = {}
    texts: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as logdir:
        callbacks = []
        if job["diagnose"]:  # the default monitor but for its probe: 16 images of a dataset drawn with another seed
            probe = ProbeBatch.from_dataloader(DataLoader(dataset(world.data, 200, 10_000 + seed), batch_size=200))
            callbacks = [TrainingDiagnostics(probe=probe)]
        trainer = Trainer(
            max_steps=steps, accelerator="cpu", logger=TensorBoardLogger(logdir, name="run") if callbacks else False,
            callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        )  # fmt: skip
        fit_start, fit_cpu = time.perf_counter(), time.process_time()
        trainer.fit(model, loader)
        fit_seconds, fit_cpu = time.perf_counter() - fit_start, time.process_time() - fit_cpu
        if callbacks:
            series, texts = read_events(os.path.join(logdir, "run"))
    losses = model.losses
    timing = {"step_cpu": [b - a for a, b in itertools.pairwise(model.step_cpu)], "eval_cpu": model.eval_cpu}
    first_nonfinite = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    accuracy = model.accuracy()
    finite = first_nonfinite is None and math.isfinite(accuracy)
    return {**job, "losses": losses, "rates": model.rates, "accuracies": {**model.accuracies, steps: accuracy},
            "accuracy": accuracy, "finite": finite, "first_nonfinite": first_nonfinite, "series": series,
            "texts": texts, "seconds": time.perf_counter() - start, "fit_seconds": fit_seconds,
            "cpu_seconds": time.process_time() - cpu, "fit_cpu_seconds": fit_cpu, "data_cpu_seconds": data_cpu,
            **(timing if job.get("timing") else {})}  # fmt: skip


@functools.lru_cache(maxsize=16)
def dataset(name: str, size: int, seed: int) -> Any:
    """worlds.make_data, drawn once per process (the datasets are deterministic in their seed and never changed)."""
    from worlds import make_data

    return make_data(name, size, seed)


def read_events(logdir: str) -> tuple[dict[str, dict[int, float]], dict[int, str]]:
    """Every scalar under PREFIXES at every step, and the verdicts' text at every step, from the event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    texts: dict[int, str] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "**", "events.*"), recursive=True)):
        events = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            if tag.startswith(PREFIXES):
                series.setdefault(tag, {}).update({e.step: e.value for e in events.Scalars(tag)})
        if TEXT in events.Tags()["tensors"]:
            texts.update({e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors(TEXT)})
    return series, texts


# -- the jobs ---------------------------------------------------------------------------------------------------------


def range_jobs(worlds: list[World], quick: bool) -> list[dict[str, Any]]:
    return [{"world": asdict(w), "kind": "range", "schedule": "constant", "lr": lr, "seed": 0, "diagnose": False,
             "steps": QUICK_RANGE_STEPS if quick else RANGE_STEPS, "evals": [],
             "train_size": QUICK_TRAIN_SIZE if quick else TRAIN_SIZE}
            for w in worlds for lr in RATES[w.optimizer]]  # fmt: skip


def working_rate(runs: list[dict[str, Any]]) -> float:
    """The rate whose mean training loss over the last 50 steps is lowest (a non-finite loss disqualifies)."""
    if not runs:
        raise ValueError("no range-test runs")

    def score(run: dict[str, Any]) -> float:
        tail = run["losses"][-50:]
        return statistics.fmean(tail) if run["finite"] and all(map(math.isfinite, tail)) else math.inf

    return min(runs, key=score)["lr"]


def main_jobs(world: World, lr: float, quick: bool) -> list[dict[str, Any]]:
    """One run per schedule; the quick run evaluates the held-out set once during training (at the change)."""
    steps = QUICK_STEPS if quick else STEPS
    return [{"world": asdict(world), "kind": "schedule", "schedule": name, "lr": lr, "seed": 0, "diagnose": True,
             "steps": steps, "evals": [steps // 2] if quick else eval_steps(steps),
             "train_size": QUICK_TRAIN_SIZE if quick else TRAIN_SIZE} for name in SCHEDULES]  # fmt: skip


COST = {"vgg": 1.0, "zf": 1.2, "zf-bn": 1.45}  # relative cost of a step (--measure), to start the slowest first


def run_all(worlds: list[World], processes: int, quick: bool) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes) as pool:
        ranged = pool.map(train, range_jobs(worlds, quick), chunksize=1)
        jobs = []
        for world in worlds:
            lr = working_rate([r for r in ranged if r["world"]["name"] == world.name])
            print(f"{world.name}: base rate {lr:g} (range test)", flush=True)
            jobs += main_jobs(world, lr, quick)
        jobs.sort(key=lambda j: -j["steps"] * COST.get(j["world"]["arch"], 1.0))
        runs = []
        for run in pool.imap_unordered(train, jobs, chunksize=1):
            print(f"  {run['world']['name']} {run['schedule']}: held-out accuracy {run['accuracy']:.3f}, "
                  f"{run['seconds']:.0f} s", flush=True)  # fmt: skip
            runs.append(run)
    return ranged + runs


def measure(worlds: list[World], processes: int, steps: int) -> None:
    """Time each world's constant rate with the monitor for ``steps`` steps (``processes`` at once, as the study
    runs them) and predict the full study's run time. Times are CPU seconds of the one-thread process (the wall time
    on an idle core, whatever else the machine runs): the fit's time so far, plus the mean step from step 60 on
    (regular probes included, held-out evaluations not) for every step still to come, plus the evaluations and the
    set-up outside the fit."""
    jobs = [{**main_jobs(w, RATES[w.optimizer][1], False)[0], "steps": steps, "timing": True} for w in worlds]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(processes) as pool:
        runs = pool.map(train, jobs, chunksize=1)
    print(f"measured in {time.perf_counter() - start:.0f} s ({processes} processes, {steps} steps a run)")
    total = 0.0
    for run in runs:
        evals = sum(run["eval_cpu"])
        step = (sum(run["step_cpu"][60:]) - evals) / len(run["step_cpu"][60:])
        bare = statistics.median(run["step_cpu"])  # a step without a probe: the range test's
        evaluation = statistics.fmean(run["eval_cpu"]) if run["eval_cpu"] else 0.0
        data = run["data_cpu_seconds"]
        fixed = run["cpu_seconds"] - run["fit_cpu_seconds"] - data  # the final evaluation, reading the event files
        one = fixed + run["fit_cpu_seconds"] - evals + step * (STEPS - steps) + evaluation * len(eval_steps(STEPS))
        full = len(SCHEDULES) * one + len(RATES[run["world"]["optimizer"]]) * (fixed + bare * RANGE_STEPS)
        full += processes * data  # each process draws a world's datasets once
        total += full
        print(f"  {run['world']['name']}: {1000 * bare:.1f} ms a step without a probe, {1000 * step:.1f} ms with the "
              f"regular probes, {evaluation:.2f} s an evaluation, {data:.1f} s to draw the data, {fixed:.1f} s "
              f"more outside the fit; a run of {STEPS} steps {one:.0f} s, the world's {len(SCHEDULES)} runs and range "
              f"test {full / 60:.1f} minutes")  # fmt: skip
    print(f"predicted full study: {total / processes / 60:.1f} minutes with {processes} processes on idle cores")


# -- truth from outcomes ----------------------------------------------------------------------------------------------


def chance(run: dict[str, Any]) -> float:
    from worlds import num_classes

    return 1.0 / num_classes(run["world"]["data"])


def truths(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Set each schedule run's ``truth``: ``value`` (0 ok, 1 too high, -1 too low, None unclear) from step ``onset``
    on (ok before it; onset None: ``value`` throughout), and a ``note``. Returns each world's reference (the best
    held-out accuracy of its finite healthy schedules)."""
    references = {}
    for world in sorted({r["world"]["name"] for r in runs}):
        mine = [r for r in runs if r["world"]["name"] == world and r["kind"] == "schedule"]
        healthy = [r["accuracy"] for r in mine if SCHEDULES[r["schedule"]] is None and r["finite"]]
        best = references[world] = max(healthy, default=math.nan)
        broken = not best >= chance(mine[0]) + GAP  # no healthy schedule learned: nothing to compare with
        for run in mine:
            sign, change = SCHEDULES[run["schedule"]], change_step(run["schedule"], run["steps"])
            run["change"] = change
            worse = best - run["accuracy"]
            if not run["finite"]:
                onset = change if sign == 1 else run["first_nonfinite"]
                onset = run["steps"] if onset is None else onset  # weights not finite at the end only
                run["truth"] = {"value": 1, "onset": onset, "note": "diverged"}
            elif sign is not None and broken:
                run["truth"] = {"value": None, "onset": change, "note": "no healthy schedule of this world learned"}
            elif sign is None:
                at_chance = run["accuracy"] < chance(run) + GAP
                run["truth"] = {"value": None if at_chance else 0, "onset": None,
                                "note": "healthy schedule at chance: no truth" if at_chance else ""}  # fmt: skip
            elif worse > GAP:
                run["truth"] = {"value": sign, "onset": change, "note": f"{100 * worse:.0f} points below the best"}
            elif worse < GAP / 2:
                run["truth"] = {"value": 0, "onset": None, "note": f"the {run['schedule']} did not hurt"}
            else:
                run["truth"] = {"value": None, "onset": change, "note": f"{100 * worse:.0f} points below the best"}
    return references


def truth_at(run: dict[str, Any], step: int) -> int | None:
    truth = run["truth"]
    return 0 if truth["onset"] is not None and step < truth["onset"] else truth["value"]


def phase(run: dict[str, Any], step: int) -> str:
    """Which confusion table a verdict step belongs to."""
    change = run["change"] if run["change"] is not None else run["truth"]["onset"]
    if change is None:
        return "healthy"
    if step < change:
        return "before"
    return "grace" if step < change + GRACE else "after"


PHASES = {
    "healthy": "healthy schedules (no change, no divergence)",
    "before": "before the change (or the divergence)",
    "grace": f"the first {GRACE} steps from the change",
    "after": f"{GRACE} steps after the change and later",
}


# -- the verdicts: logged, and replayed ------------------------------------------------------------------------------


def verdict_steps(run: dict[str, Any]) -> list[int]:
    """Every step the monitor gave a learning-rate verdict: its probes (which write the verdicts' text) and its
    checks between them (which log the loss's numbers and the rate, the verdict's value, and a text only where the
    verdict changed)."""
    tags = [t for t in run["series"] if t.startswith(("verdict/learning_rate", "diagnostics/lr/", "diagnostics/loss_"))]
    return sorted({*run["texts"], *(s for t in tags for s in run["series"][t])})


def logged(run: dict[str, Any]) -> dict[int, int | None]:
    """The learning-rate verdict at every verdict step (None: it abstained)."""
    values = run["series"].get("verdict/learning_rate", {})
    return {s: None if (v := values.get(s)) is None else int(v) for s in verdict_steps(run)}


def deepest(run: dict[str, Any]) -> str | None:
    layers = [t.removeprefix("diagnostics/change/") for t in run["series"] if t.startswith("diagnostics/change/")]
    return layers[-1] if layers else None


def probe_numbers(run: dict[str, Any], step: int) -> dict[str, Any]:
    """change, recent_change (and the steps it spans) and dead_channels of the deepest stage at the latest probe at or
    before ``step``: the probe numbers the monitor's verdict reads there."""
    layer = deepest(run)
    if layer is None:
        return {}
    probes = sorted(run["series"][f"diagnostics/change/{layer}"])
    if not any(s <= step for s in probes):
        return {}
    at = max(s for s in probes if s <= step)
    numbers = {name: run["series"].get(f"diagnostics/{name}/{layer}", {}).get(at)
               for name in ("change", "recent_change", "dead_channels")}  # fmt: skip
    if numbers["recent_change"] is not None:  # measured against the latest probe at least 100 steps before
        numbers["recent_steps"] = at - max(s for s in probes if s <= at - 100)
    return numbers


def replay_evidence(run: dict[str, Any]) -> dict[int, Any]:
    """The learning-rate evidence at every verdict step, rebuilt from the recorded losses and rates and the
    monitor's probe numbers: at step s the losses of the updates before s, as the monitor has them."""
    from lightning_viz.diagnostics import LossHistory

    history = LossHistory()
    found, fed = {}, 0
    for step in verdict_steps(run):
        while fed < min(step, len(run["losses"])):
            history.add(fed, run["losses"][fed], run["rates"][fed])
            fed += 1
        nonfinite = None
        if history.first_nonfinite_step is not None:
            nonfinite = f"the training loss since step {history.first_nonfinite_step}"
        elif "diverged" in run["texts"].get(step, ""):  # the weights or the probe's outputs, the loss still finite
            nonfinite = f"the weights or the probe's outputs at step {step}"
        found[step] = history.evidence(step, nonfinite=nonfinite, **probe_numbers(run, step))
    return found


def scored(run: dict[str, Any], step: int) -> bool:
    """A verdict step with a clear truth outside the grace steps: what the thresholds are fitted and tested on."""
    return truth_at(run, step) is not None and phase(run, step) != "grace"


def errors(items: list[tuple[int, Any]], t: Thresholds) -> int:
    """Wrong verdicts on (truth, evidence) pairs: a value other than the truth, or an abstention on trouble."""
    wrong = 0
    for truth, evidence in items:
        value = learning_rate_verdict(evidence, t).value
        wrong += (value is not None and value != truth) or (value is None and truth != 0)
    return wrong


def grid(default: float) -> list[float]:
    values = [default * f for f in GRID]
    return sorted({round(v) for v in values}) if isinstance(default, int) else values


def fit(items: list[tuple[int, Any]], defaults: Thresholds) -> Thresholds:
    """Each FITTED threshold on GRID around its default, one at a time, twice round, minimising ``errors``; a tie
    goes to the value nearest the default."""
    t = defaults
    for _ in range(2):
        for name in FITTED:
            default = getattr(defaults, name)
            best: tuple[tuple[int, float], Thresholds] | None = None
            for value in grid(default):
                candidate = replace(t, **{name: value})  # type: ignore[arg-type]
                key = (errors(items, candidate), abs(math.log(max(value, 1e-12) / max(default, 1e-12))))
                if best is None or key < best[0]:
                    best = (key, candidate)
            assert best is not None
            t = best[1]
    return t


# -- tables -----------------------------------------------------------------------------------------------------------

SHOW = {None: "·", 1: "1", 0: "0", -1: "-1"}


def timeline(verdicts: dict[int, int | None]) -> str:
    """The verdict's changes: ``value@step`` each time it changes."""
    out, last = [], "start"
    for step, value in verdicts.items():
        if value != last:
            out.append(f"{SHOW[value]}@{step}")
            last = value  # type: ignore[assignment]
    return " ".join(out)


def world_tables(runs: list[dict[str, Any]], verdicts: dict[int, dict[int, int | None]],
                 references: dict[str, float]) -> list[str]:  # fmt: skip
    out = ["## Per world and schedule", "",
           "Truth from the held-out outcome (see the module docstring); `onset`: the step the trouble began; `named`: "
           "the first verdict step from the onset on whose value has the truth's sign, and its delay; `false alarms`: "
           "verdict steps with a non-zero value where the truth is ok, or the wrong sign; `timeline`: the verdict's "
           "value from each step it changed (`·`: abstained). Accuracy at the steps the run was evaluated, the last "
           "being the end.", ""]  # fmt: skip
    for world in sorted(references):
        mine = [r for r in runs if r["world"]["name"] == world and r["kind"] == "schedule"]
        rate = mine[0]["lr"] if mine else math.nan
        out += [f"### {world} (base rate {rate:g}; best healthy outcome {references[world]:.3f}, chance "
                f"{chance(mine[0]):.3f})" if mine else f"### {world}", "",
                "| schedule | rate first / min / max | held-out accuracy | truth | onset | named (delay) "
                "| false alarms | last verdict | timeline |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for run in sorted(mine, key=lambda r: list(SCHEDULES).index(r["schedule"])):
            v = verdicts[id(run)]
            truth, onset = run["truth"], run["truth"]["onset"]
            named = None
            if onset is not None and truth["value"]:
                named = next((s for s, x in v.items() if s >= onset and x == truth["value"]), None)
            alarms = [s for s, x in v.items() if x and (t := truth_at(run, s)) is not None and x != t]
            rates = [r for r in run["rates"] if math.isfinite(r)]
            accs = " ".join(f"{a:.2f}@{s}" for s, a in sorted(run["accuracies"].items(), key=lambda kv: int(kv[0])))
            label = {None: "unclear", 0: "ok", 1: "too high", -1: "too low"}[truth["value"]]
            note = f" ({truth['note']})" if truth["note"] else ""
            when = "" if onset is None else str(onset)
            found = "" if onset is None or not truth["value"] else (
                "never" if named is None else f"{named} ({named - onset})")  # fmt: skip
            shown = ", ".join(map(str, alarms[:4])) + (" …" if len(alarms) > 4 else "")
            last = SHOW[v[max(v)]] if v else ""
            out.append(f"| {run['schedule']} | {rates[0]:.2g} / {min(rates):.2g} / {max(rates):.2g} | {accs} "
                       f"| {label}{note} | {when} | {found} | {len(alarms)}{': ' + shown if alarms else ''} | {last} "
                       f"| {timeline(v)} |")  # fmt: skip
        out.append("")
    return out


def confusion(runs: list[dict[str, Any]], verdicts: dict[int, dict[int, int | None]]) -> dict[str, dict[Any, int]]:
    table: dict[str, dict[Any, int]] = {p: {} for p in PHASES}
    for run in runs:
        if run["kind"] != "schedule":
            continue
        for step, value in verdicts[id(run)].items():
            cell = table[phase(run, step)]
            key = (truth_at(run, step), value)
            cell[key] = cell.get(key, 0) + 1
    return table


def confusion_tables(table: dict[str, dict[Any, int]]) -> list[str]:
    out = []
    for name, title in PHASES.items():
        cells = table[name]
        out += [f"**{title}**", "", "| truth \\ verdict | -1 | 0 | 1 | none |", "|---|---|---|---|---|"]
        for truth in (-1, 0, 1, None):
            row = [cells.get((truth, v), 0) for v in (-1, 0, 1, None)]
            if truth is not None or any(row):
                out.append(f"| {'unclear' if truth is None else truth} | " + " | ".join(map(str, row)) + " |")
        right = sum(n for (t, v), n in cells.items() if t is not None and t == v)
        wrong = sum(n for (t, v), n in cells.items() if t is not None and v is not None and t != v)
        out += ["", f"{right} right, {wrong} wrong, {sum(n for (t, v), n in cells.items() if v is None)} abstained.",
                ""]  # fmt: skip
    return out


def replay_section(runs: list[dict[str, Any]], worlds: list[str]) -> list[str]:
    """The verdict replayed from the recorded series: agreement with the monitor at the defaults, then FITTED chosen
    without each world and scored on it."""
    from lightning_viz.diagnostics import LossHistory

    out = ["## Replay: the verdict recomputed from the recorded series", ""]
    if not hasattr(LossHistory, "evidence"):
        return [*out, "Not run: `LossHistory.evidence` is not in this version of the package.", ""]
    names = {f.name for f in fields(Thresholds)}
    if missing := [n for n in FITTED if n not in names]:
        return [*out, f"Not run: FITTED names {missing} are not fields of Thresholds ({sorted(names)}).", ""]
    schedule_runs = [r for r in runs if r["kind"] == "schedule" and r["texts"]]
    evidence = {id(r): replay_evidence(r) for r in schedule_runs}
    defaults = Thresholds()
    same = total = 0
    for run in schedule_runs:
        for step, value in logged(run).items():
            total += 1
            same += learning_rate_verdict(evidence[id(run)][step], defaults).value == value
    out += [f"At the default thresholds the replay gives the monitor's verdict at {same} of {total} verdict steps "
            "(a check of the replay).", "",
            f"Leave one world out: {', '.join(FITTED)} chosen on the other worlds (grid x{', x'.join(map(str, GRID))} "
            f"around each default, fewest errors), errors counted at the verdict steps with a clear truth outside the "
            f"{GRACE} grace steps after a change (a wrong value, or an abstention where the truth is trouble).", "",
            "| world left out | " + " | ".join(FITTED) + " | errors (fitted) | errors (defaults) | steps |",
            "|---|" + "---|" * (len(FITTED) + 3)]  # fmt: skip

    def items(rs: list[dict[str, Any]]) -> list[tuple[int, Any]]:
        return [(truth_at(r, s), e) for r in rs for s, e in evidence[id(r)].items() if scored(r, s)]  # type: ignore[misc]

    held_verdicts: dict[int, dict[int, int | None]] = {}
    sums = [0, 0, 0]
    for world in worlds:
        t = fit(items([r for r in schedule_runs if r["world"]["name"] != world]), defaults)
        mine = [r for r in schedule_runs if r["world"]["name"] == world]
        test = items(mine)
        row = [errors(test, t), errors(test, defaults), len(test)]
        sums = [a + b for a, b in zip(sums, row, strict=True)]
        values = " | ".join(f"{getattr(t, n):.3g}" for n in FITTED)
        out.append(f"| {world} | {values} | {row[0]} | {row[1]} | {row[2]} |")
        for run in mine:
            held_verdicts[id(run)] = {s: learning_rate_verdict(e, t).value for s, e in evidence[id(run)].items()}
    every = fit(items(schedule_runs), defaults)
    defaults_row = " | ".join(f"{getattr(defaults, n):.3g}" for n in FITTED)
    every_row = " | ".join(f"{getattr(every, n):.3g}" for n in FITTED)
    blank = " |" * len(FITTED)
    out += [f"| all (held out) |{blank} {sums[0]} | {sums[1]} | {sums[2]} |", f"| (defaults) | {defaults_row} | | | |",
            f"| (fitted on all worlds) | {every_row} | {errors(items(schedule_runs), every)} | | |", "",
            "Confusion of the replayed verdict, each world with the thresholds fitted without it:", ""]  # fmt: skip
    return out + confusion_tables(confusion(schedule_runs, held_verdicts))


def report(runs: list[dict[str, Any]], header: list[str]) -> str:
    references = truths(runs)
    verdicts = {id(r): logged(r) for r in runs if r["kind"] == "schedule"}
    schedule_runs = [r for r in runs if r["kind"] == "schedule"]
    out = [*header, "", "## Worlds", "", "| world | architecture | data | optimizer | first layer | base rate |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for world in sorted(references):
        spec = next(r for r in schedule_runs if r["world"]["name"] == world)
        w = spec["world"]
        out.append(f"| {world} | {w['arch']} | {w['data']} | {w['optimizer']} | {w['kernel']}/{w['stride']} "
                   f"| {spec['lr']:g} |")  # fmt: skip
    out += ["", *world_tables(schedule_runs, verdicts, references),
            "## Confusion of the monitor's verdict over all verdict steps", "",
            "Rows: truth from the outcomes at that step; columns: `verdict/learning_rate` as logged (none: the verdict "
            "abstained, text only).", "", *confusion_tables(confusion(schedule_runs, verdicts))]  # fmt: skip
    out += replay_section(runs, sorted(references))
    return "\n".join(out)


# -- main -------------------------------------------------------------------------------------------------------------


def load(path: str) -> dict[str, Any]:
    saved = json.loads(Path(path).read_text())
    for run in saved["runs"]:  # JSON keys are strings
        run["series"] = {t: {int(s): v for s, v in series.items()} for t, series in run["series"].items()}
        run["texts"] = {int(s): v for s, v in run["texts"].items()}
        run["accuracies"] = {int(s): v for s, v in run["accuracies"].items()}
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--worlds", nargs="*", default=None, help="names of the worlds to run (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_WORLDS} worlds, {QUICK_STEPS} steps")
    parser.add_argument("--measure", type=int, nargs="?", const=300, default=None, metavar="STEPS",
                        help="time each world's constant rate (STEPS: 300); predict the full run time")  # fmt: skip
    parser.add_argument("--from-json", default=None, help="skip training: analyse the runs saved in this file")
    parser.add_argument("--out", default=None, help="output path stem (default: benchmarks/long_run_study; "
                        "with --quick, long_run_study_quick in the temporary directory; with --from-json, "
                        "the file's)")  # fmt: skip
    args = parser.parse_args()
    worlds = [w for w in WORLDS if args.worlds is None or w.name in args.worlds]
    if args.quick and args.worlds is None:
        worlds = worlds[:QUICK_WORLDS]
    if args.measure is not None:
        measure(worlds, args.processes, args.measure)
        return
    where = Path(tempfile.gettempdir()) if args.quick else ROOT / "benchmarks"  # a smoke run leaves the repo alone
    stem = args.out or str(where / ("long_run_study_quick" if args.quick else "long_run_study"))
    if args.from_json and not args.out:
        stem = str(Path(args.from_json).with_suffix(""))  # the report beside the runs it analyses
    start = time.perf_counter()
    command = "python benchmarks/long_run_study.py" + " ".join(["", *sys.argv[1:]])
    if args.from_json:
        saved = load(args.from_json)
    else:
        runs = run_all(worlds, args.processes, args.quick)
        saved = {"command": command, "seconds": time.perf_counter() - start, "processes": args.processes,
                 "runs": runs}  # fmt: skip
        Path(stem + ".json").write_text(json.dumps(saved))
    runs = saved["runs"]
    header = ["# Long-run study of the learning-rate verdict", "",
              f"Written by `{saved['command']}`: {len(runs)} runs ({sum(r['kind'] == 'range' for r in runs)} of them "
              f"the range test) in {saved['seconds'] / 60:.1f} minutes with {saved['processes']} processes "
              f"({sum(r['seconds'] for r in runs) / 60:.0f} minutes of run time in all).", "",
              f"Each run: {runs[-1]['steps']} steps at batch {BATCH} on {runs[-1]['train_size']} training images, "
              f"TrainingDiagnostics at its defaults (probe: 16 images of another seed); held-out accuracy on "
              f"{HELD_OUT} images of a third seed. Truth: a trouble schedule is trouble when it ends more than "
              f"{100 * GAP:.0f} points below its world's best healthy schedule, ok when less than {50 * GAP:.0f} "
              f"below. Grace: "
              f"{GRACE} steps from a change."]  # fmt: skip
    if args.from_json:
        header += ["", f"This analysis: `{command}`."]
    text = report(runs, header)
    text += f"\nThe analysis took {time.perf_counter() - start - (0 if args.from_json else saved['seconds']):.0f} s.\n"
    print(text)
    Path(stem + ".md").write_text(text)
    print(f"run time: {(time.perf_counter() - start) / 60:.1f} minutes", flush=True)


if __name__ == "__main__":
    main()
