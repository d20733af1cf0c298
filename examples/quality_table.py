"""Print the explanation-quality numbers of a run as a markdown table: first and last probe, per method, and what
the probes cost.

    python examples/train_shapes.py
    python examples/quality_table.py runs/k7s2_lr0.02_seed0

The README's table comes from these two commands.
"""

from __future__ import annotations

import argparse
import glob
import os
from collections import defaultdict

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

METRICS = (
    "pointing_game",
    "energy_pointing_game",
    "pointing_game_chance",
    "deletion_auc",
    "insertion_auc",
    "class_sensitivity",
    "randomization",
    "stability",
    "blank_maps",
)
MONITOR = "viz/overhead_ms/ExplanationQualityMonitor"
METHODS = ("gradcam", "deconvnet", "guided")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", help="a run's directory (it or a version_* folder below holds the event file)")
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.logdir, "**", "events.out.tfevents.*"), recursive=True))
    if not files:
        raise SystemExit(f"no event file under {args.logdir}")
    events = EventAccumulator(os.path.dirname(files[-1]), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()["scalars"]

    values: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(dict)
    for tag in tags:
        parts = tag.split("/")
        if len(parts) == 3 and parts[0] == "quality" and parts[1] in METHODS:  # not quality/threshold/<line>
            values[parts[1]][parts[2]] = [(e.step, e.value) for e in events.Scalars(tag)]
    if not values:
        raise SystemExit(f"no quality/* scalars in {files[-1]}: was ExplanationQualityMonitor attached?")
    methods = sorted(values, key=METHODS.index)
    steps = sorted({s for m in methods for series in values[m].values() for s, _ in series})
    first, last = steps[0], steps[-1]

    def cell(method: str, metric: str, step: int) -> str:
        found = [v for s, v in values[method].get(metric, []) if s == step]
        return f"{found[0]:+.2f}" if found else "-"

    header = " | ".join(f"{m} step {first} | {m} step {last}" for m in methods)
    print(f"| metric | {header} |")
    print("| --- |" + " ---: |" * (2 * len(methods)))
    for metric in METRICS:
        if any(metric in values[m] for m in methods):
            row = " | ".join(f"{cell(m, metric, first)} | {cell(m, metric, last)}" for m in methods)
            print(f"| {metric} | {row} |")

    if MONITOR in tags:
        total = [e.value for e in events.Scalars(MONITOR)]
        print(f"\nExplanationQualityMonitor: {len(total)} probes, {sum(total) / 1000:.1f} s in all, "
              f"{sum(total) / len(total):.0f} ms per probe on average")  # fmt: skip
        for method in methods:
            parts = []
            for part in ("maps", "randomization", "deletion_insertion"):
                tag = f"{MONITOR}/{method}/{part}"
                if tag in tags:
                    series = [e.value for e in events.Scalars(tag)]
                    parts.append(f"{part} {sum(series) / len(series):.0f} ms")
            print(f"  {method}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
