"""Two CPU processes (DDP over gloo) train the demo for a few steps: same weights, groups split by rank."""

import json
import os
import subprocess
import sys
from pathlib import Path

from ddp_probe import weights_digest

from corl.modules.tiny import build_tiny_janus

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_ddp_keeps_ranks_identical_and_groups_whole(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable, "-m", "corl.cli", "fit", "-c", str(ROOT / "configs/demo/s1.yaml"),
        "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_steps", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.val_check_interval", "null",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.callbacks+=ddp_probe.RankProbe", "--trainer.callbacks.out", str(tmp_path / "probe"),
        "--data.val_source", "null", "--data.batch_size", "2", "--model.max_completion_tokens", "8",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["weights"] == ranks[1]["weights"], "gradients were averaged across ranks"
    assert ranks[0]["weights"] != weights_digest(build_tiny_janus(seed=0)[0]), "and the weights were updated"
    seen = [[p for step in r["prompts"] for p in step] for r in ranks]
    assert all(len(step) == 2 for r in ranks for step in r["prompts"])  # 2 steps x 2 whole examples per rank
    assert not set(seen[0]) & set(seen[1]), "each example (and so its whole group of G samples) on one rank"
