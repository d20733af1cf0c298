"""Both Lightning packages: ``lightning.pytorch`` (its Trainer, default logger and LightningCLI) and
``pytorch_lightning``, each without importing the other. Every run is a fresh Python process, so what is imported
is what the user's program imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

# a tiny conv classifier on random 16x16 images, written against the package named by PACKAGE
MODEL = """
import sys, torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

class Net(L.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(8, 4))
    def forward(self, x):
        return self.net(x)
    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])
    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

class Data(L.LightningDataModule):
    def __init__(self, n: int = 64):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % 4
    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=8)
    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x[:16], self.y[:16]), batch_size=8)
"""

ALL_FIVE = ("GradCAMMonitor(every_n_steps=5), DeconvNetMonitor(every_n_steps=5), FilterMonitor(every_n_steps=5, "
            "activation_max_steps=2), TrainingDiagnostics(every_n_steps=5), "
            "ExplanationQualityMonitor(every_n_steps=5, steps=2)")  # fmt: skip


def _python(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                            timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


REPORT = """
import glob, json
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
(path,) = glob.glob("{logs}/**/events.out.tfevents.*", recursive=True)
events = EventAccumulator(path, size_guidance={{"images": 0, "scalars": 0, "tensors": 0}})
events.Reload()
print(json.dumps({{"images": sorted(events.Tags()["images"]), "scalars": sorted(events.Tags()["scalars"]),
                  "modules": sorted(m for m in ("pytorch_lightning", "lightning", "lightning_fabric")
                                    if m in sys.modules)}}))
"""


@pytest.mark.parametrize(
    ("package", "imports"),
    [
        ("lightning.pytorch", "import lightning.pytorch as L\nfrom lightning_viz import *"),
        ("lightning.pytorch", "from lightning_viz.lightning import *\nimport lightning.pytorch as L"),
        ("pytorch_lightning", "import pytorch_lightning as L\nfrom lightning_viz import *"),
    ],
)
def test_all_five_monitors_log_every_panel_with_the_default_logger(tmp_path: Path, package: str, imports: str) -> None:
    code = f"""
{imports}
{MODEL}
trainer = L.Trainer(max_steps=10, accelerator="cpu", default_root_dir="{tmp_path}", enable_progress_bar=False,
                    enable_checkpointing=False, enable_model_summary=False, callbacks=[{ALL_FIVE}])
trainer.fit(Net(), datamodule=Data())
assert type(trainer.logger).__module__.startswith("{package}"), type(trainer.logger)
{REPORT.format(logs=tmp_path)}
"""
    found = _python(code, tmp_path)
    other = {"lightning.pytorch": "pytorch_lightning", "pytorch_lightning": "lightning"}[package]
    assert other not in found["modules"]
    for prefix in ("gradcam/", "deconvnet/", "filters/", "responses/"):
        assert any(tag.startswith(prefix) for tag in found["images"]), (prefix, found["images"])
    for prefix in ("diagnostics/alias_fraction/", "verdict/stride", "quality/gradcam/", "quality/deconvnet/"):
        assert any(tag.startswith(prefix) for tag in found["scalars"]), (prefix, found["scalars"])


def test_lightning_cli_with_a_yaml_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        trainer:
          max_steps: 10
          accelerator: cpu
          default_root_dir: {tmp_path}
          enable_progress_bar: false
          enable_checkpointing: false
          callbacks:
            - class_path: lightning_viz.lightning.GradCAMMonitor
              init_args:
                every_n_steps: 5
            - class_path: lightning_viz.lightning.TrainingDiagnostics
              init_args:
                every_n_steps: 5
                early_steps: [1]
        """))  # fmt: skip
    code = f"""
import lightning.pytorch as L
from lightning.pytorch.cli import LightningCLI
{MODEL}
sys.argv = ["train", "fit", "--config", "{config}"]
LightningCLI(Net, Data)
{REPORT.format(logs=tmp_path)}
"""
    found = _python(code, tmp_path)
    assert "pytorch_lightning" not in found["modules"]
    assert any(tag.startswith("gradcam/") for tag in found["images"])
    assert "verdict/stride" in found["scalars"]


def test_a_monitor_of_the_other_package_is_refused_with_the_fix(tmp_path: Path) -> None:
    code = f"""
import json, lightning.pytorch as L
from lightning_viz.pytorch_lightning import GradCAMMonitor
{MODEL}
trainer = L.Trainer(max_steps=2, accelerator="cpu", default_root_dir="{tmp_path}", enable_progress_bar=False,
                    callbacks=[GradCAMMonitor()])
try:
    trainer.fit(Net(), datamodule=Data())
except Exception as error:
    print(json.dumps({{"error": str(error), "steps": trainer.global_step}}))
"""
    found = _python(code, tmp_path)
    assert found["steps"] == 0
    assert found["error"] == ("GradCAMMonitor is a pytorch_lightning callback, but the Trainer is a lightning.pytorch "
                              "one: import the monitors from lightning_viz.lightning (or import lightning.pytorch "
                              "before `from lightning_viz import ...`)")  # fmt: skip


def test_the_monitors_themselves_import_no_lightning_package() -> None:
    found = _python(
        """
        import json, sys
        import lightning_viz, lightning_viz.callbacks, lightning_viz.report
        print(json.dumps(sorted(m for m in ("pytorch_lightning", "lightning", "lightning_fabric") if m in sys.modules)))
        """,
        ROOT,
    )
    assert found == []


def test_training_is_bit_identical_with_all_five_monitors_under_lightning_pytorch(tmp_path: Path) -> None:
    code = f"""
import json
import lightning.pytorch as L
from lightning_viz import *
{MODEL}
def run(callbacks, name):
    L.seed_everything(0)
    model = Net()
    trainer = L.Trainer(max_steps=10, accelerator="cpu", default_root_dir="{tmp_path}/" + name, deterministic=True,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=callbacks)
    trainer.fit(model, datamodule=Data())
    return model.state_dict()
without = run([], "without")
with_ = run([{ALL_FIVE}], "with")
print(json.dumps({{"same": all(torch.equal(without[k], with_[k]) for k in without) and without.keys() == with_.keys(),
                  "pytorch_lightning": "pytorch_lightning" in sys.modules}}))
"""
    assert _python(code, tmp_path) == {"same": True, "pytorch_lightning": False}
