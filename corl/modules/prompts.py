"""Prompts as Janus-Pro's ``JanusProcessor`` builds them, with the system prompt a setting, images expanded here.

The processor turns a chat text into ids in one of two modes: understanding (``text``) puts its
default system prompt in front when ``use_default_system_prompt`` is set (Janus-Pro's is), and
generation (``image``) appends ``<begin_of_image>``; its tokenizer adds BOS itself. The CoRL authors
trained without that system prompt (their trainer sets it to ""), so their understanding prompt is
``<bos><|User|>: <begin_of_image>…<end_of_image>`` + newline + question + blank line + ``<|Assistant|>:``.
``system_prompt`` chooses ``none`` (theirs), ``default`` (the processor's, what evaluation suites use) or
a text of one's own. corl builds the same text but expands each image placeholder into
``<begin_of_image>`` + N image tokens + ``<end_of_image>`` itself, because the processor would want PIL
images while corl's pixels stay on the device. It tokenises with character offsets, so the tokens of one
part of a prompt can be found after the chat template has stripped and framed it
(``tests/modules/test_prompts.py`` compares the ids with the processor's, token for token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT

from corl.data.templates import Instruction, instruction_templates, question_prompt

Mode = Literal["text", "image"]
_SENTINEL = "\x00"  # stands in for a text part to find where the template puts it; no template strips it


@dataclass
class PromptBatch:
    """Tokenised prompts, left-padded."""

    ids: torch.Tensor  # [B, L] token ids
    mask: torch.Tensor  # [B, L] 1 on real tokens
    offsets: torch.Tensor  # [B, L, 2] each token's character range in its text; (0, 0) for BOS and padding
    texts: list[str]  # [B] the texts that were tokenised (system prompt and expanded images included)

    def to(self, device: torch.device) -> PromptBatch:
        """The same prompts with their tensors on ``device``."""
        return PromptBatch(self.ids.to(device), self.mask.to(device), self.offsets.to(device), self.texts)


class JanusPrompts:
    """Chat texts and ids for Janus prompts, as the processor would make them.

    Args:
        processor: a ``JanusProcessor`` (its chat template, tokenizer, image tokens and system-prompt flag).
        num_image_tokens: image tokens per image placeholder (576 for Janus-Pro).
        system_prompt: in front of understanding prompts: ``none`` (the CoRL authors' training layout),
            ``default`` (the processor's: Janus-Pro's default system prompt when its
            ``use_default_system_prompt`` is set), or a text of one's own, followed by a blank line as
            Janus separates turns. Generation prompts never have one.
        instruction: the answer-format instruction around a bare question (``corl.data.templates``):
            ``authors``, ``poster``, ``none`` or ``{MC: template, OE: template}``; a question that asks
            for ``<answer>`` tags itself is used as it is.
    """

    def __init__(self, processor, num_image_tokens: int, system_prompt: str = "none",
                 instruction: Instruction = "authors") -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        image_tokens = processor.image_token * num_image_tokens
        self.image_span = processor.image_start_token + image_tokens + processor.image_end_token
        self.system = system_text(system_prompt, processor)
        instruction_templates(instruction)  # a bad setting fails here, not at the first rollout
        self.instruction = instruction

    def question(self, question: str, qa_type: str) -> list[dict]:
        """The user turn of an understanding prompt: the image, then the question with its instruction."""
        return [{"type": "image"}, {"type": "text", "text": question_prompt(question, qa_type, self.instruction)}]

    def text(self, content: list[dict], mode: Mode) -> str:
        """The text the processor tokenises for one user turn ``content``, images expanded."""
        conversation = [{"role": "user", "content": content}]
        chat = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        chat = chat.replace(self.processor.image_token, self.image_span)
        if mode == "image":
            return chat + self.processor.image_start_token
        if mode != "text":
            raise ValueError(f"prompt mode must be 'text' or 'image', got {mode!r}")
        return self.system + chat

    def encode(self, contents: list[list[dict]], mode: Mode) -> PromptBatch:
        """Left-padded ids of several user turns; the tokenizer adds BOS as it does for the processor."""
        texts = [self.text(content, mode) for content in contents]
        enc = self.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt", return_offsets_mapping=True)
        return PromptBatch(enc["input_ids"], enc["attention_mask"], enc["offset_mapping"], texts)

    def generation(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conditional ids, mask and the Janus unconditional ids (only BOS and BOI kept) for T2I.

        The conditional prompt is the processor's image-mode prompt: no system prompt, ending in
        ``<begin_of_image>``.
        """
        enc = self.encode([[{"type": "text", "text": p}] for p in prompts], "image")
        ids, mask = enc.ids, enc.mask
        boi = self.tokenizer.convert_tokens_to_ids(self.processor.image_start_token)
        keep = (ids == self.tokenizer.bos_token_id) | (ids == boi)
        uncond = torch.where(keep | (mask == 0), ids, torch.full_like(ids, self.tokenizer.pad_token_id))
        return ids, mask, uncond

    def answers(self, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids ``[B, T]`` of given answers, each ending in EOS, and their mask (SFT targets)."""
        eos = self.tokenizer.eos_token_id
        ids = [self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos] for answer in answers]
        width = max(len(row) for row in ids)
        padded = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(ids), width, dtype=torch.long)
        for row, tokens in enumerate(ids):
            padded[row, : len(tokens)], mask[row, : len(tokens)] = torch.tensor(tokens), 1
        return padded, mask

    def part_span(self, content: list[dict], index: int, mode: Mode) -> tuple[int, int]:
        """Character range of text part ``content[index]`` inside ``self.text(content, mode)``.

        The template may strip the part's ends; the range covers what it kept. A part the template
        changes otherwise cannot be located and is an error that names it, never a wrong range.
        """
        part = content[index]["text"]
        full = self.text(content, mode)
        marked = self.text([*content[:index], {"type": "text", "text": _SENTINEL}, *content[index + 1 :]], mode)
        start = marked.find(_SENTINEL)
        end = start + len(full) - len(marked) + 1
        located = (
            start >= 0 and end >= start and full[:start] == marked[:start] and full[end:] == marked[start + 1 :]
            and full[start:end].strip() == part.strip()
        )
        if not located:
            raise ValueError(f"the prompt {part!r} cannot be located in its chat text {full!r}")
        return start, end


def system_text(system_prompt: str, processor) -> str:
    """The text in front of an understanding prompt for the ``system_prompt`` setting."""
    if not isinstance(system_prompt, str):
        raise ValueError(f"system_prompt must be 'none', 'default' or a text, got {system_prompt!r}")
    if system_prompt in ("none", ""):
        return ""
    if system_prompt == "default":
        return DEFAULT_SYSTEM_PROMPT if getattr(processor, "use_default_system_prompt", False) else ""
    return system_prompt.rstrip() + "\n\n"


def span_mask(batch: PromptBatch, spans: list[tuple[int, int]]) -> torch.Tensor:
    """``[B, L]`` true on the tokens that carry characters of each row's span ``(start, end)``."""
    bounds = torch.tensor(spans, dtype=batch.offsets.dtype, device=batch.offsets.device).reshape(-1, 2)
    first, last = batch.offsets[..., 0], batch.offsets[..., 1]  # [B, L]
    overlaps = (last > bounds[:, :1]) & (first < bounds[:, 1:])
    return overlaps & (last > first) & batch.mask.bool()
