"""DAPO's dynamic sampling: a step trains on groups whose rewards differ, never on fewer groups.

A group whose outputs all got the same reward has zero advantage everywhere: it costs a rollout and
an update and teaches nothing. With dynamic sampling, such groups are replaced by informative
groups from further rollouts of new examples, up to ``max_resample_rounds`` rounds. The step always
keeps exactly ``batch_size`` groups (uninformative ones fill up what the rounds could not), so every
rank runs the same number of micro-batches and reaches the same collectives: DDP and FSDP cannot
hang on it. Here are the pure parts: which groups inform, and how rollouts of several rounds are
put together.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from corl.data.schema import ExampleBatch
from corl.modules.rollout import ImageRollout, Rollout, TextRollout


def informative_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[B]`` true for the groups of ``rewards`` ``[B * G]`` whose values are not all equal."""
    grouped = rewards.view(-1, group_size)
    return grouped.amax(dim=1) > grouped.amin(dim=1)


def pick_groups(informative: list[torch.Tensor], wanted: int) -> list[tuple[int, int]]:
    """``(round, group)`` pairs to train on, ``wanted`` of them: informative groups first, by round.

    Where the rounds found too few, the first round's uninformative groups fill up.
    """
    chosen = [(r, int(g)) for r, flags in enumerate(informative) for g in flags.nonzero().flatten()][:wanted]
    filler = [(0, int(g)) for g in (~informative[0]).nonzero().flatten()]
    return chosen + filler[: wanted - len(chosen)]


def _left(tensor: torch.Tensor, length: int, value: float) -> torch.Tensor:
    return F.pad(tensor, (length - tensor.shape[1], 0), value=value)


def _right(tensor: torch.Tensor, length: int, value: float) -> torch.Tensor:
    return F.pad(tensor, (0, length - tensor.shape[1]), value=value)


def _cat_images(parts: list[ImageRollout], pad_id: int) -> ImageRollout:
    length = max(p.prompt_ids.shape[1] for p in parts)
    return ImageRollout(
        prompt_ids=torch.cat([_left(p.prompt_ids, length, pad_id) for p in parts]),
        prompt_mask=torch.cat([_left(p.prompt_mask, length, 0) for p in parts]),
        uncond_ids=torch.cat([_left(p.uncond_ids, length, pad_id) for p in parts]),
        tokens=torch.cat([p.tokens for p in parts]),
        old_logps=torch.cat([p.old_logps for p in parts]),
        pixels=torch.cat([p.pixels for p in parts]),
    )


def _cat_texts(parts: list[TextRollout], pad_id: int) -> TextRollout:
    length = max(p.prompt_ids.shape[1] for p in parts)
    width = max(p.completion_ids.shape[1] for p in parts)
    offsets = torch.tensor([0, *(p.image_embeds.shape[0] for p in parts[:-1])]).cumsum(0).tolist()
    trained = None if parts[0].trained is None else torch.cat([p.trained for p in parts])
    return TextRollout(
        prompt_ids=torch.cat([_left(p.prompt_ids, length, pad_id) for p in parts]),
        prompt_mask=torch.cat([_left(p.prompt_mask, length, 0) for p in parts]),
        example_index=torch.cat([p.example_index + offset for p, offset in zip(parts, offsets, strict=True)]),
        image_embeds=torch.cat([p.image_embeds for p in parts]),
        completion_ids=torch.cat([_right(p.completion_ids, width, pad_id) for p in parts]),
        completion_mask=torch.cat([_right(p.completion_mask, width, 0) for p in parts]),
        old_logps=torch.cat([_right(p.old_logps, width, 0.0) for p in parts]),
        texts=[text for p in parts for text in p.texts],
        completion_ends_with_eos=torch.cat([p.completion_ends_with_eos for p in parts]),
        trained=trained,
    )


def _group_rows(rollout: Rollout, groups: list[int]) -> torch.Tensor:
    g = rollout.group_size
    return torch.tensor([group * g + i for group in groups for i in range(g)], device=rollout.rows().device)


def combine(
    rounds: list[tuple[Rollout, dict[str, torch.Tensor], ExampleBatch]], picks: list[tuple[int, int]], pad_id: int
) -> tuple[Rollout, dict[str, torch.Tensor], ExampleBatch]:
    """One rollout, its rewards and its examples, made of the picked groups of several rounds."""
    by_round: dict[int, list[int]] = {}
    for round_index, group in picks:
        by_round.setdefault(round_index, []).append(group)
    parts, rewards, columns = [], {}, {}
    for round_index, groups in sorted(by_round.items()):
        rollout, round_rewards, batch = rounds[round_index]
        rows = _group_rows(rollout, groups)
        example = torch.tensor(groups, device=rollout.real_pixels.device)
        parts.append(Rollout(
            image=rollout.part("image", rows), text=rollout.part("text", rows),
            real_pixels=rollout.real_pixels[example], group_size=rollout.group_size,
            ref_image_logps=None if rollout.ref_image_logps is None else rollout.ref_image_logps[rows],
            ref_text_logps=None if rollout.ref_text_logps is None else rollout.ref_text_logps[rows],
        ))
        for name, values in round_rewards.items():
            rewards.setdefault(name, []).append(values[rows.to(values.device)])
        for name in ("real_image", "prompt", "qa_problem", "qa_solution", "qa_type"):
            values = getattr(batch, name)
            if values is not None:
                columns.setdefault(name, []).extend(values[g] for g in groups)
    first = parts[0]
    width = max(p.ref_text_logps.shape[1] for p in parts) if first.ref_text_logps is not None else 0
    rollout = replace(
        first,
        image=None if first.image is None else _cat_images([p.image for p in parts], pad_id),
        text=None if first.text is None else _cat_texts([p.text for p in parts], pad_id),
        real_pixels=torch.cat([p.real_pixels for p in parts]),
        ref_image_logps=None if first.ref_image_logps is None else torch.cat([p.ref_image_logps for p in parts]),
        ref_text_logps=None if first.ref_text_logps is None else torch.cat(
            [_right(p.ref_text_logps, width, 0.0) for p in parts]),
    )
    batch = ExampleBatch(**columns)  # the rows each round passed over were counted when it was read
    return rollout, {name: torch.cat(values) for name, values in rewards.items()}, batch
