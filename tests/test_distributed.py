"""Two CPU processes (gloo) train the demo for a few steps, under DDP and under FSDP.

Both must keep the ranks' weights identical, split the examples (so each group is sampled and
scored on one rank), and train with log-probs equal to those the tokens were sampled with.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rank_probe import weights_digest
from transformers import JanusForConditionalGeneration

from corl.checkpoints import is_sharded_checkpoint
from corl.data.procedural import make_scene
from corl.data.sampling import ResumableBatches
from corl.modules.tiny import build_tiny_janus

ROOT = Path(__file__).resolve().parents[1]
FSDP = ["-c", str(ROOT / "configs/fsdp.yaml"), "--trainer.precision", "32-true", "--model.sharding.param_dtype", "null"]


def train_two_ranks(tmp_path: Path, *args: str, steps: int = 2) -> list[dict]:
    """Run ``steps`` steps of the demo's stage 1 on two processes; each rank's probe record."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable, "-m", "corl.cli", "fit", "-c", str(ROOT / "configs/demo/s1.yaml"), "--model.model", "tiny",
        *args,
        "--trainer.devices", "2", "--trainer.max_steps", str(steps),
        "--trainer.enable_progress_bar", "false", "--trainer.val_check_interval", "null",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.callbacks+=rank_probe.RankProbe", "--trainer.callbacks.out", str(tmp_path / "probe"),
        "--data.val_source", "null", "--data.batch_size", "2", "--model.max_completion_tokens", "8",
        "--model.mu", "1",  # one optimiser step per rollout: steps and rollouts are one count
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in range(2)]


def check_data_parallel(ranks: list[dict]) -> None:
    """Identical trained weights on both ranks, and disjoint whole examples."""
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["weights"] == ranks[1]["weights"], "gradients were averaged across ranks"
    assert ranks[0]["weights"] != weights_digest(build_tiny_janus(seed=0)[0]), "and the weights were updated"
    seen = [[p for step in r["prompts"] for p in step] for r in ranks]
    assert all(len(step) == 2 for r in ranks for step in r["prompts"])  # 2 steps x 2 whole examples per rank
    assert not set(seen[0]) & set(seen[1]), "each example (and so its whole group of G samples) on one rank"
    assert ranks[0]["logged"] == ranks[1]["logged"], "the scalars logged are the ranks' mean, on every rank"


def test_two_process_ddp_keeps_ranks_identical_and_groups_whole(tmp_path):
    check_data_parallel(train_two_ranks(tmp_path, "--trainer.strategy", "ddp"))


def test_two_process_ddp_with_dynamic_sampling_keeps_ranks_in_step(tmp_path):
    # Ranks see different examples, so they need different numbers of further rollouts: they must still
    # train the same number of groups per step (no hang) and end with identical weights.
    rewards = ["--model.image_rewards", "null", "--model.text_rewards",
               '[{"fn": "rank_probe:constant_for_counting"}]', "--model.dynamic_sampling", "true",
               "--model.max_resample_rounds", "2", "--data.questions", "oe"]
    check_data_parallel(train_two_ranks(tmp_path, "--trainer.strategy", "ddp", *rewards))


@pytest.mark.filterwarnings("ignore")
def test_two_process_fsdp_shards_trains_and_exports(tmp_path):
    # configs/fsdp.yaml as shipped, in float32 (bf16 autocast is slow on CPUs), with the KL reference
    # (sharded too) and activation checkpointing.
    fsdp = [*FSDP, "--model.beta", "0.02"]
    ranks = train_two_ranks(tmp_path, *fsdp)
    check_data_parallel(ranks)
    for rank in ranks:  # each rank holds half of every decoder weight
        rows, cols = rank["layer_shape"]
        assert rank["layer_local_shape"] == [rows // 2, cols]
        for step in rank["ratios"]:  # mu = 1: pi_theta = pi_old, so the rollout's log-probs are the training ones
            assert step["image/ratio"] == pytest.approx(1.0, abs=1e-4)
            assert step["text/ratio"] == pytest.approx(1.0, abs=1e-4)

    checkpoint = tmp_path / "checkpoints/demo/s1/last.ckpt"
    assert is_sharded_checkpoint(checkpoint)
    out = tmp_path / "exported"
    result = subprocess.run([sys.executable, "-m", "corl.cli", "export", str(checkpoint), str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    exported = JanusForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    assert weights_digest(exported) == ranks[0]["weights"], "the export holds the trained (gathered) weights"

    # A preempted run resumes from the folder of shards: weights, optimiser and step count.
    resumed = train_two_ranks(tmp_path, *fsdp, "--ckpt_path", str(checkpoint), steps=3)
    assert [len(r["prompts"]) for r in resumed] == [1, 1], "one step left of three"
    assert resumed[0]["weights"] == resumed[1]["weights"] != ranks[0]["weights"]
    for rank, record in enumerate(resumed):  # each rank goes on with its own third batch, not its first again
        order = ResumableBatches(4096, 2, seed=0, num_replicas=2, rank=rank)
        third = list(order)[2]
        assert record["prompts"] == [[make_scene(0, index).prompt for index in third]]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("strategy", [["--trainer.strategy", "ddp"], FSDP], ids=["ddp", "fsdp"])
def test_two_process_lora_trains_the_same_adapters_on_both_ranks_and_nothing_else(tmp_path, strategy):
    # With the KL reference (beta > 0): the base model, i.e. the adapters switched off, sharded or not.
    lora = [*strategy, "--model.lora.r", "4", "--model.beta", "0.02"]
    ranks = train_two_ranks(tmp_path, *lora)
    check_data_parallel(ranks)
    start = weights_digest(build_tiny_janus(seed=0)[0])
    for rank in ranks:
        assert rank["base_weights"] == start, "the base weights stay the model's own on every rank"
        assert rank["adapters"] != rank["adapters_at_start"], "the adapters were trained"
        for step in rank["ratios"]:  # mu = 1: the training forward reproduces the sampling log-probs
            assert step["image/ratio"] == pytest.approx(1.0, abs=1e-4)
            assert step["text/ratio"] == pytest.approx(1.0, abs=1e-4)
    assert ranks[0]["adapters_at_start"] == ranks[1]["adapters_at_start"], "both ranks start from the same adapters"
    assert ranks[0]["adapters"] == ranks[1]["adapters"], "and end with the same ones"
    checkpoint = tmp_path / "checkpoints/demo/s1/last.ckpt"
    assert is_sharded_checkpoint(checkpoint) == (strategy == FSDP)
    from corl.cli import main

    main(["export", str(checkpoint), str(tmp_path / "exported")])  # merged, from the shards under FSDP
    exported = JanusForConditionalGeneration.from_pretrained(tmp_path / "exported", dtype=torch.float32).state_dict()
    base = build_tiny_janus(seed=0)[0].state_dict()
    assert exported.keys() == base.keys()
    assert torch.equal(exported["lm_head.weight"], base["lm_head.weight"])
    assert not torch.equal(exported["model.language_model.layers.0.mlp.up_proj.weight"],
                           base["model.language_model.layers.0.mlp.up_proj.weight"])
    if strategy == FSDP:  # the folder of shards resumes: base weights, adapters and their optimiser state
        resumed = train_two_ranks(tmp_path, *lora, "--ckpt_path", str(checkpoint), steps=3)
        assert [len(r["prompts"]) for r in resumed] == [1, 1], "one step left of three"
        assert resumed[0]["adapters_at_start"] == ranks[0]["adapters"], "it goes on from the saved adapters"
        assert resumed[0]["adapters"] == resumed[1]["adapters"] != ranks[0]["adapters"]
        assert all(r["base_weights"] == start for r in resumed)
