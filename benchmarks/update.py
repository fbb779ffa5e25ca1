"""Update speed: the text training pass with groups packed against one forward per row, and the VQ decode.

    python benchmarks/update.py                        # embedded tiny model, CPU
    python benchmarks/update.py --model tiny-warm      # the demo's model
    python benchmarks/update.py --model random:janus-pro-1b --device cuda --dtype bfloat16 --json update.json

- ``text``: forward and backward of the text log-probs of ``--prompts`` x G sampled answers, with
  each group's prompt run once and its answers packed behind it (``packed``, the default) and with a
  forward per row (``per_row``). Also checks that both give the same log-probs.
- ``vq_decode``: decoding B x G images with the VQ's convolutions on channels-last tensors (the
  default) and on contiguous ones.

Each time is the best of ``--repeats`` after a warm-up; compare ratios, and only within one run.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from rollout import benchmark_parser, best

from corl.data.procedural import make_scene
from corl.modules.loading import load_janus
from corl.modules.policy import JanusPolicy


def main() -> None:
    """Time both ways of each and print the table (and write the JSON report)."""
    args = benchmark_parser(__doc__, prompts=2).parse_args()

    torch.manual_seed(0)
    with torch.device(args.device):
        model, processor = load_janus(args.model, args.dtype)
    policy = JanusPolicy(model, processor, max_completion_tokens=args.answer_tokens)
    scenes = [make_scene(0, i, model.config.vision_config.image_size) for i in range(args.prompts)]
    ids, mask, embeds, _ = policy.understanding_prompts(
        [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
    )
    g = args.group_size
    with torch.no_grad():
        rollout = policy.sample_texts(ids, mask, embeds, g)
        tokens = policy.sample_images([s.prompt for s in scenes], g).tokens

    def text_pass(packed: bool) -> torch.Tensor:
        policy.scorer.settings = replace(policy.scorer.settings, pack_groups=packed)
        policy.zero_grad(set_to_none=True)
        logps = policy.logprobs(rollout).logps
        logps.sum().backward()
        return logps.detach()

    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "model": args.model, "prompts": args.prompts, "group_size": g,
              "prompt_tokens": ids.shape[1], "answer_tokens": rollout.completion_ids.shape[1],
              "text": {}, "vq_decode": {}}
    report["text"]["max_logp_difference"] = float((text_pass(True) - text_pass(False)).abs().max())
    for packed in (True, False):
        report["text"]["packed_s" if packed else "per_row_s"] = best(lambda: text_pass(packed), args.device,
                                                                      args.repeats)
    for layout, name in ((torch.channels_last, "channels_last_s"), (torch.contiguous_format, "contiguous_s")):
        policy.janus.vq_memory_format(layout)
        report["vq_decode"][name] = best(lambda: policy.janus.decode_images(tokens), args.device, args.repeats)
    policy.janus.vq_memory_format(torch.channels_last)

    text, decode = report["text"], report["vq_decode"]
    print(f"model={args.model} device={report['device']} dtype={args.dtype} B={args.prompts} G={g} "
          f"prompt_tokens={report['prompt_tokens']} answer_tokens={report['answer_tokens']}")
    print(f"text log-probs, forward + backward: packed {text['packed_s']:.3f} s, per row {text['per_row_s']:.3f} s "
          f"({text['per_row_s'] / text['packed_s']:.2f}x; log-probs differ by {text['max_logp_difference']:.1e})")
    print(f"VQ decode of {args.prompts * g} images: channels-last {decode['channels_last_s']:.3f} s, contiguous "
          f"{decode['contiguous_s']:.3f} s ({decode['contiguous_s'] / decode['channels_last_s']:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
