"""GPU check, one configuration per process (scripts/gpu_run.sh runs each in a process of its own).

    python scripts/gpu_check.py consistency --json gap.json
    python scripts/gpu_check.py train --strategy single --path fast --steps 2 --json step.json
    python scripts/gpu_check.py train --strategy fsdp --model tiny --steps 1        # anywhere, small

Reads nothing from the network: the model is Janus-Pro-1B's architecture with random weights
(``random:janus-pro-1b``), the data the procedural set at its image size, LPIPS on a declared random
trunk. ``consistency`` measures the largest gap between sampling and training log-probs (fp32 and
bf16, the tiny model). ``train`` runs stage-1 steps at the paper's per-GPU shape (2 prompts x G 8,
576 image tokens with CFG, answers up to 512 tokens, ``old_logps: rollout``) with one strategy
(``fsdp``: configs/fsdp.yaml's FullyShardedStrategy, bf16-gathered parameters, activation
checkpointing; ``single``) and one rollout path (``fast``: one prefill per prompt and captured decode
steps on CUDA; ``eager``), and reports each step's phase times, rollout throughput, the first-pass
ratio range per task (1 where training log-probs equal the sampling ones), the decode counters and
the peak GPU memory. One configuration per process: torch.compile's caches, the recompile budget
and CUDA graph pools of one run would otherwise carry into the next one's numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STEP_KEYS = ("time/rollout", "time/rewards", "time/update", "throughput/rollout_tokens_per_s",
             "text/completion_length_mean", "image/ratio_min", "image/ratio_max", "text/ratio_min", "text/ratio_max",
             "decode/captured_fraction", "decode/compiled_shapes", "decode/fallbacks", "decode/restarts")


def peak_gib() -> float | None:
    """Peak GPU memory allocated since the last reset, in GiB (None on a CPU)."""
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None


def consistency() -> dict[str, dict[str, float]]:
    """Max |sampling - training| log-prob gap on the device for images (cfg, conditional) and answers."""
    from corl.data.procedural import make_scene
    from corl.modules.policy import JanusPolicy
    from corl.modules.tiny import build_tiny_janus

    gaps = {}
    for dtype in (torch.float32, torch.bfloat16):
        model, processor = build_tiny_janus(seed=0)
        model.to(DEVICE, dtype)
        scenes = [make_scene(0, i, 64) for i in range(4)]
        gap = {}
        for mode in ("cfg", "conditional"):
            policy = JanusPolicy(model, processor, cfg_weight=5.0, max_completion_tokens=32, image_logprob_mode=mode)
            rollout = policy.sample_images([s.prompt for s in scenes], 4)
            gap[f"image_{mode}"] = (policy.logprobs(rollout).logps - rollout.old_logps).abs().max().item()
        ids, mask, embeds, _ = policy.understanding_prompts(
            [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes])
        rollout = policy.sample_texts(ids, mask, embeds, 4)
        gap["text"] = (policy.logprobs(rollout).logps - rollout.old_logps).abs().max().item()
        gaps[str(dtype).removeprefix("torch.")] = gap
    return gaps


class StepRecord(L.Callback):
    """Keeps each step's logged numbers and the peak memory, and prints a line per step."""

    def __init__(self, label: str) -> None:
        self.label, self.steps = label, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        """Record and print the step."""
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        step = {key: m.get(key) for key in STEP_KEYS} | {"peak_gib": peak_gib()}
        self.steps.append(step)
        print(f"[{self.label}] step {batch_idx}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in step.items() if v is not None), flush=True)


def train(args: argparse.Namespace) -> dict:
    """Stage-1 steps with one strategy and one rollout path; their records."""
    from corl.data.datamodule import ExampleDataModule
    from corl.modules.corl_module import CoRLModule
    from corl.modules.rewards import ImageConsistencyReward, TextImageMatchingReward, TextReward
    from corl.modules.sharding import Sharding
    from corl.strategies import FullyShardedStrategy
    from corl.trainer_setup import TrainerSetup

    start = time.perf_counter()
    fsdp = args.strategy == "fsdp"
    with torch.device(DEVICE):  # initialise the random weights where they run, not on the CPU first
        module = CoRLModule(
            model=args.model, group_size=args.group_size, cfg_weight=5.0, max_completion_tokens=args.answer_tokens,
            image_rewards=[ImageConsistencyReward(net="vgg", random_trunk=True, resolution=args.lpips_resolution),
                           TextImageMatchingReward()],
            text_rewards=[TextReward("accuracy"), TextReward("format")],
            micro_batch_size=args.micro_batch, lr=4e-6, log_media_every_n_steps=0, old_logps="rollout",
            activation_checkpointing=fsdp, sharding=Sharding(param_dtype="bfloat16"),
            decode="eager" if args.path == "eager" else "auto",
        )
    module.policy.sampler.settings = replace(module.policy.sampler.settings, prefill_once=args.path == "fast")
    built = time.perf_counter() - start
    label = f"{args.strategy}/{args.path}"
    print(f"[{label}] model built in {built:.0f} s", flush=True)
    record = StepRecord(label)
    trainer = L.Trainer(
        accelerator=DEVICE, devices=1, precision="bf16-mixed",
        max_steps=args.steps, logger=False, strategy=FullyShardedStrategy() if fsdp else "auto",
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[record, TrainerSetup()],  # what the CLI adds to every run
    )
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    size = module.policy.janus.image_size
    trainer.fit(module, ExampleDataModule(batch_size=args.prompts, length=64, image_size=size))
    return {"build_s": built, "steps": record.steps, "peak_gib": peak_gib()}


def main() -> None:
    """Run one check and print (and write) its JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("consistency", help="sampling vs training log-prob gaps (tiny model)")
    run = commands.add_parser("train", help="stage-1 steps of one configuration")
    run.add_argument("--strategy", choices=["fsdp", "single"], default="single")
    run.add_argument("--path", choices=["eager", "fast"], default="fast")
    run.add_argument("--model", default="random:janus-pro-1b")
    run.add_argument("--steps", type=int, default=2)
    run.add_argument("--prompts", type=int, default=2, help="prompts per GPU per step (paper: 16 on 8 GPUs)")
    run.add_argument("--group-size", type=int, default=8)
    run.add_argument("--answer-tokens", type=int, default=512)
    run.add_argument("--micro-batch", type=int, default=8)
    run.add_argument("--lpips-resolution", type=int, default=224, help="LPIPS input size (small on CPUs)")
    for sub in (check, run):
        sub.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    report = {"device": device, "torch": torch.__version__}
    if args.command == "consistency":
        report["logprob_gap"] = consistency()
    else:
        report["config"] = {k: v for k, v in vars(args).items() if k not in ("command", "json")}
        report.update(train(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
