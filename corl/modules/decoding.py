"""The decode engine: one batched loop over a static KV cache, shared by images and answers.

Rollouts are decode-bound: hundreds of one-token steps, each reading all the LLM's weights. So

- each distinct prompt is prefilled once and its KV cache copied to the rows that share it (the G
  samples of a group, and for images the conditional and unconditional halves), instead of running
  the same prompt G times;
- the one-token step (LLM forward with the static cache, then the head, the CFG mix and the
  temperature) has static shapes. When it is captured, prompts are left-padded to a prompt capacity that
  only grows, a bucket (``BUCKET`` tokens) at a time, so a rollout's shape is (rows, capacity + steps)
  and a run meets a handful of them whatever its prompt lengths; each shape has one KV cache, attention
  mask and position buffer, allocated once and reset for every rollout that has that shape (they stay
  allocated through the update: the captured graph reads their addresses). On CUDA the step can
  be captured once per shape and replayed (``captured``: ``torch.compile`` with CUDA graphs), which
  removes the kernel-launch and Python overhead that bounds an eager loop; elsewhere it runs eagerly.
  Sampling stays outside the captured region.

Every decode loop (one per task) compiles its own copy of the step's code: torch's recompile budget
(``torch._dynamo.config.recompile_limit``, 8) is counted per code object, so images and answers do
not spend each other's. A shape past that budget, or a step that fails to compile or capture, runs
eagerly; that is counted (``DecodeStats``, logged as ``decode/*``) and warned about, never silent. A
failure mid-step may have written part of the cache, so that rollout starts again from its prefill,
and the loop stays eager from then on.
"""

from __future__ import annotations

import inspect
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from transformers import StaticCache
from transformers.cache_utils import StaticLayer

DecodeMode = Literal["auto", "eager", "captured"]
BUCKET = 64  # prompt positions are reserved in multiples of this
NextFn = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor | None]]


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Rotary positions for left-padded rows: 0 at the first real token, padding clamped to 0."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def resolve_mode(mode: DecodeMode, device: torch.device) -> Literal["eager", "captured"]:
    """``auto`` is ``captured`` on CUDA and ``eager`` elsewhere; ``captured`` needs CUDA."""
    if mode not in get_args(DecodeMode):
        raise ValueError(f"model.decode must be one of {get_args(DecodeMode)}, got {mode!r}")
    if mode == "auto":
        return "captured" if device.type == "cuda" else "eager"
    if mode == "captured" and device.type != "cuda":
        raise ValueError("model.decode: captured replays CUDA graphs and needs a CUDA device; use auto or eager")
    return mode


def cache_keyword(llm: nn.Module) -> str:
    """The forward's name for the KV cache: ``cache`` from transformers 5.25 on, ``past_key_values`` before.

    An unknown keyword would be swallowed by ``**kwargs`` and every step would decode without its prompt,
    so the name is read from the installed signature, and a forward with neither is refused.
    """
    parameters = inspect.signature(llm.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    raise TypeError(f"{type(llm).__name__}.forward takes neither 'cache' nor 'past_key_values': "
                    "this transformers version is not supported")


def prompt_capacity(length: int, capacity: int = 0) -> int:
    """The prompt positions to reserve: ``capacity`` if ``length`` fits, else ``length`` rounded up to a bucket."""
    return capacity if length <= capacity else -(-length // BUCKET) * BUCKET


def _own_code(function: Callable, name: str) -> Callable:
    """``function`` with a code object of its own, so dynamo keeps its graphs and its budget apart."""
    code = function.__code__.replace(co_name=name)
    return types.FunctionType(code, function.__globals__, name, function.__defaults__, function.__closure__)


class _SplitDtypeLayer(StaticLayer):
    """transformers' static cache layer, its values kept in their own dtype.

    Under autocast the keys leave the rotary embedding in float32 and the values the projection in
    bfloat16; transformers before 5.25 allocates both in the keys' dtype, and then cannot write the values.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate as transformers does, then the values in their dtype if it differs."""
        super().lazy_initialization(key_states, value_states)
        if self.values.dtype != value_states.dtype:
            self.values = self.values.to(value_states.dtype)
            torch._dynamo.mark_static_address(self.values)


class DecodeCache(StaticCache):
    """A static KV cache whose keys and values each keep their dtype, on every supported transformers."""

    def __init__(self, config, max_cache_len: int) -> None:
        super().__init__(config=config, max_cache_len=max_cache_len)
        for layer in self.layers:
            if type(layer) is StaticLayer:
                layer.__class__ = _SplitDtypeLayer


@dataclass
class DecodeStats:
    """What the decode steps of one loop did since the last ``take``."""

    captured_steps: int = 0  # steps replayed from a captured graph
    eager_steps: int = 0  # steps run eagerly (the eager mode, or a fallback)
    compiled_shapes: int = 0  # new (rows, length) shapes the captured step was compiled for
    fallbacks: int = 0  # shapes or loops that fell back to eager decoding
    restarts: int = 0  # rollouts started again from their prefill after a failure mid-step

    def take(self) -> DecodeStats:
        """The counts so far; the counters start again from zero."""
        taken = DecodeStats(**{f.name: getattr(self, f.name) for f in fields(self)})
        for f in fields(self):
            setattr(self, f.name, 0)
        return taken


class _ShapeBuffers:
    """The static KV cache, attention mask and positions of one rollout shape, reused by every rollout of it.

    The cache's keys and values take the dtypes of the prompts' (under autocast they differ: the keys
    leave the rotary embedding in float32, the values the projection in bfloat16).
    """

    def __init__(self, llm: nn.Module, rows: int, capacity: int, steps: int, prompts: StaticCache) -> None:
        self.cache = DecodeCache(llm.config, capacity + steps)
        for layer, prompt in zip(self.cache.layers, prompts.layers, strict=True):
            shape = (rows, -1, -1, -1)  # views: only their shapes and dtypes are read
            layer.lazy_initialization(prompt.keys[:1].expand(shape), prompt.values[:1].expand(shape))
        device = prompts.layers[0].keys.device
        self.mask = torch.zeros(rows, capacity + steps, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, 1, dtype=torch.long, device=device)
        for tensor in (self.mask, self.positions):  # filled in place: the captured graph reads these addresses
            torch._dynamo.mark_static_address(tensor)

    def fill(self, prompts: StaticCache, rows: torch.Tensor, mask: torch.Tensor, capacity: int) -> None:
        """Start a rollout: each row's prompt keys and values, mask and next position; the rest zero."""
        self.cache.reset()
        for layer, prompt in zip(self.cache.layers, prompts.layers, strict=True):
            layer.keys[:, :, :capacity].copy_(prompt.keys[:, :, :capacity].index_select(0, rows))
            layer.values[:, :, :capacity].copy_(prompt.values[:, :, :capacity].index_select(0, rows))
            layer.cumulative_length.fill_(capacity)
        self.mask.zero_()
        self.mask[:, :capacity] = mask[rows]
        self.positions.copy_(positions_from_mask(mask)[rows, -1:])


class DecodeLoop:
    """Prefill once per distinct prompt, then decode all rows together, one token per step.

    Args:
        llm: the decoder stack (``inputs_embeds`` in, ``last_hidden_state`` out, a static cache).
        logits_fn: last hidden states ``[rows, D]`` -> the logits tokens are sampled from (head, CFG
            mix, temperature); part of the step that is captured.
        mode: ``eager`` or ``captured`` (see ``resolve_mode``).
        name: the task (``image``, ``text``): names this loop's compiled step.
        compiler: compiles the step for ``captured`` (default: ``torch.compile`` with CUDA graphs and static
            shapes; tests pass a counting backend to run the captured path on a CPU).
    """

    def __init__(self, llm: nn.Module, logits_fn: Callable[[torch.Tensor], torch.Tensor], mode: str,
                 name: str = "decode", compiler: Callable[[Callable], Callable] | None = None) -> None:
        self.llm, self.logits_fn, self.mode, self.name = llm, logits_fn, mode, name
        self.keyword = cache_keyword(llm)
        self.capacity = 0  # prompt positions reserved; grows a bucket at a time
        self.stats = DecodeStats()
        self._shapes: dict[tuple, _ShapeBuffers] = {}
        self._eager_shapes: set[tuple] = set()  # past the recompile budget: these run eagerly
        self._compiled_keys: set[tuple] = set()  # shapes the captured step has run for
        self._active: _ShapeBuffers | None = None
        step = types.MethodType(_own_code(DecodeLoop._forward, f"decode_step_{name}"), self)
        compiler = compiler or (lambda fn: torch.compile(fn, mode="reduce-overhead", fullgraph=False, dynamic=False))
        self._compiled = compiler(step)

    def reserve(self, length: int) -> int:
        """The prompt positions a rollout of prompts of ``length`` tokens decodes with.

        Captured: the capacity, grown a bucket at a time where ``length`` needs more. Eager decoding compiles
        nothing, so it reserves ``length`` itself and keeps no buffers between rollouts.
        """
        if self.mode != "captured":
            return length
        self.capacity = prompt_capacity(length, self.capacity)
        return self.capacity

    @torch.no_grad()
    def run(self, embeds: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, steps: int, next_fn: NextFn,
            check_every: int = 8) -> None:
        """Decode ``steps`` tokens for every row.

        Args:
            embeds: ``[P, L, D]`` embeddings of the distinct prompts, left-padded.
            mask: ``[P, L]`` their attention mask.
            rows: ``[R]`` the prompt each decoded row continues (e.g. each prompt G times).
            steps: tokens to decode.
            next_fn: ``(logits, index)`` of step ``index`` -> embeddings of the next inputs ``[R, 1, D]`` and
                a boolean ``[R]`` that is true for finished rows (None when rows never finish early); it
                samples and records the tokens itself, by index, so a restarted rollout overwrites them.
            check_every: finishing is checked every this many steps only: each check waits for the device.
        """
        pad = self.reserve(mask.shape[1]) - mask.shape[1]
        embeds, mask = F.pad(embeds, (0, 0, pad, 0)), F.pad(mask, (pad, 0))  # left: the prompts stay at the end
        while True:
            try:
                return self._decode(embeds, mask, rows, steps, next_fn, check_every)
            except _Restart:
                self.stats.restarts += 1

    def _decode(self, embeds: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, steps: int, next_fn: NextFn,
                check_every: int) -> None:
        capacity = mask.shape[1]
        prompts, hidden = self._prefill(embeds, mask, steps)
        first = prompts.layers[0]
        key = (len(rows), capacity, steps, first.keys.dtype, first.values.dtype)
        buffers = self._shapes.get(key) or _ShapeBuffers(self.llm, len(rows), capacity, steps, prompts)
        if self.mode == "captured":  # kept for the next rollout of this shape: the graph reads its addresses
            self._shapes[key] = buffers
        self._active = buffers
        buffers.fill(prompts, rows, mask, capacity)
        del prompts
        logits = self.logits_fn(hidden[rows])
        try:
            for index in range(steps):
                next_embeds, done = next_fn(logits, index)
                if index == steps - 1 or (done is not None and index % check_every == 0 and bool(done.all())):
                    break
                buffers.mask[:, capacity + index] = 1
                buffers.positions += 1
                logits = self._step(key, next_embeds)
        finally:
            self._active = None  # nothing of the rollout is held through the update but the reused buffers

    def _prefill(self, embeds: torch.Tensor, mask: torch.Tensor, steps: int) -> tuple[StaticCache, torch.Tensor]:
        """The distinct prompts run once, into a cache of their own; their last hidden states ``[P, D]``.

        That cache has the decode cache's length: the prefill then reads the keys through the same
        static-cache attention path as the decode steps and the training forward agree with (in bfloat16
        another path rounds differently).
        """
        prompts = DecodeCache(self.llm.config, mask.shape[1] + steps)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask),
                       use_cache=True, **{self.keyword: prompts})
        return prompts, out.last_hidden_state[:, -1]

    def _forward(self, next_embeds: torch.Tensor) -> torch.Tensor:
        """One token for every row: LLM forward with the static cache, then the logits. Static shapes."""
        buffers = self._active
        out = self.llm(inputs_embeds=next_embeds, attention_mask=buffers.mask, position_ids=buffers.positions,
                       use_cache=True, **{self.keyword: buffers.cache})
        return self.logits_fn(out.last_hidden_state[:, -1])

    def _step(self, key: tuple, next_embeds: torch.Tensor) -> torch.Tensor:
        """One step, captured where the mode and the shape allow, else eager (counted)."""
        if self.mode != "captured" or key in self._eager_shapes:
            self.stats.eager_steps += 1
            return self._forward(next_embeds)
        try:
            with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                logits = self._compiled(next_embeds).clone()  # the graph's output buffer is reused by the next replay
        except Exception as err:  # noqa: BLE001 - every failure falls back, counted and said
            self.stats.fallbacks += 1
            if type(err).__name__ == "FailOnRecompileLimitHit":  # the compile refused: nothing ran
                self._eager_shapes.add(key)
                warnings.warn(f"decode ({self.name}): rollout shape {key[:3]} is past torch's recompile limit "
                              f"({torch._dynamo.config.recompile_limit}); it decodes eagerly", stacklevel=2)
                self.stats.eager_steps += 1
                return self._forward(next_embeds)
            self.mode = "eager"
            warnings.warn(f"decode ({self.name}): the captured step failed ({type(err).__name__}: {err}); this "
                          "rollout starts again from its prefill, and the loop decodes eagerly from now on",
                          stacklevel=2)
            raise _Restart from err
        if key not in self._compiled_keys:
            self.stats.compiled_shapes += 1
            self._compiled_keys.add(key)
        self.stats.captured_steps += 1
        return logits


class _Restart(Exception):
    """A captured step failed part-way: the rollout starts again from its prefill, eagerly."""
