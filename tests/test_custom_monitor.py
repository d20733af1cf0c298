"""A custom monitor overrides two methods, needs() and compute(), and the suite gives it everything else: the
cadence, the budget, the shared forward pass, rank zero, the isolation and the writer."""

from __future__ import annotations

from pathlib import Path

from conftest import assert_same_training, fit_classifier, read_events

from lightning_viz import GradCAMMonitor
from lightning_viz.callbacks import Needs, ProbeLogs
from lightning_viz.probing import ProbeContext
from lightning_viz.pytorch_lightning import ProbeMonitor


class MeanActivation(ProbeMonitor):
    def needs(self) -> Needs:
        return Needs(layers=self.layer_names)

    def compute(self, context: ProbeContext, step: int) -> ProbeLogs:
        return ProbeLogs(
            scalars={f"mean_activation/{name}": float(context.activation(name).mean()) for name in self.layer_names}
        )


def test_a_custom_monitor_probes_beside_the_others_on_the_shared_forward_pass(tmp_path: Path) -> None:
    baseline = fit_classifier(tmp_path / "bare", [], max_steps=12)
    custom = MeanActivation(every_n_steps=4, budget=None)
    run = fit_classifier(tmp_path / "custom", [custom, GradCAMMonitor(every_n_steps=4, budget=None)], max_steps=12)
    assert_same_training(run, baseline)
    assert custom.layer_names  # the default: each convolutional stage's output
    events = read_events(run[1].logger.log_dir)  # type: ignore[union-attr]
    for name in custom.layer_names:
        assert [e.step for e in events.Scalars(f"mean_activation/{name}")] == [0, 4, 8, 12]
    assert [e.step for e in events.Scalars("viz/overhead_ms/MeanActivation")] == [0, 4, 8, 12]
