"""DDP as two real CPU processes (gloo): only global rank zero probes, and nothing hangs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import read_events

HERE = Path(__file__).parent


def test_only_rank_zero_probes_and_nothing_hangs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(HERE), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, str(HERE / "ddp_fit.py"), str(tmp_path)], env=env, timeout=300, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0["global_step"] == rank1["global_step"] == 6
    assert rank0["last_step"] == 6 and rank1["last_step"] is None  # rank 1 never probed
    events = read_events(rank0["log_dir"])
    assert [e.step for e in events.Images("gradcam/net.conv3/images_00-03")] == [0, 2, 4, 6]
    assert [e.step for e in events.Scalars("quality/gradcam/randomization")] == [6]  # its own cadence, and the end
    # the advice check ran on rank 0 only, at the fit's end, while rank 1 waited
    assert rank0["advice_checked"] == ["kernel_size"] and rank1["advice_checked"] == []
    assert [e.step for e in events.Scalars("confirmation/kernel_size")] == [6]
