"""GPU check: log-prob consistency on the device, then stage-1 steps at the paper's settings under FSDP.

    python scripts/gpu_check.py                     # Janus-Pro-1B's architecture, random weights
    python scripts/gpu_check.py --strategies single --paths fast
    python scripts/gpu_check.py --model tiny --steps 3

Reads nothing from the network: the model is built with random weights (``random:janus-pro-1b``),
the data is the procedural set at 384 px, and LPIPS runs on a declared random trunk. Prints the
largest log-prob mismatch (fp32 and bf16), then, for each strategy (FSDP and a single device) and
each rollout path (``eager``: every row prefills its prompt and every decode step runs eagerly;
``fast``: the default, one prefill per prompt and captured decode steps on CUDA), per step the time
of each phase, rollout tokens per second, the ratio pi_theta / pi_old of the first pass (1 when
training log-probs equal the sampling ones) and peak GPU memory. The FSDP runs use configs/fsdp.yaml's
settings: FullyShardedStrategy, bf16 autocast with bf16-gathered parameters, activation checkpointing.
Without a GPU it runs on the CPU (use --model tiny there).
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from corl.data.datamodule import ExampleDataModule
from corl.data.procedural import make_scene
from corl.modules.corl_module import CoRLModule
from corl.modules.policy import JanusPolicy
from corl.modules.rewards import ImageConsistencyReward, TextReward
from corl.modules.sharding import Sharding
from corl.modules.tiny import build_tiny_janus
from corl.strategies import FullyShardedStrategy

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def consistency(dtype: torch.dtype) -> dict[str, float]:
    """Max |sampling - training| log-prob gap on the GPU for images (cfg, conditional) and text."""
    model, processor = build_tiny_janus(seed=0)
    model.to(DEVICE, dtype)
    scenes = [make_scene(0, i, 64) for i in range(4)]
    gaps = {}
    for mode in ("cfg", "conditional"):
        policy = JanusPolicy(model, processor, cfg_weight=5.0, max_completion_tokens=32, image_logprob_mode=mode)
        rollout = policy.sample_images([s.prompt for s in scenes], 4)
        gaps[f"image_{mode}"] = (policy.image_logprobs(rollout) - rollout.old_logps).abs().max().item()
    ids, mask, embeds, _ = policy.understanding_prompts(
        [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
    )
    rollout = policy.sample_texts(ids, mask, embeds, 4)
    gaps["text"] = (policy.text_logprobs(rollout) - rollout.old_logps).abs().max().item()
    return gaps


class PhaseTimes(L.Callback):
    """Prints the logged phase times, throughput and peak memory after each step."""

    def __init__(self, label: str) -> None:
        self.label = label

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        """Print the step's numbers."""
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        peak = torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else float("nan")
        print(
            f"[{self.label}] step {batch_idx}: rollout {m['time/rollout']:.1f}s rewards {m['time/rewards']:.2f}s "
            f"update {m['time/update']:.1f}s | {m['throughput/rollout_tokens_per_s']:.0f} rollout tok/s | "
            f"answer length {m['text/completion_length_mean']:.0f} | ratio image {m['image/ratio']:.5f} "
            f"text {m['text/ratio']:.5f} | peak {peak:.1f} GiB",
            flush=True,
        )


def main() -> None:
    """Run the consistency check and the training steps."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random:janus-pro-1b")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per GPU per step (paper: 16 on 8 GPUs)")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--strategies", nargs="+", choices=["fsdp", "single"], default=["fsdp", "single"])
    parser.add_argument("--paths", nargs="+", choices=["eager", "fast"], default=["eager", "fast"])
    parser.add_argument("--lpips-resolution", type=int, default=224, help="LPIPS input size (small on CPUs)")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}", flush=True)
    for dtype in (torch.float32, torch.bfloat16):
        print(f"log-prob gap, tiny model, {dtype}: {consistency(dtype)}", flush=True)
    for strategy in args.strategies:
        for path in args.paths:
            train(args, strategy, path)


def train(args: argparse.Namespace, strategy: str, path: str) -> None:
    """A few stage-1 steps with one strategy and one rollout path, printing each step's phases."""
    start = time.perf_counter()
    fsdp = strategy == "fsdp"
    with torch.device(DEVICE):  # initialise the 2B random weights on the GPU, not the CPU
        module = CoRLModule(
            model=args.model, group_size=args.group_size, cfg_weight=5.0, max_completion_tokens=args.answer_tokens,
            image_rewards=[ImageConsistencyReward(net="vgg", random_trunk=True, resolution=args.lpips_resolution)],
            text_rewards=[TextReward("accuracy"), TextReward("format")],
            micro_batch_size=args.micro_batch, lr=4e-6, log_media_every_n_steps=0,
            activation_checkpointing=fsdp, sharding=Sharding(param_dtype="bfloat16"),
            decode="eager" if path == "eager" else "auto",
        )
    module.policy.prefill_once = path == "fast"
    print(f"[{strategy}/{path}] model built in {time.perf_counter() - start:.0f}s", flush=True)
    size = module.policy.model.config.vision_config.image_size
    trainer = L.Trainer(
        accelerator=DEVICE, devices=1, precision="bf16-mixed", max_steps=args.steps, logger=False,
        strategy=FullyShardedStrategy() if fsdp else "auto", enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[PhaseTimes(f"{strategy}/{path}")],
    )
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, ExampleDataModule(batch_size=args.prompts, length=64, image_size=size))
    del module, trainer
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
