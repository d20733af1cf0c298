"""Validation study of the advice check of TrainingDiagnostics: does a check of a few dozen steps on copies confirm
advice that helps over a longer horizon, and leave unconfirmed advice that does not?

Each case trains a world's net (benchmarks/worlds.py) for ``at`` steps, then runs the product's advice check exactly
as the monitor runs it (``AdviceCheck``: a control, a second control in another batch order and the advised copy,
``STEPS`` steps each on the 8 older of the run's 12 latest batches, scored on the 4 latest), and measures the truth:
the control and the advised copy trained on for HORIZON more steps on the same fresh batches, scored on a held-out
set of 1,000 images none of them trained on. Truth for the learning rate and the kernel is the held-out loss: the
advice helps where it is more than 5 % lower (or the control diverged), hurts where it is more than 5 % higher (or the
advised copy diverged), and is neutral between. For the blur: it helps where the outputs are more than 10 % steadier
under 1-3 pixel shifts at an accuracy no more than 2 points lower, hurts where the accuracy is more than 2 points
lower or the outputs are no steadier, and is neutral otherwise.

The cases are the advice the verdicts give in worlds where they fail (a rate ten times too high or too low, a 1x1
first layer at stride 2, an 11x11/4 or 7x7/2 first layer that aliases) and advice no verdict would give, in healthy
worlds (a healthy rate divided or multiplied by ten, a healthy 3x3/1 kernel grown to 5): the check must not confirm
advice whose truth is "hurts" or "neutral".

    python benchmarks/counterfactual_study.py            # 12 cases x 2 seeds, 2 processes: see the report's head
    python benchmarks/counterfactual_study.py --quick    # 3 cases x 1 seed, short horizon: a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from worlds import OPTIMIZERS, Classifier, World, make_data  # noqa: E402

from lightning_viz.callbacks._advice import AdviceCheck, trials_for  # noqa: E402
from lightning_viz.diagnostics import shift_consistency  # noqa: E402
from lightning_viz.diagnostics.counterfactual import check_memory  # noqa: E402
from lightning_viz.diagnostics.verdicts import Verdict  # noqa: E402
from lightning_viz.methods.surgery import optimizer_for  # noqa: E402

STEPS = 24  # the monitor's default confirm_steps
HORIZON = 300
PROBES = (0, 5, 10, 25, 50, 100, 200, 300)  # TrainingDiagnostics' default probes (every_n_steps=100, early_steps)
BATCH = 64


@dataclass(frozen=True)
class Case:
    name: str
    world: World
    lr: float
    at: int
    verdict: str  # the verdict whose advice is tried
    value: int
    suggestion: float | None
    given: bool  # advice a verdict gives here (else: advice no verdict would give, in a healthy world)


def _world(arch: str, data: str, optimizer: str, kernel: int, stride: int) -> World:
    return World(f"{arch}/{data}/{optimizer} {kernel}x{kernel}/{stride}", arch, data, optimizer, kernel, stride)


# fmt: off
CASES = [
    Case("rate x10 too high -> /10", _world("zf", "shapes", "sgd", 7, 2), 0.2, 50, "learning_rate", 1, 0.02, True),
    Case("rate x10 too high -> /10", _world("zf", "shapes", "adam", 7, 2), 1e-2, 50, "learning_rate", 1, 1e-3, True),
    Case("rate /100 too low -> x10", _world("zf", "shapes", "sgd", 7, 2), 2e-4, 300, "learning_rate", -1, 2e-3, True),
    Case("rate /100 too low -> x10", _world("zf-bn", "shapes-large", "adamw", 7, 2), 1e-5, 200, "learning_rate", -1,
         1e-4, True),
    Case("1x1/2 -> kernel 3", _world("zf", "shapes", "sgd", 1, 2), 0.02, 150, "kernel_size", -1, 3, True),
    Case("1x1/2 -> kernel 3", _world("vgg", "shapes-small", "adam", 1, 2), 1e-3, 150, "kernel_size", -1, 3, True),
    Case("11x11/4 aliasing -> blur", _world("zf", "shapes", "sgd", 11, 4), 0.02, 200, "stride", 1, None, True),
    Case("7x7/2 aliasing -> blur", _world("vgg", "shapes-large", "adam", 7, 2), 1e-3, 200, "stride", 1, None, True),
    Case("healthy rate -> /10", _world("zf", "shapes", "sgd", 7, 2), 0.02, 200, "learning_rate", 1, 0.002, False),
    Case("healthy rate -> x10", _world("zf", "shapes", "adam", 7, 2), 1e-3, 200, "learning_rate", -1, 1e-2, False),
    Case("healthy rate -> /10", _world("zf-bn", "shapes-large", "adamw", 7, 2), 1e-3, 200, "learning_rate", 1, 1e-4,
         False),
    Case("healthy 3x3/1 -> kernel 5", _world("zf", "shapes", "sgd", 3, 1), 0.02, 200, "kernel_size", -1, 5, False),
]
# fmt: on


def _first_conv(model: torch.nn.Module) -> str:
    return next(name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))


def _evaluate(model: torch.nn.Module, held: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        losses = [float(F.cross_entropy(model(x), y)) for x, y in held]
        accuracy = sum(float((model(x).argmax(1) == y).float().sum()) for x, y in held) / sum(len(y) for _, y in held)
        shifts = shift_consistency(model, held[0][0][:256]) if all(map(math.isfinite, losses)) else math.nan
    return {"loss": sum(losses) / len(losses), "accuracy": accuracy, "shift": shifts}


def _continue(model: torch.nn.Module, optimizer: torch.optim.Optimizer, variant: Any, batches: list[Any],
              held: list[Any]) -> dict[str, float]:  # fmt: skip
    """The truth run: a copy (with the advice, where ``variant``) trained on ``batches``, scored on ``held``."""
    twin = copy.deepcopy(model)
    twin_optimizer = optimizer_for(optimizer, model, twin)
    if variant is not None:
        twin, twin_optimizer = variant(twin, twin_optimizer)
    twin.train()
    torch.manual_seed(1)
    for x, y in batches:
        twin_optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(twin(x), y)
        if not math.isfinite(float(loss.detach())):
            return {"loss": math.nan, "accuracy": math.nan, "shift": math.nan, "diverged": 1.0}
        loss.backward()
        twin_optimizer.step()
    return {**_evaluate(twin, held), "diverged": 0.0}


def truth(case: Case, control: dict[str, float], advised: dict[str, float]) -> str:
    if case.verdict != "stride":
        if control["diverged"] and not advised["diverged"]:
            return "helps"
        if advised["diverged"] or not math.isfinite(advised["loss"]):
            return "hurts" if not control["diverged"] else "neutral"
        change = advised["loss"] / control["loss"] - 1
        return "helps" if change < -0.05 else "hurts" if change > 0.05 else "neutral"
    if advised["diverged"] or advised["accuracy"] < control["accuracy"] - 0.02:
        return "hurts"
    steadier = advised["shift"] / control["shift"] - 1
    return "helps" if steadier < -0.10 else "hurts" if steadier >= 0 else "neutral"


def run_case(job: tuple[int, int, int]) -> dict[str, Any]:
    index, seed, horizon = job
    case = CASES[index]
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    world = case.world
    model = Classifier(world.net(), world.optimizer, case.lr)
    optimizer = OPTIMIZERS[world.optimizer](model.parameters(), case.lr)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(make_data(world.data, 6000, seed), batch_size=BATCH, shuffle=True, generator=generator)
    held = [b[:2] for b in DataLoader(make_data(world.data, 1000, 10_000 + seed), batch_size=250)]
    stream = iter(())

    def batch() -> Any:
        nonlocal stream
        try:
            return next(stream)
        except StopIteration:
            stream = iter(loader)
            return next(stream)

    start = time.perf_counter()
    model.train()
    recent: list[Any] = []
    diverged_before = False
    check = AdviceCheck(STEPS)
    for step in range(case.at):
        finite = not diverged_before and all(bool(torch.isfinite(p).all()) for p in model.parameters())
        if step in PROBES and finite:  # the monitor keeps the state of its latest finite probe
            check.keep_state(model, optimizer, step)
        x, y = batch()[:2]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        recent = [*recent, (x, y)][-12:]
        diverged_before = diverged_before or not math.isfinite(float(loss.detach()))
    first = _first_conv(model)
    verdict = Verdict(case.verdict, case.value, "✗", suggestion=case.suggestion)
    check.update([verdict], case.at, first, case.lr)
    for kept in recent:
        check.keep(kept)
    copies = check_memory(model, optimizer)  # one copy, its gradients, two optimizer states
    batches = sum(t.numel() * t.element_size() for kept in recent for t in kept)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    state += sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                 if isinstance(v, torch.Tensor))  # fmt: skip
    start_from = None
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # as the monitor: from the kept state
        assert check.snapshot is not None
        start_from = check.snapshot[0]
        model, optimizer = check.restored(model, optimizer)
    check_start = time.perf_counter()
    check.run(model, optimizer, case.at, start=start_from)
    check_seconds = time.perf_counter() - check_start
    judgement = check.tried[case.verdict][1]
    assert check.result is not None
    (advised_scores,) = check.result.variants.values()
    scores = {"control": asdict(check.result.control), "second_control": asdict(check.result.second_control),
              "advised": asdict(advised_scores)}  # fmt: skip
    (trial,) = trials_for([verdict], first, case.lr)
    later = [batch()[:2] for _ in range(horizon)]
    control = _continue(model, optimizer, None, later, held)
    advised = _continue(model, optimizer, trial.variant, later, held)
    return {
        "case": case.name, "world": world.name, "given": case.given, "seed": seed, "at": case.at,
        "advice": trial.name, "outcome": judgement.outcome, "difference": judgement.difference,
        "noise": judgement.noise, "text": judgement.text, "check_seconds": check_seconds,
        "control": control, "advised": advised, "truth": truth(case, control, advised),
        "diverged_before": diverged_before, "from_step": start_from, "seconds": time.perf_counter() - start,
        "memory": {"copies": copies, "batches": batches, "kept_state": state}, "scores": scores,
    }  # fmt: skip


def report(runs: list[dict[str, Any]], wall: float, command: str, rerun: str = "") -> str:
    outcomes = ("confirmed", "inconclusive", "not confirmed")
    lines = [
        "# The advice check against the truth",
        "",
        f"`{command}`: {len(runs)} runs in {wall / 60:.1f} minutes (2 processes, 2 cores){rerun}. Check: {STEPS} "
        f"steps per copy; truth: {HORIZON} more steps of the control and the advised copy, scored on 1,000 held-out "
        "images.",
        "",
        "| truth | " + " | ".join(outcomes) + " |",
        "|---|---:|---:|---:|",
    ]
    for truth_value in ("helps", "neutral", "hurts"):
        counts = [sum(r["truth"] == truth_value and r["outcome"] == o for r in runs) for o in outcomes]
        lines.append(f"| advice {truth_value} | " + " | ".join(map(str, counts)) + " |")
    wrong = [r for r in runs if r["outcome"] == "confirmed" and r["truth"] != "helps"]
    missed = [r for r in runs if r["outcome"] == "not confirmed" and r["truth"] == "helps"]
    lines += [
        "",
        f"Confirmed advice that did not help: **{len(wrong)}**; advice that helped called not confirmed: "
        f"**{len(missed)}**. Check time: median {sorted(r['check_seconds'] for r in runs)[len(runs) // 2]:.1f} s, "
        f"longest {max(r['check_seconds'] for r in runs):.1f} s (one thread). Memory beside the run (the last "
        "column): one copy of the model with its gradients and two of the optimizer state while a check runs "
        "(`check_memory`), the 12 kept batches, and the state kept on the CPU from the latest finite probe.",
        "",
        "| case | world | seed | advice | check | truth | held-out loss (control -> advised) | accuracy | shift "
        "distance | check s | memory MB |",
        "|---|---|---:|---|---|---|---|---|---|---:|---:|",
    ]
    for r in runs:
        c, a = r["control"], r["advised"]
        lines.append(
            f"| {r['case']}{'' if r['given'] else ' (no verdict gives it)'} | {r['world']} | {r['seed']} | "
            f"{r['advice']} | {r['outcome']} | {r['truth']} | {c['loss']:.3f} -> {a['loss']:.3f} | "
            f"{c['accuracy']:.2f} -> {a['accuracy']:.2f} | {c['shift']:.3f} -> {a['shift']:.3f} | "
            f"{r['check_seconds']:.1f} | {sum(r['memory'].values()) / 2**20:.1f} |"
        )
    lines += ["", "What each check said:", ""]
    lines += [f"- {r['case']}, {r['world']}, seed {r['seed']}: {r['text']}" for r in runs]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 cases, 1 seed, a 60-step horizon")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--rerun", type=int, nargs="+", help="rerun these cases (indices into CASES) and merge them "
                        "into the saved benchmarks/counterfactual_study.json")  # fmt: skip
    args = parser.parse_args()
    global HORIZON
    if args.quick:
        HORIZON = 60
        jobs = [(i, 0, HORIZON) for i in (0, 4, 8)]
        out = Path(tempfile.gettempdir()) / "counterfactual_study_quick"
    else:
        cases = args.rerun if args.rerun else range(len(CASES))
        jobs = [(i, seed, HORIZON) for i in cases for seed in range(args.seeds)]
        out = ROOT / "benchmarks" / "counterfactual_study"
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(2) as pool:
        runs = pool.map(run_case, jobs, chunksize=1)
    wall = time.perf_counter() - start
    command, rerun = "python benchmarks/counterfactual_study.py" + (" --quick" if args.quick else ""), ""
    if args.rerun:  # the saved runs, those of the rerun cases replaced in place
        saved = json.loads(out.with_suffix(".json").read_text())
        fresh = {(r["case"], r["world"], r["seed"]): r for r in runs}
        runs = [fresh.pop((r["case"], r["world"], r["seed"]), r) for r in saved["runs"]] + list(fresh.values())
        rerun = (f"; cases {', '.join(map(str, args.rerun))} rerun with `--rerun {' '.join(map(str, args.rerun))}` "
                 f"in {(time.perf_counter() - start) / 60:.1f} minutes")  # fmt: skip
        wall = saved.get("wall", wall)
    text = report(runs, wall, command, rerun)
    out.with_suffix(".md").write_text(text)
    record = {"wall": wall, "runs": runs, "cases": [asdict(c) for c in CASES]}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(text)
    print(f"written: {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
