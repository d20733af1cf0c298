"""Writes shapes_net.pt: the example's ShapesNet trained on 3,000 Shapes images for 4 epochs (SGD, lr 0.02, seed 0;
about 0.55 held-out accuracy, chance 0.17).

Tests that check findings on a trained network start from this file instead of training, because a short CPU
training run ends at different floats on different processors and a finding's margin can fall either side of a
bound. Run it again only to change the network: `python tests/checkpoints/make_shapes_net.py`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning import Trainer, seed_everything
from torch.utils.data import DataLoader

from lightning_viz.data import Shapes
from lightning_viz.demos import ShapesNet

HERE = Path(__file__).parent


def main() -> None:
    seed_everything(0)
    model = ShapesNet()
    trainer = Trainer(
        max_epochs=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(Shapes(3000, seed=0), batch_size=64, shuffle=True))
    torch.save(model.state_dict(), HERE / "shapes_net.pt")


if __name__ == "__main__":
    main()
