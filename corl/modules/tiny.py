"""The embedded default: a tiny, randomly initialised Janus built from transformers' own classes.

It has the real architecture (SigLIP-style vision tower, aligners, VQ-VAE, generation head, Llama
LLM) at toy sizes, plus a byte-level BPE tokenizer trained here on the procedural data's vocabulary
with Janus's special tokens and chat template, so a stage-1 step runs in seconds on a CPU and no
file is downloaded.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessor,
    JanusProcessor,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from corl.data.procedural import vocabulary_corpus

SPECIAL_TOKENS = {
    "bos_token": "<｜begin▁of▁sentence｜>",
    "eos_token": "<｜end▁of▁sentence｜>",
    "pad_token": "<｜▁pad▁｜>",
}
IMAGE_TOKENS = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
ROLE_TOKENS = ["<|User|>", "<|Assistant|>"]

# Janus-Pro's conversation layout ("<|User|>: ...\n\n<|Assistant|>:"), images as a placeholder that
# the processor expands into <begin_of_image> + N image tokens + <end_of_image>.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|User|>: {% elif message['role'] == 'assistant' %}<|Assistant|>: "
    "{% else %}{{ message['role'] | capitalize }}: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image_placeholder>\n{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the procedural vocabulary; deterministic, so runs can be reloaded."""
    special = [*SPECIAL_TOKENS.values(), *IMAGE_TOKENS.values(), *ROLE_TOKENS]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(vocabulary_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **SPECIAL_TOKENS,
        extra_special_tokens={**IMAGE_TOKENS},
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    return tokenizer


def build_tiny_janus(
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    codebook_size: int = 256,
    seed: int = 0,
) -> tuple[JanusForConditionalGeneration, JanusProcessor]:
    """Tiny Janus + processor. ``(image_size / patch_size)**2`` image tokens per image.

    The VQ decoder upsamples the token grid by 2 per extra channel level, so the number of levels is
    chosen to land exactly on ``image_size`` pixels, as Janus-Pro's 24 x 24 grid lands on 384.
    """
    tokenizer = build_tiny_tokenizer()
    grid = image_size // patch_size
    levels = (image_size // grid).bit_length()  # 2 ** (levels - 1) == image_size / grid
    if grid * 2 ** (levels - 1) != image_size:
        raise ValueError(f"image_size / (image_size / patch_size) must be a power of two, got {image_size}/{grid}")
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    vision_config = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
        "projection_dim": hidden_size,
        "num_image_tokens": grid * grid,
    }
    vq_config = {
        "embed_dim": 8,
        "num_embeddings": codebook_size,
        "latent_channels": 32,  # GroupNorm in the VQ blocks needs multiples of 32
        "base_channels": 32,
        "channel_multiplier": [1] * levels,
        "num_res_blocks": 1,
        "projection_dim": hidden_size,
        "image_token_embed_dim": hidden_size,
    }
    config = JanusConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"]),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(config)
        # At the default init (std 0.02) the frozen generation head maps any hidden state to nearly
        # uniform logits, so no change of the LLM could steer image sampling. Fan-in scaling gives
        # logits of order one, as a trained head has.
        for layer in (model.model.generation_head.proj_out, model.model.generation_head.vision_head):
            torch.nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
    # What Janus-Pro's generation_config carries, so model.generate(generation_mode="image") works too.
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    boi = tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["boi_token"])
    model.generation_config.generation_kwargs = {"boi_token_id": boi}
    image_processor = JanusImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )
    processor = JanusProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE, num_image_tokens=grid * grid)
    return model, processor
