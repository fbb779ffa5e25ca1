"""Group packing for the text training forward: the G answers of a group share one prompt, so it runs once.

The rows of a micro-batch that answer the same example (``example_index``) are packed into one
sequence: the example's prompt, then each row's answer in a block of its own. A block attends to the
prompt's real tokens and causally to itself, never to another block, and its positions continue from
the prompt, as in sampling, where each prompt was prefilled once and its cache copied to the group.
The prompt's states are the same for every row, so the packed forward computes the same log-probs
as one forward per row over ``prompt + answer`` (to float rounding), with the prompt's tokens run
once per group instead of G times: for an understanding prompt of a few hundred tokens (64 image
tokens here, 576 in Janus-Pro) that is most of the forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Packing:
    """Where each row's answer goes in the packed sequences.

    ``sources[p]`` is a row whose prompt packed sequence ``p`` carries; row ``r`` is block
    ``slots[r]`` of sequence ``sequences[r]``; each sequence holds ``blocks`` answer blocks (the largest group).
    """

    sources: torch.Tensor  # [P]
    sequences: torch.Tensor  # [R]
    slots: torch.Tensor  # [R]
    blocks: int


def pack_rows(example_index: torch.Tensor) -> Packing:
    """The packing of rows ``[R]`` by the example each one answers (rows of one example share a prompt)."""
    examples, sequences = torch.unique(example_index, return_inverse=True)
    order = torch.argsort(sequences, stable=True)
    counts = torch.bincount(sequences, minlength=len(examples))
    starts = torch.cumsum(counts, 0) - counts  # first position of each sequence's rows in `order`
    slots = torch.empty_like(sequences)
    slots[order] = torch.arange(len(sequences), device=sequences.device) - starts[sequences[order]]
    sources = order[starts]
    return Packing(sources, sequences, slots, int(counts.max()) if len(counts) else 0)


def packed_mask(prompt_mask: torch.Tensor, blocks: int, block_length: int) -> torch.Tensor:
    """``[P, 1, S, S]`` boolean attention mask (True: attends) of prompts ``[P, L]`` followed by answer blocks.

    Prompt queries attend causally to the real prompt tokens; a block's queries to the real prompt
    tokens and causally within their block. Every query also attends to itself, so a padding
    position (whose output nothing reads) never has an empty softmax.
    """
    p, length = prompt_mask.shape
    device = prompt_mask.device
    block = torch.cat([torch.full((length,), -1, device=device),
                       torch.arange(blocks, device=device).repeat_interleave(block_length)])  # [S], -1: prompt
    offset = torch.cat([torch.arange(length, device=device), torch.arange(block_length, device=device).repeat(blocks)])
    causal_within = (block[:, None] == block[None, :]) & (offset[None, :] <= offset[:, None])
    sees_prompt = (block[:, None] >= 0) & (block[None, :] < 0)
    real_keys = torch.cat([prompt_mask.bool(), prompt_mask.new_ones(p, blocks * block_length, dtype=torch.bool)], 1)
    allowed = (causal_within | sees_prompt)[None] & real_keys[:, None, :]
    return (allowed | torch.eye(len(block), dtype=torch.bool, device=device)).unsqueeze(1)


def packed_positions(prompt_mask: torch.Tensor, blocks: int, block_length: int) -> torch.Tensor:
    """``[P, S]`` rotary positions: 0 at a prompt's first real token; every block continues from the prompt."""
    prompt = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
    offsets = torch.arange(block_length, device=prompt_mask.device).repeat(blocks)
    return torch.cat([prompt, prompt_mask.long().sum(-1, keepdim=True) + offsets], dim=1)


def packed_inputs(prompt: torch.Tensor, answers: torch.Tensor, packing: Packing) -> torch.Tensor:
    """Packed input embeddings ``[P, S, D]`` from the prompts ``[P, L, D]`` and the rows' answers ``[R, B, D]``.

    The blocks of a smaller group than the largest are zeros (their outputs are never read).
    """
    p, b, d = prompt.shape[0], answers.shape[1], answers.shape[2]
    blocks = answers.new_zeros(p, packing.blocks, b, d)
    blocks = blocks.index_put((packing.sequences, packing.slots), answers)
    return torch.cat([prompt, blocks.view(p, packing.blocks * b, d)], dim=1)


def unpacked_states(hidden: torch.Tensor, packing: Packing, prompt_length: int, block_length: int) -> torch.Tensor:
    """Each row's states ``[R, 1 + B, D]``: the prompt's last, then its block's, from packed states ``[P, S, D]``.

    State ``t`` scores answer token ``t`` (the prompt's last state scores the first token).
    """
    last = hidden[packing.sequences, prompt_length - 1].unsqueeze(1)  # [R, 1, D]
    index = prompt_length + packing.slots[:, None] * block_length + torch.arange(block_length, device=hidden.device)
    return torch.cat([last, hidden[packing.sequences[:, None], index]], dim=1)
