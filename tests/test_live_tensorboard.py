"""The live view: a real TensorBoard server on 127.0.0.1 shows a probe's images while training is still running."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from conftest import fit_classifier
from pytorch_lightning import Callback, Trainer

from lightning_viz import GradCAMMonitor
from lightning_viz.demos.tensorboard_view import free_port, get_json


def _poll(fetch: Any, until: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = fetch()
            if until(value):
                return value
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds} s")
        time.sleep(0.25)


def test_a_running_tensorboard_shows_the_probe_before_training_ends(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "1", "--samples_per_plugin", "images=100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _poll(lambda: get_json(f"{base}/data/logdir"), lambda v: "logdir" in v, 60)
        seen: dict[int, list[int]] = {}

        class WatchTensorBoard(Callback):  # runs while training is paused at these steps, after the monitor
            def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
                wanted = {1: 0, 4: 4}.get(trainer.global_step)  # the step-0 probe ran at train start
                if wanted is None:
                    return
                run = "run/version_0"
                query = urllib.parse.urlencode({"run": run, "tag": "gradcam/net.conv3/images_00-03"})

                def steps() -> list[int]:
                    return [e["step"] for e in get_json(f"{base}/data/plugin/images/images?{query}")]

                seen[trainer.global_step] = _poll(steps, lambda s: wanted in s, 30)
                # and the probe's last, smallest event: the cost scalar
                query = urllib.parse.urlencode({"run": run, "tag": "viz/overhead_ms/GradCAMMonitor"})
                _poll(lambda: [row[1] for row in get_json(f"{base}/data/plugin/scalars/scalars?{query}")],
                      lambda s: wanted in s, 30)  # fmt: skip

        monitor = GradCAMMonitor(every_n_steps=4, early_steps=())
        # Lightning logs nothing of its own in these 6 steps: what the server shows, the monitor wrote
        fit_classifier(tmp_path, [monitor, WatchTensorBoard()], max_steps=6, log_every_n_steps=50)
        assert seen == {1: [0], 4: [0, 4]}
        tags = get_json(f"{base}/data/plugin/images/tags")
        assert "gradcam/net.conv3/images_00-03" in tags["run/version_0"]
    finally:
        server.terminate()
        server.wait(timeout=30)
