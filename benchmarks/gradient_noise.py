"""Learning signal: how alike the policy gradients of independent batches are, per task, under a config's rewards.

    python benchmarks/gradient_noise.py --model tiny-warm                 # the demo's stage 1
    python benchmarks/gradient_noise.py --model tiny-warm --config configs/demo/s2_t2i.yaml --prompts 8

Each of ``--batches`` batches of fresh examples is rolled out, scored and turned into group advantages as
a training step does; then each task's GRPO loss is back-propagated alone. If every batch's gradient is
the same signal s plus its own noise (of variance sigma^2 / b for b samples), two batches' gradients
have a cosine of about |s|^2 / (|s|^2 + sigma^2 / b). A cosine near 0 means a step is mostly noise:
the optimiser then walks at random and only many steps average the signal out. ``samples_for_signal``
is b (1 - cos) / cos, the batch at which signal and noise would be equal (the simple noise scale of
McCandlish et al., 2018); a cosine <= 0 finds no signal.

No timing: the numbers are a property of the model, the rewards and the batch, not of the machine.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from rollout import benchmark_parser

from corl.data.procedural import ProceduralExamples
from corl.data.schema import collate_examples
from corl.evaluate import build_module
from corl.modules.grpo import group_advantages
from corl.modules.update import logprobs, objective

ROOT = Path(__file__).resolve().parents[1]


def task_gradients(module, batch) -> dict[str, torch.Tensor]:
    """Each task's flattened gradient of the GRPO loss for one rollout of ``batch`` (paired advantages)."""
    hp = module.hparams
    with torch.no_grad(), module.rollout_mode():
        rollout = module.rollout(batch)
        rewards = module.score(rollout, batch)
    advantages = group_advantages(rewards["total"], hp.group_size, hp.advantage_scale, hp.advantage_eps)
    params = [p for p in module.policy.trained_modules().parameters() if p.requires_grad]
    grads = {}
    for task, scored in zip(("image", "text"), logprobs(module.policy, rollout), strict=True):
        if scored is None:
            continue
        # exactly the training step's loss, of every row
        limit = module.policy.num_image_tokens if task == "image" else hp.max_completion_tokens
        loss, _ = objective(scored.logps, rollout.part(task), advantages, rollout.ref_logps(task),
                            module.update_settings.loss, limit)
        grads[task] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, allow_unused=True,
                                                                          retain_graph=True) if g is not None])
    return grads


def main() -> None:
    """Roll out the batches, compare their gradients per task and print (and write) the report."""
    parser = benchmark_parser(__doc__, prompts=4)
    parser.set_defaults(answer_tokens=64)  # the demo's answer limit: a cut answer fails the format reward
    parser.add_argument("--config", default=str(ROOT / "configs/demo/s1.yaml"),
                        help="its rewards and sampling settings")
    parser.add_argument("--batches", type=int, default=4, help="independent batches (cosines of every pair)")
    parser.add_argument("--seed", type=int, default=7, help="the procedural examples' seed (fresh prompts)")
    args = parser.parse_args()

    torch.manual_seed(0)
    module, datamodule = build_module(args.config, args.model, [
        "--model.group_size", str(args.group_size), "--model.max_completion_tokens", str(args.answer_tokens),
        "--model.dtype", args.dtype])
    module.to(args.device)
    for reward in module.image_rewards:
        reward.setup()
    hp = datamodule.hparams
    examples = ProceduralExamples(args.prompts * args.batches, args.seed, hp.image_size, hp.kind, hp.questions)
    batches = [collate_examples([examples[i] for i in range(k * args.prompts, (k + 1) * args.prompts)])
               for k in range(args.batches)]
    grads = [task_gradients(module, batch) for batch in batches]
    samples = args.prompts * args.group_size
    report = {"model": args.model, "config": args.config, "prompts": args.prompts, "group_size": args.group_size,
              "batches": args.batches, "tasks": {}}
    for task in grads[0]:
        cosines = [float(torch.nn.functional.cosine_similarity(a[task], b[task], dim=0))
                   for a, b in itertools.combinations(grads, 2)]
        cosine = sum(cosines) / len(cosines)
        report["tasks"][task] = {
            "cosine": cosine, "cosines": cosines, "gradient_norm": float(grads[0][task].norm()),
            "samples_for_signal": samples * (1 - cosine) / cosine if cosine > 0 else None,
        }
        needed = report["tasks"][task]["samples_for_signal"]
        print(f"{task}: cosine between batches of {samples} samples {cosine:+.3f} (pairs: "
              + ", ".join(f"{c:+.2f}" for c in cosines) + "); "
              + (f"signal = noise at ~{needed:.0f} samples a step" if needed else "no signal found"))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
