import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, out: Path, prompts: int) -> tuple[dict, str]:
    """Run a benchmark at the smallest sizes; its JSON report and what it printed."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--prompts", str(prompts), "--group-size", "2",
         "--answer-tokens", "4", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


def test_rollout_benchmark_writes_its_json_report(tmp_path):
    report, stdout = run_benchmark("rollout.py", tmp_path / "rollout.json", prompts=1)
    assert {k: report[k] for k in ("device", "model", "prompts", "group_size")} == {
        "device": "cpu", "model": "tiny", "prompts": 1, "group_size": 2}
    assert set(report["image"]) == {"hf_s", "eager_s", "fast_s", "eager_ms_per_step", "fast_ms_per_step"}
    assert set(report["text"]) == {"hf_s", "eager_s", "fast_s"}
    assert all(value > 0 for task in ("image", "text") for value in report[task].values())
    assert "fast vs eager" in stdout


def test_update_benchmark_checks_packing_and_writes_its_json_report(tmp_path):
    report, stdout = run_benchmark("update.py", tmp_path / "update.json", prompts=2)
    assert set(report["text"]) == {"packed_s", "per_row_s", "max_logp_difference"}
    assert set(report["vq_decode"]) == {"channels_last_s", "contiguous_s"}
    assert report["text"]["max_logp_difference"] < 1e-4  # packing changes the speed, not the numbers
    assert "packed" in stdout and "channels-last" in stdout


def test_gradient_noise_benchmark_compares_every_pair_of_batches_per_task(tmp_path):
    report, stdout = run_benchmark("gradient_noise.py", tmp_path / "noise.json", prompts=2)
    assert set(report["tasks"]) == {"image", "text"}  # stage 1: both tasks, each its own gradient
    for task in report["tasks"].values():
        assert len(task["cosines"]) == 6  # 4 batches, every pair
        assert all(-1.0 <= c < 0.999 for c in task["cosines"]) and task["gradient_norm"] > 0  # distinct batches
        assert task["cosine"] == sum(task["cosines"]) / 6
        assert (task["samples_for_signal"] is None) == (task["cosine"] <= 0)
    assert "cosine between batches of 4 samples" in stdout
