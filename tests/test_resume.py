"""A run killed (SIGKILL) right after a checkpoint and resumed with --ckpt_path goes on exactly.

The resumed steps see the examples the uninterrupted run saw, log the same metrics, and end with
bit-identical weights (CPU, float32): the data position and every random state come back.
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from corl.data.procedural import make_scene

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4
KILLED_AT = 2  # the process dies as step 3 starts, right after step 2's checkpoint was written


def fit(folder: Path, *args: str, devices: int = 1, every: int = 1) -> subprocess.CompletedProcess:
    """``corl fit`` of the demo's stage 1, small, checkpointing every step; each step logged by StepLog.

    One pass per rollout (``mu`` 1), so that optimiser steps, rollouts and logged steps are one count.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resume.yaml").write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: checkpoints, save_last: true, every_n_train_steps: {every}}}\n"
        "    - class_path: rank_probe.StepLog\n"
        "      init_args: {out: steps}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable, "-m", "corl.cli", "fit", "-c", str(ROOT / "configs/demo/s1.yaml"), "-c", "resume.yaml",
        "--trainer.max_steps", str(STEPS), "--trainer.devices", str(devices), "--trainer.enable_progress_bar", "false",
        "--trainer.val_check_interval", "2", "--trainer.logger.init_args.save_dir", "runs",
        "--data.batch_size", "2", "--data.val_length", "2", "--model.max_completion_tokens", "8",
        "--model.log_media_every_n_steps", "0", "--model.model", "tiny", "--model.mu", "1", *args,
    ]
    # A session of its own: KillAt kills the run's whole process group, never the test runner.
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True)


def records(folder: Path, rank: int = 0) -> list[dict]:
    lines = (folder / "steps" / f"rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def steps(folder: Path, rank: int = 0) -> list[dict]:
    return [r for r in records(folder, rank) if "step" in r]


def validations(folder: Path, rank: int = 0) -> dict[int, dict]:
    """Held-out scores by the step they were taken at; the same step must always give the same scores."""
    seen: dict[int, dict] = {}
    for record in records(folder, rank):
        if "validation_at" in record:
            step = record["validation_at"]
            assert seen.setdefault(step, record["metrics"]) == record["metrics"], f"validation at step {step}"
    return seen


def kill_and_resume(tmp_path: Path, *args: str, devices: int = 1) -> tuple[Path, Path]:
    """An uninterrupted run and a run killed after step 2 then resumed; their folders."""
    whole, broken = tmp_path / "uninterrupted", tmp_path / "interrupted"
    done = fit(whole, *args, devices=devices)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = fit(broken, *args, "--trainer.callbacks+=rank_probe.KillAt", "--trainer.callbacks.step", str(KILLED_AT),
                 devices=devices)
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL: no clean-up ran
    assert [s["step"] for s in steps(broken)] == list(range(1, KILLED_AT + 1))
    resumed = fit(broken, *args, "--ckpt_path", "checkpoints/last.ckpt", devices=devices)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return whole, broken


def machine() -> str:
    """The CPU and its kernels: bit-exact numbers are a property of both, so a failure names them."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
    return f"{cpu}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"


def assert_same_run(whole: Path, broken: Path, rank: int = 0) -> None:
    expected, got = steps(whole, rank), steps(broken, rank)
    assert [s["step"] for s in got] == list(range(1, STEPS + 1)), "no step repeated or lost"
    for want, have in zip(expected, got, strict=True):
        assert (have["prompts"], have["questions"]) == (want["prompts"], want["questions"]), have["step"]
        assert have["metrics"] == want["metrics"], f"step {have['step']} on {machine()}"
    weights = f"steps/rank{rank}.weights"
    assert (broken / weights).read_text() == (whole / weights).read_text(), f"bit-identical weights on {machine()}"
    # Validation after step 2 ran before the kill and is not repeated; step 4's scores the resumed weights.
    assert validations(broken, rank) == validations(whole, rank)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_mid_step_saves_the_step_and_the_printed_command_resumes_exactly(tmp_path, name):
    # No periodic checkpoint before the end: what the run keeps, the signal made it save.
    whole, broken = tmp_path / "uninterrupted", tmp_path / "interrupted"
    assert fit(whole, every=100).returncode == 0
    stopped = fit(broken, "--trainer.callbacks+=rank_probe.SignalAt", "--trainer.callbacks.step", str(KILLED_AT),
                  "--trainer.callbacks.signal", name, every=100)
    number = {"SIGTERM": 15, "SIGINT": 2}[name]
    assert stopped.returncode == 128 + number, stopped.stderr[-3000:]
    assert [s["step"] for s in steps(broken)] == list(range(1, KILLED_AT + 2)), "the step under way is finished"
    resume = stopped.stdout.split("Resume with:\n", 1)[1].strip().split()
    assert resume[0] == "corl" and resume[-2:] == ["--ckpt_path", str(broken / "checkpoints" / "last.ckpt")]
    resumed = fit(broken, *resume[resume.index("--ckpt_path"):], every=100)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(whole, broken)
    assert [p.name for p in (broken / "runs" / "demo_s1").iterdir()] == ["version_0"], "one TensorBoard run"


def test_procedural_run_killed_after_a_checkpoint_resumes_exactly(tmp_path):
    whole, broken = kill_and_resume(tmp_path)
    assert_same_run(whole, broken)
    first = steps(whole)
    assert len({p for s in first for p in s["prompts"]}) == 2 * STEPS, "every step new examples"


def write_parquet_with_bad_rows(path: Path, rows: int = 24) -> None:
    """Procedural triplets as parquet; every fifth row's image bytes are cut short (undecodable)."""
    records = []
    for index in range(rows):
        scene = make_scene(seed=5, index=index)
        buffer = io.BytesIO()
        scene.real_image.save(buffer, format="PNG")
        data = buffer.getvalue()
        image = {"bytes": data[: len(data) // 3] if index % 5 == 2 else data}
        records.append({"prompt": scene.prompt, "real_image": image, "qa_problem": scene.qa_problem,
                        "qa_solution": scene.qa_solution, "qa_type": scene.qa_type})
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=8)


@pytest.mark.parametrize("workers", [2])
def test_shuffled_parquet_with_workers_and_skipped_rows_resumes_exactly(tmp_path, workers):
    data = tmp_path / "train.parquet"
    write_parquet_with_bad_rows(data)
    whole, broken = kill_and_resume(tmp_path, "--data.source", str(data), "--data.skip_bad_rows", "true",
                                    "--data.num_workers", str(workers), "--data.val_source", "procedural")
    assert_same_run(whole, broken)
    skipped = [s["metrics"]["data/skipped_rows"] for s in steps(broken)]
    assert skipped == sorted(skipped) and skipped[-1] > 0, "the count of skipped rows carries over the resume"


def test_two_process_ddp_run_resumes_each_rank_where_it_stopped(tmp_path):
    whole, broken = kill_and_resume(tmp_path, "--trainer.strategy", "ddp", devices=2)
    for rank in range(2):
        assert_same_run(whole, broken, rank)
    first, second = ({p for s in steps(whole, rank) for p in s["prompts"]} for rank in range(2))
    assert not first & second, "the ranks still split the examples"
