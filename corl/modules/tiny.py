"""The embedded default: a tiny, randomly initialised Janus built from transformers' own classes.

It has the real architecture (SigLIP-style vision tower, aligners, VQ-VAE, generation head, Llama
LLM) at toy sizes, plus a byte-level BPE tokenizer trained here on the procedural data's vocabulary.
Its processor has Janus-Pro's layout: the special tokens, a tokenizer that adds BOS itself, the chat
template of transformers' conversion and the default system prompt. So every test exercises the real
prompts, a stage-1 step runs in seconds on a CPU, and no file is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessor,
    JanusProcessor,
    LlamaConfig,
    PreTrainedTokenizerFast,
)
from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT

from corl.data.procedural import vocabulary_corpus

SPECIAL_TOKENS = {
    "bos_token": "<｜begin▁of▁sentence｜>",
    "eos_token": "<｜end▁of▁sentence｜>",
    "pad_token": "<｜▁pad▁｜>",
}
IMAGE_TOKENS = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
# Janus-Pro's additional special tokens (its special_tokens_map.json), the role tags among them.
ADDITIONAL_TOKENS = [
    "<patch_placeholder>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>", "<|User|>", "<|Assistant|>",
]

# The chat template that transformers' Janus-Pro conversion (convert_janus_weights_to_hf.py) writes
# into the processor, character for character: no BOS (the tokenizer adds it), the first text part
# left-stripped and the last right-stripped, "\n\n" after a user turn, EOS after an assistant turn.
CHAT_TEMPLATE = (
    "{%set seps=['\n\n','<\uff5cend\u2581of\u2581sentence\uff5c>']%}"
    "{%set i=0%}"
    "{%for message in messages%}"
    "{%if message['role']|lower=='user'%}"
    "<|User|>: "
    "{%elif message['role']|lower=='assistant'%}"
    "<|Assistant|>:{%if not (loop.last and not add_generation_prompt and message['content'][0]['type']=='text' and "
    "message['content'][0]['text']=='')%} {%endif%}"
    "{%else%}"
    "{{message['role'].capitalize()}}: "
    "{%endif%}"
    "{%for content in message['content']%}"
    "{%if content['type']=='image'%}"
    "{%if not loop.first%}{{'\n'}}{%endif%}"
    "<image_placeholder>"
    "{%if not loop.last%}{{'\n'}}{%endif%}"
    "{%elif content['type']=='text'%}"
    "{%set text=content['text']%}"
    "{%if loop.first%}{%set text=text.lstrip()%}{%endif%}"
    "{%if loop.last%}{%set text=text.rstrip()%}{%endif%}"
    "{%if not loop.first and message['content'][loop.index0-1]['type']=='text'%}"
    "{{' '+text}}"
    "{%else%}"
    "{{text}}"
    "{%endif%}"
    "{%endif%}"
    "{%endfor%}"
    "{%if not loop.last or add_generation_prompt%}"
    "{%if message['role']|lower=='user'%}"
    "{{seps[0]}}"
    "{%else%}"
    "{{seps[1]}}"
    "{%endif%}"
    "{%endif%}"
    "{%endfor%}"
    "{%if add_generation_prompt%}<|Assistant|>:{%endif%}"
)


def build_tiny_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the procedural vocabulary; deterministic, so runs can be reloaded.

    ``vocab_size`` is an upper bound: the corpus runs out of merges first (about 560 tokens), when
    every word of it is one token.
    """
    special = [*SPECIAL_TOKENS.values(), *IMAGE_TOKENS.values(), *ADDITIONAL_TOKENS]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([DEFAULT_SYSTEM_PROMPT, *vocabulary_corpus()], trainer=trainer)
    add_bos(backend, SPECIAL_TOKENS["bos_token"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **SPECIAL_TOKENS,
        extra_special_tokens={**IMAGE_TOKENS},
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    return tokenizer


def add_bos(backend: Tokenizer, bos: str) -> None:
    """Put ``bos`` in front of every encoded text, as Janus-Pro's tokenizer does (its chat template has none).

    That is what DeepSeek's ``LlamaTokenizerFast`` does with ``add_bos_token`` on, whatever its file says.
    """
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
    )


def set_generation_tokens(model: JanusForConditionalGeneration, tokenizer) -> None:
    """What Janus-Pro's generation_config carries, so ``model.generate(generation_mode="image")`` works too."""
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    boi = tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["boi_token"])
    model.generation_config.generation_kwargs = {"boi_token_id": boi}


@dataclass(frozen=True)
class JanusSizes:
    """Sizes of a randomly initialised Janus. The defaults are the embedded tiny model."""

    image_size: int = 64
    patch_size: int = 8  # (image_size / patch_size) ** 2 image tokens per image
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int | None = None  # None: the tokenizer's size
    vision_hidden_size: int = 32
    vision_layers: int = 1
    vision_heads: int = 2
    codebook_size: int = 256
    vq_base_channels: int = 32  # GroupNorm in the VQ blocks needs multiples of 32
    vq_latent_channels: int = 32
    vq_channel_multiplier: tuple[int, ...] | None = None  # None: all 1, as many levels as the grid needs
    vq_res_blocks: int = 1
    tie_word_embeddings: bool = False  # untied, as in Janus-Pro (and FSDP shards the head on its own)


# Janus-Pro-1B's architecture (deepseek-community/Janus-Pro-1B): for GPU checks and benchmarks with
# random weights, no download. Only the tokenizer is the tiny one (its ids are a subset of the vocab).
JANUS_PRO_1B = JanusSizes(
    image_size=384, patch_size=16, hidden_size=2048, intermediate_size=5632, num_layers=24, num_heads=16,
    num_kv_heads=16, vocab_size=102400, vision_hidden_size=1024, vision_layers=24, vision_heads=16,
    codebook_size=16384, vq_base_channels=128, vq_latent_channels=256, vq_channel_multiplier=(1, 1, 2, 2, 4),
    vq_res_blocks=2, tie_word_embeddings=False,
)


def build_tiny_janus(
    sizes: JanusSizes | None = None, seed: int = 0, **overrides: int
) -> tuple[JanusForConditionalGeneration, JanusProcessor]:
    """A randomly initialised Janus + processor (``overrides`` replace fields of ``sizes``).

    The VQ decoder upsamples the token grid by 2 per extra channel level, so the number of levels must
    land exactly on ``image_size`` pixels, as Janus-Pro's 24 x 24 grid lands on 384.
    """
    sizes = replace(sizes or JanusSizes(), **overrides)
    tokenizer = build_tiny_tokenizer()
    grid = sizes.image_size // sizes.patch_size
    levels = (sizes.image_size // grid).bit_length()  # 2 ** (levels - 1) == image_size / grid
    multiplier = list(sizes.vq_channel_multiplier or [1] * levels)
    if grid * 2 ** (len(multiplier) - 1) != sizes.image_size:
        raise ValueError(f"a {grid}x{grid} token grid does not upsample to {sizes.image_size} px in {multiplier}")
    text_config = LlamaConfig(
        vocab_size=sizes.vocab_size or len(tokenizer),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_layers,
        num_attention_heads=sizes.num_heads,
        num_key_value_heads=sizes.num_kv_heads,
        max_position_embeddings=16384,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=sizes.tie_word_embeddings,
    )
    vision_config = {
        "hidden_size": sizes.vision_hidden_size,
        "num_hidden_layers": sizes.vision_layers,
        "num_attention_heads": sizes.vision_heads,
        "image_size": sizes.image_size,
        "patch_size": sizes.patch_size,
        "projection_dim": sizes.hidden_size,
        "num_image_tokens": grid * grid,
    }
    vq_config = {
        "embed_dim": 8,
        "num_embeddings": sizes.codebook_size,
        "latent_channels": sizes.vq_latent_channels,
        "base_channels": sizes.vq_base_channels,
        "channel_multiplier": multiplier,
        "num_res_blocks": sizes.vq_res_blocks,
        "projection_dim": sizes.hidden_size,
        "image_token_embed_dim": sizes.hidden_size,
    }
    config = JanusConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"]),
        tie_word_embeddings=sizes.tie_word_embeddings,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(config)
        # At the default init (std 0.02) the frozen generation head maps any hidden state to nearly
        # uniform logits, so no change of the LLM could steer image sampling. Fan-in scaling gives
        # logits of order one, as a trained head has.
        for layer in (model.model.generation_head.proj_out, model.model.generation_head.vision_head):
            torch.nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
    set_generation_tokens(model, tokenizer)
    return model, build_tiny_processor(sizes, tokenizer)


def build_tiny_processor(sizes: JanusSizes | None = None, tokenizer: PreTrainedTokenizerFast | None = None,
                         ) -> JanusProcessor:
    """The processor of a tiny Janus of ``sizes``: Janus-Pro's layout, the tiny tokenizer, no weights needed."""
    sizes = sizes or JanusSizes()
    image_processor = JanusImageProcessor(
        size={"height": sizes.image_size, "width": sizes.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )
    return JanusProcessor(
        image_processor, tokenizer or build_tiny_tokenizer(), chat_template=CHAT_TEMPLATE,
        use_default_system_prompt=True, num_image_tokens=(sizes.image_size // sizes.patch_size) ** 2,
    )
