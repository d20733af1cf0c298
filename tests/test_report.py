"""`lightning-viz report`: the console command pip installs, on event files written by real training runs, and on
a long run's (tests/long_events.py writes it from a short real run's tags, at a long run's cadences)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import Classifier, make_trainer, read_events
from long_events import EventWriter, image_steps, read_suite, tiny_image, write_long_run
from pytorch_lightning import seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_viz import TrainingDiagnostics
from lightning_viz.diagnostics.verdicts import TEXT_TAG, Thresholds
from lightning_viz.report import main, read_runs, samples_per_plugin


class _Frozen(Classifier):
    """Adam at rate 0 on one repeated batch: the loss is exactly flat whatever the machine's rounding."""

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.parameters(), lr=0.0)


def _fit_frozen(logdir: Path, name: str, low_after: int) -> None:
    seed_everything(0)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    loader = DataLoader(TensorDataset(x.repeat(8, 1, 1, 1), y.repeat(8)), batch_size=8, shuffle=False)
    monitor = TrainingDiagnostics(every_n_steps=20, early_steps=(5,), thresholds=Thresholds(low_after=low_after))
    trainer = make_trainer(logdir / name, [monitor], max_steps=40, limit_val_batches=0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))  # fmt: skip
    trainer.fit(_Frozen(net), loader, loader)


def _command(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("lightning-viz", path=str(Path(sys.executable).parent))
    assert executable is not None, "pip install -e . puts lightning-viz beside the interpreter"
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log directory with a run called too low at step 40 (``frozen``)."""
    failing = tmp_path_factory.mktemp("failing")
    _fit_frozen(failing, "frozen", low_after=40)
    return failing


@pytest.fixture(scope="module")
def logdirs(failing: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two log directories: ``failing`` with a run whose verdicts are ok or abstain beside, and one with only such a
    run."""
    passing = tmp_path_factory.mktemp("passing")
    _fit_frozen(failing, "waiting", low_after=1000)
    _fit_frozen(passing, "waiting", low_after=1000)
    return failing, passing


def test_report_prints_the_latest_verdicts_and_fails_when_one_is_not_ok(logdirs: tuple[Path, Path]) -> None:
    failing, passing = logdirs
    result = _command("report", str(failing))
    assert result.returncode == 1, result.stderr
    frozen = result.stdout.split("frozen")[1].split("waiting")[0]
    assert "NOT OK" in frozen and "latest (step 40)" in frozen
    assert "too low (-1" in frozen and "✗ too low: the loss stalled" in frozen
    assert "stride" in frozen and "ok (0)" in frozen  # 3x3 stride 1
    assert "no verdict (-)" in frozen  # a 3x3 kernel gets none
    # over time: the probes where a verdict changed (the first, the last)
    assert [line.split()[0] for line in frozen.splitlines() if line.strip()[:1].isdigit()] == ["0", "40"]
    result = _command("report", str(passing))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(ok; 4 probes, last at step 40)" in result.stdout


def test_report_json_agrees_with_the_event_files(logdirs: tuple[Path, Path]) -> None:
    failing, _ = logdirs
    result = _command("report", str(failing), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and len(report["runs"]) == 2
    for run in report["runs"]:
        events = read_events(run["run"])
        tag = "verdict/learning_rate"
        logged = {e.step: e.value for e in events.Scalars(tag)} if tag in events.Tags()["scalars"] else {}
        assert run["latest"]["learning_rate"]["value"] == logged.get(40)
        assert run["ok"] == (logged.get(40) in (None, 0))
    assert [r.ok for r in read_runs(failing)] == [r["ok"] for r in report["runs"]]


def test_report_without_verdicts_says_so(tmp_path: Path) -> None:
    result = _command("report", str(tmp_path))
    assert result.returncode == 2 and "no run under" in result.stderr
    result = _command("report", str(tmp_path / "missing"))
    assert result.returncode == 2 and "is not a directory" in result.stderr


def _report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``lightning-viz`` in this process (the tests above run the installed command): its exit status and output."""
    status = main(list(args))
    return status, capsys.readouterr().out


def test_report_reads_a_long_run_and_names_the_samples_tensorboard_needs(
    failing: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a real run's scalar tags (TrainingDiagnostics'), 19 tiny image tags as the example's suite writes, 100,000 steps
    suite = read_suite(next((failing / "frozen").rglob("events.out.tfevents.*")))
    assert len(suite.scalars) > 20
    suite.images = {f"panels/{i}": tiny_image() for i in range(19)}
    run = write_long_run(tmp_path / "long" / "run", suite, steps=100_000, tiny_images=True)

    status, out = _report(capsys, "report", str(tmp_path / "long"), "--json")
    report = json.loads(out)
    (read,) = report["runs"]
    assert status == 1 and read["ok"] is False  # the story ends too low
    assert {int(step): values for step, values in read["history"].items()} == run.history
    assert read["last_step"] == 100_000 and read["probes"] == len(run.text_steps) == 1003  # 1,001 probes, 2 checks
    assert {name: v["value"] for name, v in read["latest"].items()} == run.history[100_000]
    assert read["latest"]["learning_rate"]["text"].startswith("✗ too low")
    # between probes: the check at 30,050 called the rate too high (the kernel and stride then abstain), the one at
    # 30,250 ok again (the kernel and stride the latest probe's)
    assert read["history"]["30050"] == {"kernel_size": None, "stride": None, "learning_rate": 1}
    assert read["history"]["30150"] == read["history"]["30050"]  # a check without a text keeps the others
    assert read["history"]["30250"] == {"kernel_size": 1, "stride": 0, "learning_rate": 0}

    # every step of every tag: TensorBoard's sample would keep 1,000 scalars, 10 images and 10 texts per tag
    largest = {plugin: max(tags.values()) for plugin, tags in run.counts.items()}
    assert largest == {"scalars": 10_000, "images": len(image_steps(100_000)), "text": 1003}  # train/loss every 10
    assert run.counts["text"][f"{TEXT_TAG}/text_summary"] == 1003
    expected = f"--samples_per_plugin scalars=10000,images={largest['images']},text=1003"
    assert report["tensorboard"] == f"tensorboard --logdir {tmp_path / 'long'} {expected}"

    status, out = _report(capsys, "report", str(tmp_path / "long"))
    assert status == 1
    # 2,000 steps with a verdict: 1,001 probes, 999 checks (from step 150 on), 2 of them with a text
    assert len(run.history) == 2000 and "(NOT OK; 1003 probes, 997 learning-rate checks, last at step 100000)" in out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.strip()[:1].isdigit()]
    assert rows == ["0", "100", "1000", "2000", "30050", "30250", "50000", "70000", "90000", "100000"]
    assert out.rstrip().endswith(f"tensorboard --logdir {tmp_path / 'long'} {expected}")


def test_report_latest_is_the_last_check_with_the_latest_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped after a check without a text, its last record half-written (the writer was still at it)."""
    lines = {None: "… not enough evidence yet", 0: "✓ ok: fine", 1: "✗ larger than it uses: smaller"}
    (tmp_path / "run").mkdir()
    with (tmp_path / "run" / "events.out.tfevents.1.host").open("wb") as file:
        out = EventWriter(file)
        for step, kernel in ((0, None), (100, 1)):
            out.text(step, f"{TEXT_TAG}/text_summary", f"Step {step}:\n\n- **kernel size**: {lines[kernel]}\n\n"
                     f"- **learning rate**: {lines[0]}")  # fmt: skip
            if kernel is not None:
                out.scalar(step, "verdict/kernel_size", kernel)
                out.scalar(step, "degree/kernel_size", 2.0)
            out.scalar(step, "verdict/learning_rate", 0)
        out.scalar(150, "verdict/learning_rate", 1)
        out.scalar(150, "degree/learning_rate", 3.0)
        file.write(b"\x10\x00\x00")  # the start of the next record's length
    (run,) = read_runs(tmp_path)
    assert run.last_step == 150 and run.probes == 2
    assert run.history == {0: {"kernel_size": None, "stride": None, "learning_rate": 0},
                           100: {"kernel_size": 1, "stride": None, "learning_rate": 0},
                           150: {"kernel_size": 1, "stride": None, "learning_rate": 1}}  # fmt: skip
    assert (run.latest["kernel_size"].degree, run.latest["learning_rate"].degree) == (2.0, 3.0)
    assert run.latest["kernel_size"].text == lines[1] and run.latest["learning_rate"].text == lines[0]  # step 100's
    status, out = _report(capsys, "report", str(tmp_path))
    assert status == 1 and "(NOT OK; 2 probes, 1 learning-rate check, last at step 150)" in out
    assert out.rstrip().endswith(f"tensorboard --logdir {tmp_path}")  # TensorBoard's defaults keep everything


def test_report_reads_a_damaged_event_file_up_to_the_damage(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "events.out.tfevents.1.host"
    starts = []
    with path.open("wb") as file:
        out = EventWriter(file)
        for step in (0, 100, 200):
            starts.append(file.tell())
            out.scalar(step, "verdict/learning_rate", 0)
    data = bytearray(path.read_bytes())
    data[starts[1] + 12 + 2] ^= 0xFF  # the second record's third byte of data (after its length and checksum)
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=rf"tfevents.1.host: damaged record at byte {starts[1]}; read up to it"):
        (run,) = read_runs(tmp_path)
    assert list(run.history) == [0]


def test_samples_per_plugin_names_the_plugins_tensorboard_would_sample() -> None:
    counts = {
        "scalars": {"train/loss": 10_000, "verdict/stride": 1000},
        "images": {"gradcam/relu3": 77, "filters/conv1": 3},
        "text": {"diagnostics/verdicts/text_summary": 11},
        "histograms": {"weights": 501},
        "custom_scalars": {"custom_scalars__config__": 1},
    }
    assert samples_per_plugin(counts) == "scalars=10000,images=77,text=11,histograms=501"
    # TensorBoard keeps 1,000 scalars, 10 images, 10 texts, 500 histograms per tag: within them, nothing to say
    within = {"scalars": {"a": 1000}, "images": {"b": 10}, "text": {"c": 10}, "histograms": {"d": 500}}
    assert samples_per_plugin(within) == ""
    assert samples_per_plugin({"scalars": {}, "text": {"c": 11}}) == "text=11"
