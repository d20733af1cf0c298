"""Run by test_ddp.py as a script: Lightning's DDP launcher starts the second rank by re-running this file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import AwkwardNet, Classifier, random_loader
from pytorch_lightning import Trainer, seed_everything
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from lightning_viz import ExplanationQualityMonitor, GradCAMMonitor, TrainingDiagnostics


def main(out: Path) -> None:
    seed_everything(0)
    monitor = GradCAMMonitor(every_n_steps=2, early_steps=())
    diagnostics = TrainingDiagnostics(every_n_steps=2, early_steps=(), confirm_steps=2, confirm_at_end=True)
    trainer = Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_steps=6,
        logger=TensorBoardLogger(str(out), name="ddp"),
        callbacks=[
            monitor,
            ExplanationQualityMonitor(every_n_steps=2, early_steps=(), steps=2),
            diagnostics,
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    net = AwkwardNet()
    net.conv1 = nn.Conv2d(3, 8, 1, stride=2)  # a kernel smaller than its stride: a verdict that fails at step 0
    trainer.fit(Classifier(net), random_loader(n=64), random_loader(n=32, seed=1, shuffle=False))
    rank = trainer.global_rank
    report = {
        "rank": rank,
        "last_step": monitor.state_dict()["last_step"],
        "global_step": trainer.global_step,
        "advice_checked": sorted(diagnostics._advice.checked) if diagnostics._advice else None,
        "log_dir": trainer.logger.log_dir if rank == 0 else None,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
