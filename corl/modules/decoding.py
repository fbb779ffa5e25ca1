"""The decode engine: one batched loop over a static KV cache, shared by images and answers.

Rollouts are decode-bound: hundreds of one-token steps, each reading all the LLM's weights. So

- each distinct prompt is prefilled once and its KV cache copied to the rows that share it (the G
  samples of a group, and for images the conditional and unconditional halves), instead of running
  the same prompt G times;
- the one-token step (LLM forward with the static cache, then the head, the CFG mix and the
  temperature) has static shapes: the attention mask is allocated once for the whole rollout and
  filled in place, the positions advance in place, the row count is fixed. On CUDA that step can be
  captured once per rollout shape and replayed (``captured``: ``torch.compile`` with CUDA graphs),
  which removes the kernel-launch and Python overhead that bounds an eager loop; elsewhere it runs
  eagerly. Sampling stays outside the captured region.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from transformers import StaticCache

DecodeMode = Literal["auto", "eager", "captured"]


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Rotary positions for left-padded rows: 0 at the first real token, padding clamped to 0."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def resolve_mode(mode: DecodeMode, device: torch.device) -> Literal["eager", "captured"]:
    """``auto`` is ``captured`` on CUDA and ``eager`` elsewhere; ``captured`` needs CUDA."""
    if mode not in ("auto", "eager", "captured"):
        raise ValueError(f"model.decode must be 'auto', 'eager' or 'captured', got {mode!r}")
    if mode == "auto":
        return "captured" if device.type == "cuda" else "eager"
    if mode == "captured" and device.type != "cuda":
        raise ValueError("model.decode: captured replays CUDA graphs and needs a CUDA device; use auto or eager")
    return mode


class DecodeLoop:
    """Prefill once per distinct prompt, then decode all rows together, one token per step.

    Args:
        llm: the decoder stack (``inputs_embeds`` in, ``last_hidden_state`` out, a ``cache`` argument).
        logits_fn: last hidden states ``[rows, D]`` -> the logits tokens are sampled from (head, CFG
            mix, temperature); part of the step that is captured.
        mode: ``eager`` or ``captured`` (see ``resolve_mode``).
    """

    def __init__(self, llm: nn.Module, logits_fn: Callable[[torch.Tensor], torch.Tensor], mode: str) -> None:
        self.llm, self.logits_fn, self.mode = llm, logits_fn, mode
        self._compiled: Callable | None = None

    @torch.no_grad()
    def run(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        rows: torch.Tensor,
        steps: int,
        next_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
        check_every: int = 8,
    ) -> None:
        """Decode ``steps`` tokens for every row.

        Args:
            embeds: ``[P, L, D]`` embeddings of the distinct prompts, left-padded.
            mask: ``[P, L]`` their attention mask.
            rows: ``[R]`` the prompt each decoded row continues (e.g. each prompt G times).
            steps: tokens to decode.
            next_fn: the step's logits -> embeddings of the next inputs ``[R, 1, D]`` and a boolean
                ``[R]`` that is true for finished rows (None when rows never finish early); it samples
                and records the tokens itself.
            check_every: finishing is checked every this many steps only: each check waits for the device.
        """
        length = mask.shape[1]
        cache = StaticCache(config=self.llm.config, max_cache_len=length + steps)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask), cache=cache,
                       use_cache=True)
        for layer in cache.layers:  # the prompt's keys and values, copied to every row that continues it
            layer.reorder_cache(rows)
        hidden = out.last_hidden_state[rows, -1]
        # Static buffers for the whole rollout: the mask is filled in place, the positions advance in place.
        full_mask = mask.new_zeros(len(rows), length + steps)
        full_mask[:, :length] = mask[rows]
        self._mask, self._cache = full_mask, cache
        self._positions = positions_from_mask(mask)[rows, -1:].clone()
        step = self._step_fn(cache)
        logits = self.logits_fn(hidden)
        for index in range(steps):
            next_embeds, done = next_fn(logits)
            if index == steps - 1 or (done is not None and index % check_every == 0 and bool(done.all())):
                break
            full_mask[:, length + index] = 1
            self._positions += 1
            logits = step(next_embeds)

    def _forward(self, next_embeds: torch.Tensor) -> torch.Tensor:
        """One token for every row: LLM forward with the static cache, then the logits. Static shapes."""
        out = self.llm(inputs_embeds=next_embeds, attention_mask=self._mask, position_ids=self._positions,
                       cache=self._cache, use_cache=True)
        return self.logits_fn(out.last_hidden_state[:, -1])

    def _step_fn(self, cache: StaticCache) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.mode != "captured":
            return self._forward
        for layer in cache.layers:  # the copied cache tensors keep their addresses for the graph's replays
            torch._dynamo.mark_static_address(layer.keys)
            torch._dynamo.mark_static_address(layer.values)
        if self._compiled is None:
            self._compiled = torch.compile(self._forward, mode="reduce-overhead", fullgraph=False, dynamic=False)

        def captured(next_embeds: torch.Tensor) -> torch.Tensor:
            try:
                return self._compiled(next_embeds).clone()  # the graph's output buffer is reused by the next replay
            except Exception as err:  # noqa: BLE001 - any capture failure falls back, loudly
                warnings.warn(f"model.decode: captured failed ({type(err).__name__}: {err}); decoding eagerly",
                              stacklevel=2)
                self.mode = "eager"
                return self._forward(next_embeds)

        return captured
