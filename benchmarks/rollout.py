"""Rollout speed: corl's fast path against its eager baseline and transformers' own ``generate``.

    python benchmarks/rollout.py                       # embedded tiny model, CPU
    python benchmarks/rollout.py --model random:janus-pro-1b --device cuda --dtype bfloat16 --json rollout.json

Three ways to sample the same groups, each the best of ``--repeats`` in one run:

- ``hf``: how a trainer built on the HF classes samples a group: ``generate`` per example with
  ``num_return_sequences=G`` for images (CFG inside), and per sample with the image re-encoded every
  time for answers. HF is held to the full answer length; corl stops at EOS, which a random model
  rarely samples, so the answer ratios flatter corl by at most that share.
- ``eager``: corl's batched loop as it was: every row prefills its own copy of the prompt and every
  one-token step runs eagerly.
- ``fast``: the default on this device: each prompt prefilled once, its KV cache copied to its G
  rows, and (on CUDA) the one-token step replayed as a captured CUDA graph.

An image rollout's time includes decoding the tokens to pixels (the VQ decoder, the same on every
path); the milliseconds per decode step leave it out.

Compare ratios, and only within one run. With a known bandwidth (a GPU's, by name, or
``--bandwidth-tbs``) the report adds each task's memory-bandwidth roofline of a decode step (what it
must read: the decoder layers, the task's head, the KV cache at its own prompt's length; ``step_bytes``)
and the fraction of it the fast path reaches.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from corl.data.procedural import make_scene
from corl.modules.loading import load_janus
from corl.modules.policy import JanusPolicy

BANDWIDTH_TBS = {"H200": 4.8, "H100": 3.35, "A100": 2.0, "L40S": 0.864, "A10G": 0.6, "L4": 0.3}


def timed(fn, device: str) -> float:
    """Wall time of ``fn()``, waiting for the GPU on both ends."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def best(fn, device: str, repeats: int) -> float:
    """The best of ``repeats`` timings after one warm-up (which also captures graphs)."""
    fn()
    return min(timed(fn, device) for _ in range(repeats))


def kv_bytes_per_position(policy: JanusPolicy, dtype: torch.dtype) -> int:
    """Bytes of keys and values one row caches per position, over all layers."""
    config = policy.llm.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * dtype.itemsize


def step_bytes(policy: JanusPolicy, task: str, rows: int, prompt_tokens: int, new_tokens: int,
               dtype: torch.dtype) -> float:
    """What one decode step must read, on average over the rollout: its weights once, and the KV cache.

    The weights are the LLM's decoder layers and final norm (not its token embedding: a step reads a
    row of it at most), and the task's head: for images the generation head and the generation
    embedding's aligner, for answers the text head. The cache holds ``prompt_tokens`` (the task's own
    prompt) and on average half of the ``new_tokens``, for each of ``rows`` decoded rows.
    """
    modules = [m for name, m in policy.llm.named_children() if m is not policy.llm.get_input_embeddings()]
    modules += policy.janus.generation_modules() if task == "image" else [policy.janus.lm_head]
    weights = sum(p.numel() * dtype.itemsize for m in modules for p in m.parameters())
    return weights + rows * kv_bytes_per_position(policy, dtype) * (prompt_tokens + new_tokens / 2)


def benchmark_parser(description: str, prompts: int) -> argparse.ArgumentParser:
    """The options every benchmark takes: the model, where it runs, the group's sizes, repeats, the report."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=prompts)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the report as JSON to this path")
    return parser


def main() -> None:
    """Time the rollouts every way and print the table (and write the JSON report)."""
    parser = benchmark_parser(__doc__, prompts=4)
    parser.add_argument("--cfg-weight", type=float, default=5.0)
    parser.add_argument("--bandwidth-tbs", type=float, help="device memory bandwidth (default: by GPU name)")
    parser.add_argument("--skip-hf", action="store_true", help="leave transformers' generate out (slow at 1B)")
    parser.add_argument("--longer-answers", type=int, nargs="*", default=[],
                        help="also time answers of these lengths (eager and fast, reported as text_<length>)")
    args = parser.parse_args()

    torch.manual_seed(0)
    with torch.device(args.device):  # random weights are initialised where they will run
        model, processor = load_janus(args.model, args.dtype)
    policy = JanusPolicy(model, processor, cfg_weight=args.cfg_weight, max_completion_tokens=args.answer_tokens)
    size = model.config.vision_config.image_size
    scenes = [make_scene(0, i, size) for i in range(args.prompts)]
    g, n = args.group_size, policy.num_image_tokens
    eos = processor.tokenizer.eos_token_id
    ids, mask, embeds, _ = policy.understanding_prompts(
        [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
    )

    def corl(path: str):
        prefill_once, decode = (False, "eager") if path == "eager" else (True, "auto")
        policy.sampler.settings = replace(policy.sampler.settings, prefill_once=prefill_once, decode=decode)
        return (lambda: policy.sample_images([s.prompt for s in scenes], g),
                lambda: policy.sample_texts(ids, mask, embeds, g))

    def chat(content):
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def hf_images():
        for scene in scenes:
            enc = processor(text=[chat([{"type": "text", "text": scene.prompt}])], generation_mode="image",
                            return_tensors="pt").to(args.device)
            model.generate(**enc, generation_mode="image", do_sample=True, num_return_sequences=g,
                           guidance_scale=args.cfg_weight)

    def hf_answers():
        for scene in scenes:
            text = chat([{"type": "image"}, {"type": "text", "text": scene.qa_problem}])
            enc = processor(text=[text], images=[scene.real_image], return_tensors="pt").to(args.device)
            enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
            for _ in range(g):  # the image goes through the vision tower for every sample
                model.generate(
                    **enc, do_sample=True, max_new_tokens=args.answer_tokens, min_new_tokens=args.answer_tokens,
                    eos_token_id=eos, pad_token_id=processor.tokenizer.pad_token_id,
                )

    device = "cuda" if args.device.startswith("cuda") else "cpu"
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "model": args.model,
              "dtype": args.dtype, "prompts": args.prompts, "group_size": g, "image_tokens": n,
              "answer_tokens": args.answer_tokens, "image": {}, "text": {}}
    if not args.skip_hf:
        report["image"]["hf_s"] = best(hf_images, args.device, args.repeats)
        report["text"]["hf_s"] = best(hf_answers, args.device, args.repeats)
    tokens = policy.sample_images([s.prompt for s in scenes], g).tokens
    vq_decode = best(lambda: policy.janus.decode_images(tokens), args.device, args.repeats)  # the same on every path
    for path in ("eager", "fast"):
        images, answers = corl(path)
        report["image"][f"{path}_s"] = best(images, args.device, args.repeats)
        report["text"][f"{path}_s"] = best(answers, args.device, args.repeats)
        report["image"][f"{path}_ms_per_step"] = (report["image"][f"{path}_s"] - vq_decode) / n * 1e3
        report["text"][f"{path}_ms_per_step"] = report["text"][f"{path}_s"] / args.answer_tokens * 1e3
    for length in args.longer_answers:  # the same groups, longer answers: corl's paths only
        policy.sampler.settings = replace(policy.sampler.settings, max_completion_tokens=length)
        timings = {}
        for path in ("eager", "fast"):
            _, answers = corl(path)
            timings[f"{path}_s"] = best(answers, args.device, args.repeats)
            timings[f"{path}_ms_per_step"] = timings[f"{path}_s"] / length * 1e3
        report[f"text_{length}"] = timings
    report["decode"] = policy.decode_stats()
    bandwidth = args.bandwidth_tbs or next((v for k, v in BANDWIDTH_TBS.items() if k in report["device"]), None)
    if bandwidth:
        dtype = model.dtype
        image_prompt = policy.generation_prompts([s.prompt for s in scenes])[0].shape[1]
        reads = {"image": step_bytes(policy, "image", 2 * args.prompts * g, image_prompt, n, dtype),
                 "text": step_bytes(policy, "text", args.prompts * g, ids.shape[1], args.answer_tokens, dtype)}
        reads |= {f"text_{length}": step_bytes(policy, "text", args.prompts * g, ids.shape[1], length, dtype)
                  for length in args.longer_answers}
        for task, read in reads.items():
            roof = read / (bandwidth * 1e12) * 1e3
            report[task].update(roofline_ms_per_step=roof, bytes_per_step=read,
                                roofline_fraction=roof / report[task]["fast_ms_per_step"])
        report["bandwidth_tbs"] = bandwidth

    print(f"model={args.model} device={report['device']} dtype={args.dtype} B={args.prompts} G={g} image_tokens={n} "
          f"answer_tokens={args.answer_tokens}")
    print(f"{'rollout':8} {'HF generate s':>14} {'eager s':>9} {'fast s':>9} {'fast vs eager':>14} {'fast vs HF':>11}")
    for task in ("image", "text"):
        t = report[task]
        hf = f"{t['hf_s']:14.3f}" if "hf_s" in t else f"{'-':>14}"
        versus = f"{t['hf_s'] / t['fast_s']:10.2f}x" if "hf_s" in t else f"{'-':>11}"
        print(f"{task:8} {hf} {t['eager_s']:9.3f} {t['fast_s']:9.3f} {t['eager_s'] / t['fast_s']:13.2f}x {versus}")
    for task in ("image", "text", *(f"text_{length}" for length in args.longer_answers)):
        t = report[task]
        line = f"{task} decode step: eager {t['eager_ms_per_step']:.2f} ms, fast {t['fast_ms_per_step']:.2f} ms"
        if "roofline_ms_per_step" in t:
            line += (f", roofline {t['roofline_ms_per_step']:.3f} ms at {bandwidth} TB/s "
                     f"({t['roofline_fraction']:.1%} of it)")
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
