"""``lightning-viz report LOGDIR``: the verdicts of every run under a TensorBoard log directory, without TensorBoard.

For each run (a directory holding event files with ``TrainingDiagnostics`` verdicts): the verdicts over time (the
steps where one of them changed, at probes and at the learning-rate checks between them) and the latest ones with
their numbers and advice, as text or ``--json``; then the ``tensorboard`` command that shows everything the runs
wrote (TensorBoard keeps a random sample of each tag's steps otherwise). The exit status is 1 when any run's latest
verdict is not ok (so a CI pipeline can gate on it), 2 when no verdict was found, and 0 otherwise. A verdict that
abstains ("not enough evidence yet") does not fail.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shlex
import struct
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import google_crc32c
from tensorboard.compat.proto.event_pb2 import Event

from lightning_viz.diagnostics.verdicts import LABELS, NAMES, TEXT_TAG, verdict_lines

__all__ = [
    "OTHER_SAMPLES",
    "TENSORBOARD_SAMPLES",
    "RunVerdicts",
    "Verdict",
    "format_text",
    "main",
    "read_runs",
    "samples_per_plugin",
    "tensorboard_command_for",
]

TENSORBOARD_SAMPLES = {"scalars": 1000, "images": 10, "audio": 10, "histograms": 500, "pr_curves": 100}
"""The steps TensorBoard keeps of each tag, by plugin, unless ``--samples_per_plugin`` says otherwise (a random
sample that always holds the latest step): ``DEFAULT_TENSOR_SIZE_GUIDANCE`` in tensorboard's
``backend/event_processing/data_ingester.py`` (read in tensorboard 2.21), where every other plugin, ``text`` among
them, gets ``DEFAULT_SIZE_GUIDANCE``'s 10 tensors (:data:`OTHER_SAMPLES`). The flag's plugin names are the
``PLUGIN_NAME`` of ``plugins/scalar/metadata.py``, ``plugins/image/metadata.py`` and ``plugins/text/metadata.py``
(``scalars``, ``images``, ``text``); ``plugins/core/core_plugin.py`` parses the flag, and ``data/server_ingester.py``
hands it to the compiled data server TensorBoard reads with where it is installed (``--load_fast=auto``, the
default), 0 becoming ``all``."""

OTHER_SAMPLES = 10
"""What TensorBoard keeps of each tag of a plugin :data:`TENSORBOARD_SAMPLES` does not name (``text``)."""

_TEXT_SUMMARY = f"{TEXT_TAG}/text_summary"  # SummaryWriter.add_text(tag, ...) writes under <tag>/text_summary
_GIVEN = ("✗", "✓")  # the marks of a line that gives a verdict (… and – abstain; verdicts.py's docstring)
_KINDS = {"simple_value": "scalars", "image": "images", "histo": "histograms", "audio": "audio"}  # pre-plugin values


@dataclass
class Verdict:
    """One verdict at one step: its value (None: no verdict), label, degree and line of text."""

    value: int | None
    label: str
    degree: float | None = None
    text: str = ""


@dataclass
class RunVerdicts:
    """A run's verdicts: the latest ones and, per step with a verdict (the probes, and the learning-rate checks
    between them), every value (None: no verdict; at a check, the kernel's and the stride's are the last probe's)."""

    run: str
    last_step: int
    latest: dict[str, Verdict]
    history: dict[int, dict[str, int | None]] = field(default_factory=dict)
    probes: int = 0
    """The steps with a verdict text: every probe (and the checks where the learning-rate verdict changed)."""

    @property
    def ok(self) -> bool:
        return all(v.value in (0, None) for v in self.latest.values())


@dataclass
class _Events:
    """What the report reads from one run's event files."""

    values: dict[str, dict[int, int]] = field(default_factory=lambda: {name: {} for name in NAMES})
    degrees: dict[str, dict[int, float]] = field(default_factory=lambda: {name: {} for name in NAMES})
    texts: dict[int, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # plugin -> tag -> records
    plugins: dict[str, str] = field(default_factory=dict)  # a tensor tag -> its plugin (as its metadata last named it)


def _label(name: str, value: int | None) -> str:
    return "no verdict" if value is None else LABELS[name].get(value, str(value))


def _run_dirs(logdir: Path) -> list[Path]:
    return sorted({Path(root) for root, _, files in os.walk(logdir) if any("tfevents" in f for f in files)})


def _records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file (an event file): each a length, its masked CRC32C, the data and its masked
    CRC32C. A partial last record (a run still writing) ends the file quietly, a damaged one with a warning. The data
    checksums are checked where ``google-crc32c`` is native (TensorBoard's own reader computes them in pure Python,
    byte by byte: most of its time on a run with images)."""
    crc32c, native = google_crc32c.value, getattr(google_crc32c, "implementation", "python") == "c"
    header, footer = struct.Struct("<QI"), struct.Struct("<I")
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            end, size = 0, len(data)
            while end + header.size <= size:
                begin = end
                length, masked = header.unpack_from(data, begin)
                crc = crc32c(data[begin : begin + 8])  # masked as TFRecord does, inline: this runs once a record
                if ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF) != masked:
                    warnings.warn(f"{path}: damaged record header at byte {begin}; read up to it", stacklevel=2)
                    return
                end = begin + header.size + length + footer.size
                if end > size:
                    return
                record = data[begin + header.size : end - footer.size]
                if native:
                    crc, (masked,) = crc32c(record), footer.unpack_from(data, end - footer.size)
                    if ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF) != masked:
                        warnings.warn(f"{path}: damaged record at byte {begin}; read up to it", stacklevel=2)
                        return
                yield record


def _read_events(directory: Path) -> _Events:
    """The verdicts, their degrees and texts of the run in ``directory`` (its event files, oldest first, as
    TensorBoard merges them; a step written twice keeps its last value), and how many records each tag has."""
    events = _Events()
    verdicts = {f"verdict/{name}": events.values[name] for name in NAMES}
    degrees = {f"degree/{name}": events.degrees[name] for name in NAMES}
    counts, plugins, parse = events.counts, events.plugins, Event.FromString
    scalars = counts.setdefault("scalars", {})
    for path in sorted(p for p in directory.iterdir() if "tfevents" in p.name and p.is_file()):
        for record in _records(path):
            event = parse(record)
            step = event.step
            for value in event.summary.value:  # none in the file version, graph, session log, ... events
                tag, kind = value.tag, value.WhichOneof("value")
                if kind == "simple_value":
                    scalars[tag] = scalars.get(tag, 0) + 1
                    if tag in verdicts:
                        verdicts[tag][step] = int(value.simple_value)
                    elif tag in degrees:
                        degrees[tag][step] = float(value.simple_value)
                    continue
                if kind == "tensor":
                    plugin = plugins[tag] = value.metadata.plugin_data.plugin_name or plugins.get(tag, "")
                    if tag == _TEXT_SUMMARY and value.tensor.string_val:
                        events.texts[step] = value.tensor.string_val[0].decode()
                else:
                    plugin = _KINDS.get(kind or "", "")
                if plugin:
                    tags = counts.setdefault(plugin, {})
                    tags[tag] = tags.get(tag, 0) + 1
    return events


def _said(name: str, line: str) -> tuple[bool, int | None]:
    """What a verdict's line says its value is: (True, None) where it abstains (``…``, ``–``), (True, value) where
    its mark and label name one (``✓ ok``, ``✗ too high``), (False, None) where it names none this module knows."""
    if not line.startswith(_GIVEN):
        return True, None
    said = line[len(_GIVEN[0]) :].strip()
    value = next((value for value, label in LABELS[name].items() if said.startswith(label)), None)
    return value is not None, value


def _verdicts(directory: Path, events: _Events) -> RunVerdicts | None:
    """The run's verdicts over time, at every step with a ``verdict/<name>`` number or a verdict text. A verdict's
    value at a step is its number there; without one, what the step's text says (a learning-rate check's text repeats
    the latest probe's kernel and stride verdicts, and while the rate is too high they abstain); without either, its
    last value (a check gives the learning-rate verdict only). The latest: the last step's values, each with the
    degree of its latest number where that is its value, and the lines of the latest text at or before that step."""
    steps = set(events.texts).union(*events.values.values())
    if not steps:
        return None
    current: dict[str, int | None] = dict.fromkeys(NAMES)
    numbered: dict[str, int | None] = dict.fromkeys(NAMES)  # the step of each verdict's latest number
    history = {}
    for step in sorted(steps):
        lines = verdict_lines(events.texts[step]) if step in events.texts else {}
        for name in NAMES:
            if step in events.values[name]:
                current[name], numbered[name] = events.values[name][step], step
            elif name in lines:
                known, value = _said(name, lines[name])
                if known:
                    current[name] = value
        history[step] = dict(current)
    last = max(history)
    texts = [step for step in events.texts if step <= last]
    lines = verdict_lines(events.texts[max(texts)]) if texts else {}
    latest = {}
    for name in NAMES:
        value, at, degree = current[name], numbered[name], None
        if value is not None and at is not None and events.values[name][at] == value:
            degree = events.degrees[name].get(at)
        latest[name] = Verdict(value, _label(name, value), degree, lines.get(name, ""))
    return RunVerdicts(str(directory), last, latest, history, probes=len(events.texts))


def _read(logdir: Path) -> tuple[list[RunVerdicts], dict[str, dict[str, int]]]:
    """The verdicts of the runs under ``logdir`` that logged any, and how many records every tag of every run has, by
    plugin and tag (the largest over the runs that share a tag)."""
    runs: list[RunVerdicts] = []
    counts: dict[str, dict[str, int]] = {}
    for directory in _run_dirs(logdir):
        events = _read_events(directory)
        run = _verdicts(directory, events)
        if run is not None:
            runs.append(run)
        for plugin, written in events.counts.items():
            tags = counts.setdefault(plugin, {})
            for tag, n in written.items():
                tags[tag] = max(tags.get(tag, 0), n)
    return runs, counts


def read_runs(logdir: str | os.PathLike[str]) -> list[RunVerdicts]:
    """The verdicts of every run under ``logdir`` that logged any (runs without verdicts are skipped)."""
    return _read(Path(logdir))[0]


def samples_per_plugin(counts: Mapping[str, Mapping[str, int]]) -> str:
    """The ``--samples_per_plugin`` value that makes TensorBoard keep every step of every tag: for each plugin where
    some tag has more steps than TensorBoard keeps by default (:data:`TENSORBOARD_SAMPLES`), ``<plugin>=<the most
    steps any of its tags has>``; scalars, images and text first, the others by name. Empty where the defaults keep
    everything.

    Args:
        counts: plugin (``scalars``, ``images``, ``text``, ...) -> tag -> its steps (the report counts records: one
            a step, unless a step was written twice).

    Example::

        >>> samples_per_plugin({"scalars": {"train/loss": 10000, "verdict/stride": 1000}, "images": {"gradcam": 77}})
        'scalars=10000,images=77'
    """
    order = {plugin: i for i, plugin in enumerate(("scalars", "images", "text"))}
    largest = {plugin: max(tags.values(), default=0) for plugin, tags in counts.items()}
    kept = [(plugin, n) for plugin, n in largest.items() if n > TENSORBOARD_SAMPLES.get(plugin, OTHER_SAMPLES)]
    kept.sort(key=lambda item: (order.get(item[0], len(order)), item[0]))
    return ",".join(f"{plugin}={n}" for plugin, n in kept)


def tensorboard_command_for(logdir: str, counts: Mapping[str, Mapping[str, int]],
                            executable: str = "tensorboard") -> str:  # fmt: skip
    """The ``tensorboard`` command that shows every step written under ``logdir`` (:func:`samples_per_plugin`)."""
    samples = samples_per_plugin(counts)
    return f"{executable} --logdir {shlex.quote(logdir)}" + (f" --samples_per_plugin {samples}" if samples else "")


def _changes(history: dict[int, dict[str, int | None]]) -> list[int]:
    """The steps where a verdict changed, with the first and the last."""
    steps = sorted(history)
    return [s for i, s in enumerate(steps) if i in (0, len(steps) - 1) or history[s] != history[steps[i - 1]]]


def _header(run: RunVerdicts) -> str:
    checks = len(run.history) - run.probes
    steps = f"{run.probes} probe{'s' * (run.probes != 1)}"
    if checks:
        steps += f", {checks} learning-rate check{'s' * (checks != 1)}"
    return f"{run.run}  ({'ok' if run.ok else 'NOT OK'}; {steps}, last at step {run.last_step})"


def format_text(runs: list[RunVerdicts], tensorboard: str | None = None) -> str:
    """The report as text; ``tensorboard``: the command that shows everything (:func:`tensorboard_command_for`)."""
    out = []
    width = max(len(name) for name in NAMES) + 2
    for run in runs:
        out += [_header(run), "", "  verdicts over time (the steps where one changed):", "",
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
    if tensorboard is not None:
        out += ["everything that was written, in TensorBoard (which keeps a sample of each tag's steps otherwise):",
                f"  {tensorboard}", ""]  # fmt: skip
    return "\n".join(line.rstrip() for line in out)


def _report(args: argparse.Namespace) -> int:
    logdir = Path(args.logdir)
    if not logdir.is_dir():
        print(f"lightning-viz report: {logdir} is not a directory", file=sys.stderr)
        return 2
    runs, counts = _read(logdir)
    if not runs:
        print(f"lightning-viz report: no run under {logdir} logged verdicts (is TrainingDiagnostics attached, and "
              "has it probed yet?)", file=sys.stderr)  # fmt: skip
        return 2
    tensorboard = tensorboard_command_for(args.logdir, counts)
    if args.json:
        runs_json = [{**asdict(r), "ok": r.ok} for r in runs]
        print(json.dumps({"ok": all(r.ok for r in runs), "runs": runs_json, "tensorboard": tensorboard}, indent=2))
    else:
        print(format_text(runs, tensorboard))
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
