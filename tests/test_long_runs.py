"""Logs a long run can keep: pictures on a cadence that thins, a bound on their bytes, and the TensorBoard command that
shows everything written (a real Trainer, the event files read back)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fit_classifier, read_events

from lightning_viz import GradCAMMonitor, TrainingDiagnostics
from lightning_viz.probing.schedule import DENSE_IMAGES, keeps_images

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")


def test_the_picture_cadence_thins_by_powers_of_two() -> None:
    steps = [s for s in range(0, 100_001, 100) if keeps_images(s, 100)]
    assert steps[: 2 * DENSE_IMAGES] == list(range(0, 2000, 100))  # dense early
    assert [s for s in steps if 2000 <= s < 4000] == list(range(2000, 4000, 200))
    assert [s for s in steps if 64_000 <= s < 128_000] == list(range(64_000, 100_001, 6400))
    assert 70 < len(steps) < 80  # about 10 per doubling
    assert keeps_images(700, None) and keeps_images(130, 10, first_step=30)  # no cadence; resumed at step 30


def _image_steps(events: object, tag: str) -> list[int]:
    return sorted(e.step for e in events.Images(tag))  # type: ignore[attr-defined]


def test_pictures_thin_out_while_scalars_keep_their_cadence(tmp_path: Path) -> None:
    monitor = GradCAMMonitor(every_n_steps=1, budget=None)
    _, trainer = fit_classifier(tmp_path, [monitor, TrainingDiagnostics(every_n_steps=25)], max_steps=50)
    events = read_events(trainer.logger.log_dir)
    tag = next(t for t in events.Tags()["images"] if t.startswith("gradcam/"))
    expected = [s for s in range(51) if keeps_images(s, 1)]
    assert _image_steps(events, tag) == sorted({*expected, 50})  # the final probe's always
    assert expected[:21] == list(range(21)) and 23 not in expected and 50 not in expected
    assert {e.step for e in events.Scalars("viz/overhead_ms/GradCAMMonitor")} == set(range(51))
    logs = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("viz/logs/text_summary")}
    (text,) = logs.values()
    assert f"{len(_image_steps(events, tag))} steps of pictures" in text
    assert text.endswith(f"--samples_per_plugin images={len(_image_steps(events, tag))}")  # scalars, texts: <= default


def test_pictures_stop_at_the_byte_bound_and_the_final_probe_keeps_its_own(tmp_path: Path) -> None:
    one = GradCAMMonitor(every_n_steps=1, budget=None)
    _, trainer = fit_classifier(tmp_path / "free", [one], max_steps=8)
    events = read_events(trainer.logger.log_dir)
    per_step = sum(len(e.encoded_image_string) for t in events.Tags()["images"] for e in events.Images(t)) / 9
    bounded = GradCAMMonitor(every_n_steps=1, budget=None, max_image_bytes=int(5.5 * per_step))
    _, trainer = fit_classifier(tmp_path / "bounded", [bounded], max_steps=8, logger=None)
    events = read_events(trainer.logger.log_dir)
    tag = next(t for t in events.Tags()["images"] if t.startswith("gradcam/"))
    steps = _image_steps(events, tag)
    assert steps[-1] == 8 and 3 <= len(steps) - 1 <= 5, steps  # a few, then none until the final probe
    written = sum(len(e.encoded_image_string) for t in events.Tags()["images"] for e in events.Images(t))
    assert written <= 6.5 * per_step  # the bound, give or take one probe's (the writer encodes behind training)
    (stopped,) = events.Tensors("viz/images/text_summary")
    assert "pictures stop here" in stopped.tensor_proto.string_val[0].decode()
    assert {e.step for e in events.Scalars("viz/overhead_ms/GradCAMMonitor")} == set(range(9))


def test_max_image_bytes_is_checked() -> None:
    with pytest.raises(ValueError, match="max_image_bytes"):
        TrainingDiagnostics(max_image_bytes=-1)
