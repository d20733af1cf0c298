"""``lightning-viz report LOGDIR``: the verdicts of every run under a TensorBoard log directory, without TensorBoard.

For each run (a directory holding event files with ``TrainingDiagnostics`` verdicts): the verdicts over time (the
probes where one of them changed) and the latest ones with their numbers and advice, as text or ``--json``. The exit
status is 1 when any run's latest verdict is not ok (so a CI pipeline can gate on it), 2 when no verdict was found,
and 0 otherwise. A verdict that abstains ("not enough evidence yet") does not fail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lightning_viz.diagnostics.verdicts import LABELS, NAMES, TEXT_TAG, verdict_lines

__all__ = ["RunVerdicts", "Verdict", "main", "read_runs"]


@dataclass
class Verdict:
    """One verdict at one probe: its value (None: no verdict), label, degree and line of text."""

    value: int | None
    label: str
    degree: float | None = None
    text: str = ""


@dataclass
class RunVerdicts:
    """A run's verdicts: the latest ones and, per probe step, every value (None: no verdict at that probe)."""

    run: str
    last_step: int
    latest: dict[str, Verdict]
    history: dict[int, dict[str, int | None]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v.value in (0, None) for v in self.latest.values())


def _label(name: str, value: int | None) -> str:
    return "no verdict" if value is None else LABELS[name].get(value, str(value))


def _run_dirs(logdir: Path) -> list[Path]:
    return sorted({Path(root) for root, _, files in os.walk(logdir) if any("tfevents" in f for f in files)})


def read_runs(logdir: str | os.PathLike[str]) -> list[RunVerdicts]:
    """The verdicts of every run under ``logdir`` that logged any (runs without verdicts are skipped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = []
    for directory in _run_dirs(Path(logdir)):
        events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        tags = events.Tags()
        text_tag = f"{TEXT_TAG}/text_summary"
        if text_tag not in tags.get("tensors", []):
            continue
        texts = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors(text_tag)}
        values = {
            name: {e.step: int(e.value) for e in events.Scalars(f"verdict/{name}")}
            for name in NAMES
            if f"verdict/{name}" in tags["scalars"]
        }
        degrees = {
            name: {e.step: float(e.value) for e in events.Scalars(f"degree/{name}")}
            for name in NAMES
            if f"degree/{name}" in tags["scalars"]
        }
        last = max(texts)
        lines = verdict_lines(texts[last])
        latest = {}
        for name in NAMES:
            value = values.get(name, {}).get(last)
            latest[name] = Verdict(value, _label(name, value), degrees.get(name, {}).get(last), lines.get(name, ""))
        history = {step: {name: values.get(name, {}).get(step) for name in NAMES} for step in sorted(texts)}
        runs.append(RunVerdicts(str(directory), last, latest, history))
    return runs


def _changes(history: dict[int, dict[str, int | None]]) -> list[int]:
    """The probe steps where a verdict changed, with the first and the last."""
    steps = sorted(history)
    return [s for i, s in enumerate(steps) if i in (0, len(steps) - 1) or history[s] != history[steps[i - 1]]]


def format_text(runs: list[RunVerdicts]) -> str:
    out = []
    width = max(len(name) for name in NAMES) + 2
    for run in runs:
        out += [f"{run.run}  ({'ok' if run.ok else 'NOT OK'}; {len(run.history)} probes, last at step {run.last_step})",
                "", "  verdicts over time (the probes where one changed):", "",
                "  " + "step".ljust(8) + "".join(n.replace("_", " ").ljust(22) for n in NAMES)]  # fmt: skip
        for step in _changes(run.history):
            cells = "".join(_label(n, run.history[step][n]).ljust(22) for n in NAMES)
            out.append("  " + str(step).ljust(8) + cells)
        out += ["", f"  latest (step {run.last_step}):", ""]
        for name, verdict in run.latest.items():
            degree = "" if verdict.degree is None else f", degree {verdict.degree:.2g}"
            value = "-" if verdict.value is None else str(verdict.value)
            out.append(f"  {name.replace('_', ' ').ljust(width)}{verdict.label} ({value}{degree})")
            if verdict.text:
                out.append(f"  {''.ljust(width)}{verdict.text}")
        out.append("")
    return "\n".join(line.rstrip() for line in out)


def _report(args: argparse.Namespace) -> int:
    logdir = Path(args.logdir)
    if not logdir.is_dir():
        print(f"lightning-viz report: {logdir} is not a directory", file=sys.stderr)
        return 2
    runs = read_runs(logdir)
    if not runs:
        print(f"lightning-viz report: no run under {logdir} logged verdicts (is TrainingDiagnostics attached, and "
              "has it probed yet?)", file=sys.stderr)  # fmt: skip
        return 2
    if args.json:
        print(json.dumps({"ok": all(r.ok for r in runs), "runs": [{**asdict(r), "ok": r.ok} for r in runs]}, indent=2))
    else:
        print(format_text(runs))
    return 0 if all(r.ok for r in runs) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The ``lightning-viz`` console command."""
    parser = argparse.ArgumentParser(prog="lightning-viz", description="lightning_viz from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser(
        "report",
        help="print the verdicts of every run under a log directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("logdir", help="a TensorBoard log directory (searched recursively for runs)")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    return _report(args)


if __name__ == "__main__":
    sys.exit(main())
