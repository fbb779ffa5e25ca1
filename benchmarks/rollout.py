"""Rollout throughput: corl's group sampling against transformers' own Janus ``generate`` in the same run.

    python benchmarks/rollout.py                       # embedded tiny model, CPU
    python benchmarks/rollout.py --model /path/to/Janus-Pro-1B --device cuda --dtype bfloat16

The baseline is how a trainer built on the HF classes samples a group: ``generate`` per example with
``num_return_sequences=G`` for images (CFG inside), and per sample with the image re-encoded every
time for answers. HF is held to the full answer length; corl stops at EOS, which a random model
rarely samples (about 6% of the tiny model's 32-token answers), so the answer ratio flatters corl by
at most that much. Compare ratios, not absolute numbers, and only within one run.
"""

from __future__ import annotations

import argparse
import time

import torch

from corl.data.procedural import make_scene
from corl.modules.loading import load_janus
from corl.modules.policy import JanusPolicy


def timed(fn, device: str) -> float:
    """Wall time of ``fn()``, waiting for the GPU on both ends."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    """Time both rollouts both ways and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--cfg-weight", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    with torch.device(args.device):  # random weights are initialised where they will run
        model, processor = load_janus(args.model, args.dtype)
    policy = JanusPolicy(model, processor, cfg_weight=args.cfg_weight, max_completion_tokens=args.answer_tokens)
    size = model.config.vision_config.image_size
    scenes = [make_scene(0, i, size) for i in range(args.prompts)]
    g, n = args.group_size, policy.num_image_tokens
    eos = processor.tokenizer.eos_token_id

    def corl_images():
        policy.sample_images([s.prompt for s in scenes], g)

    def hf_images():
        for scene in scenes:
            text = policy._chat([{"type": "text", "text": scene.prompt}])
            enc = processor(text=[text], generation_mode="image", return_tensors="pt").to(args.device)
            model.generate(**enc, generation_mode="image", do_sample=True, num_return_sequences=g,
                           guidance_scale=args.cfg_weight)

    ids, mask, embeds, _ = policy.understanding_prompts(
        [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
    )

    def corl_answers():
        policy.sample_texts(ids, mask, embeds, g)

    def hf_answers():
        for scene in scenes:
            text = policy._chat([{"type": "image"}, {"type": "text", "text": scene.qa_problem}])
            enc = processor(text=[text], images=[scene.real_image], return_tensors="pt").to(args.device)
            enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
            for _ in range(g):  # the image goes through the vision tower for every sample
                model.generate(
                    **enc, do_sample=True, max_new_tokens=args.answer_tokens, min_new_tokens=args.answer_tokens,
                    eos_token_id=eos, pad_token_id=processor.tokenizer.pad_token_id,
                )

    rows = []
    for name, ours, theirs, tokens in (
        ("images", corl_images, hf_images, args.prompts * g * n),
        ("answers", corl_answers, hf_answers, args.prompts * g * args.answer_tokens),
    ):
        ours(), theirs()  # warm-up
        t_ours = min(timed(ours, args.device) for _ in range(args.repeats))
        t_theirs = min(timed(theirs, args.device) for _ in range(args.repeats))
        rows.append((name, tokens, t_theirs, t_ours))
    print(f"model={args.model} device={args.device} dtype={args.dtype} B={args.prompts} G={g} image_tokens={n}")
    print(f"{'rollout':8} {'tokens':>8} {'HF generate s':>14} {'corl s':>8} {'corl tok/s':>11} {'speed-up':>9}")
    for name, tokens, t_theirs, t_ours in rows:
        print(f"{name:8} {tokens:8d} {t_theirs:14.3f} {t_ours:8.3f} {tokens / t_ours:11.0f} {t_theirs / t_ours:8.2f}x")


if __name__ == "__main__":
    main()
