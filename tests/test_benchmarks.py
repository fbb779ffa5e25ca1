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
    timings = {"hf_s", "eager_s", "fast_s", "eager_ms_per_step", "fast_ms_per_step"}
    assert set(report["image"]) == set(report["text"]) == timings  # no roofline without a bandwidth
    assert all(value > 0 for task in ("image", "text") for value in report[task].values())
    assert report["decode"]["decode/captured_fraction"] == 0.0  # eager on a CPU, and said so
    assert "fast vs eager" in stdout


def test_the_roofline_counts_what_a_decode_step_reads():
    import importlib.util

    import torch

    from corl.modules.policy import JanusPolicy
    from corl.modules.tiny import build_tiny_janus

    spec = importlib.util.spec_from_file_location("rollout", ROOT / "benchmarks" / "rollout.py")
    rollout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rollout)
    model, processor = build_tiny_janus(seed=0)
    policy = JanusPolicy(model, processor)
    janus, config = model.model, model.config.text_config
    layers = sum(p.numel() for p in policy.llm.layers.parameters()) + policy.llm.norm.weight.numel()
    image_head = sum(p.numel() for m in (janus.generation_head, janus.generation_aligner) for p in m.parameters())
    per_position = config.num_hidden_layers * 2 * config.num_key_value_heads * (config.hidden_size // 4) * 2
    # bf16: 2 bytes a weight (the decoder layers, the final norm and the task's head: not the token embedding,
    # nor the other task's head); 32 rows, a 20-token prompt and on average half of the 64 image tokens cached
    expected = 2 * (layers + image_head) + 32 * per_position * (20 + 32)
    assert rollout.step_bytes(policy, "image", 32, 20, 64, torch.bfloat16) == expected
    text = 2 * (layers + model.lm_head.weight.numel()) + 8 * per_position * (300 + 256)
    assert rollout.step_bytes(policy, "text", 8, 300, 512, torch.bfloat16) == text



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
