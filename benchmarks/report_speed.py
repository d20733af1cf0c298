"""How long ``lightning-viz report`` takes on a long run: 100,000 steps of the example's suite, images included.

The run is written without training by tests/long_events.py: a short real fit of the five monitors of
``examples/train_shapes.py`` gives the tags and the PNG bytes of one probe, which are written again at a long run's
cadences (probes every 100 steps, learning-rate checks every 50, Lightning's scalars every 10, the images on the
suite's thinning cadence). Timed, each in a fresh process (median of ``--repeats``):

  - ``lightning-viz report DIR``, the command;
  - importing ``lightning_viz.report`` alone (``python -c``), the command's start-up;
  - the report's reading of the run alone, timed inside a process;
  - the general way, for comparison: TensorBoard's ``EventAccumulator`` keeping every scalar and tensor, then the
    verdict tags read from it, with the same imports: its process, and its reading timed inside it; once
    (``--no-old`` leaves it out).

    python benchmarks/report_speed.py            # writes benchmarks/report_speed.md

The run is written to a temporary directory (``--keep DIR`` writes it there and keeps it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "report_speed.md"
sys.path.insert(0, str(HERE.parent / "tests"))  # tests/long_events.py

OLD = """
import sys, time
from pathlib import Path
from lightning_viz.diagnostics.verdicts import NAMES, TEXT_TAG
from lightning_viz.report import _run_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

start = time.perf_counter()
for directory in _run_dirs(Path(sys.argv[1])):
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors(f"{TEXT_TAG}/text_summary")}
    values = {name: {e.step: e.value for e in events.Scalars(f"verdict/{name}")} for name in NAMES}
print(time.perf_counter() - start)
"""
"""The verdicts read the general way, with TensorBoard's EventAccumulator, in short; prints the seconds it read
for."""

NEW = """
import sys, time
from pathlib import Path
from lightning_viz.report import _read

start = time.perf_counter()
_read(Path(sys.argv[1]))
print(time.perf_counter() - start)
"""
"""The report's reading now (the verdicts and the counts of every tag); prints the seconds it read for."""


def timed(command: list[str]) -> tuple[float, str]:
    """Wall seconds of ``command`` in a fresh process, and its output."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr[-2000:]}")
    return seconds, result.stdout


def median(command: list[str], repeats: int) -> tuple[float, str]:
    runs = [timed(command) for _ in range(repeats)]
    return statistics.median(seconds for seconds, _ in runs), runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-old", action="store_true", help="leave out the EventAccumulator way (a minute)")
    parser.add_argument("--keep", type=Path, help="write the run here and keep it")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import torch
    from long_events import fit_example_suite, read_suite, write_long_run

    torch.set_num_threads(1)  # the short fit: one core (the machine is shared)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        start = time.perf_counter()
        suite = read_suite(fit_example_suite(Path(scratch) / "fit"))
        fit_s = time.perf_counter() - start
        logdir = root / "long"
        if logdir.exists():
            shutil.rmtree(logdir)
        start = time.perf_counter()
        run = write_long_run(logdir / "run", suite, steps=args.steps)
        write_s = time.perf_counter() - start

        python = sys.executable
        command = shutil.which("lightning-viz", path=str(Path(python).parent)) or "lightning-viz"
        report_s, report = median([command, "report", str(logdir)], args.repeats)
        import_s, _ = median([python, "-c", "import lightning_viz.report"], args.repeats)
        read_s = statistics.median(float(timed([python, "-c", NEW, str(logdir)])[1]) for _ in range(args.repeats))
        old_s, old_read_s = None, None
        if not args.no_old:
            old_s, out = timed([python, "-c", OLD, str(logdir)])
            old_read_s = float(out)
        megabytes = run.megabytes
    load_after = os.getloadavg()

    counts = {plugin: (len(tags), sum(tags.values()), max(tags.values())) for plugin, tags in run.counts.items()}
    records = sum(total for _, total, _ in counts.values())
    written = "; ".join(f"{plugin}: {n} tags, {total:,} values, {most:,} at most a tag" for plugin, (n, total, most)
                        in counts.items())  # fmt: skip
    tensorboard = report.strip().splitlines()[-1].strip().replace(str(logdir), "DIR")
    rows = [
        ("`lightning-viz report DIR` (the command, its process)", report_s),
        ("its start-up: `python -c 'import lightning_viz.report'`", import_s),
        ("its reading of the run (timed inside a process)", read_s),
    ]
    if old_s is not None and old_read_s is not None:
        rows += [
            ("TensorBoard's EventAccumulator keeping every scalar and tensor, the verdict tags (its process)", old_s),
            ("EventAccumulator: its reading of the run (timed inside the process)", old_read_s),
        ]
    lines = [
        "# How long `lightning-viz report` takes on a long run",
        "",
        f"Written by `python benchmarks/report_speed.py{' --no-old' if args.no_old else ''}` (what each row times: its"
        " docstring).",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; Python "
        f"{platform.python_version()}, tensorboard {version('tensorboard')}, protobuf {version('protobuf')}, "
        f"google-crc32c {version('google-crc32c')}",
        f"- machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, shared (load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after); event file on local disk, in the page cache",
        f"- the run: {run.steps:,} steps of the example's suite written by tests/long_events.py from a real "
        f"{fit_s:.0f}-second fit's tags and PNGs ({suite.image_bytes / 1e6:.1f} MB of images a probe), written in "
        f"{write_s:.1f} s",
        f"- its event file: {megabytes:.0f} MB, {records:,} values, a record each ({written})",
        f"- times: the median of {args.repeats} runs, each in a fresh process"
        + ("" if old_s is None else "; the EventAccumulator way once"),
        "",
        "| | s |",
        "| --- | ---: |",
        *[f"| {label} | {seconds:.1f} |" for label, seconds in rows],
        "",
        "The report's last line, the TensorBoard command that shows every step written (DIR: the run's log directory):",
        "",
        f"    {tensorboard}",
        "",
    ]
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
