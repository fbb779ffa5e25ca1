"""scripts/gpu_run.sh, dry-run on a CPU with the tiny model: every phase runs and lands in one JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_prepared_gpu_run_dry_runs_end_to_end(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), "PY": sys.executable}
    result = subprocess.run(["bash", str(ROOT / "scripts/gpu_run.sh")], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_run.json").read_text())
    phases = {phase["phase"]: phase for phase in report["phases"]}
    assert set(phases) == {"env", "consistency", "rollout", "step", "fsdp"}  # everything importable: no install
    assert all(phase["rc"] == 0 and not phase["timed_out"] for phase in phases.values()), phases
    assert report["env"]["torch"] and report["consistency"]["logprob_gap"]["float32"]["text"] < 1e-4
    assert {"image", "text", "text_8", "decode"} <= set(report["rollout"])
    for name in ("step", "fsdp"):
        step = report[name]["steps"][0]
        assert step["time/rollout"] > 0 and step["image/ratio_min"] > 0.99 and step["image/ratio_max"] < 1.01
        assert report[name]["config"]["strategy"] == ("fsdp" if name == "fsdp" else "single")
