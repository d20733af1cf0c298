"""`lightning-viz report`: the console command pip installs, on event files written by real training runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import Classifier, make_trainer, read_events
from pytorch_lightning import seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_viz import TrainingDiagnostics
from lightning_viz.diagnostics.verdicts import Thresholds
from lightning_viz.report import read_runs


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
def logdirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two log directories: one with a run called too low at step 40, one whose verdicts are ok or abstain."""
    failing, passing = tmp_path_factory.mktemp("failing"), tmp_path_factory.mktemp("passing")
    _fit_frozen(failing, "frozen", low_after=40)
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
