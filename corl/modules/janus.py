"""Janus plumbing: the one place that reaches into transformers' ``JanusForConditionalGeneration``.

Sampling, training log-probs, prompts and the rewards' image reading ask this object for the LLM, the
heads, the towers and the VQ codec, so a change in transformers' Janus classes is mended here alone.
It holds references, not modules of its own: the policy's state dict stays the model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from corl.data.images import photo_pixels
from corl.modules.decoding import positions_from_mask


class Janus:
    """A Janus model and its processor, seen through the few operations RL needs."""

    def __init__(self, model: nn.Module, processor) -> None:
        self.model, self.processor, self.tokenizer = model, processor, processor.tokenizer

    @property
    def llm(self) -> nn.Module:
        """The language model (decoder stack with its token embedding): what RL trains."""
        return self.model.model.language_model

    @property
    def lm_head(self) -> nn.Module:
        """The text head (tied to the token embedding in some checkpoints)."""
        return self.model.lm_head

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return self.lm_head.weight.device

    @property
    def config(self):
        """The model's ``JanusConfig``."""
        return self.model.config

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per generated image, from the model config (576 for Janus-Pro)."""
        return self.config.vision_config.num_image_tokens

    @property
    def image_size(self) -> int:
        """The side of the images the towers read and the VQ writes."""
        return self.config.vision_config.image_size

    @property
    def vqmodel(self) -> nn.Module:
        """The VQ autoencoder: image tokens to pixels and back (the warm start trains it on scenes)."""
        return self.model.model.vqmodel

    def trained_modules(self) -> nn.ModuleDict:
        """The LLM and its text head: what RL changes (or what its adapters sit in)."""
        return nn.ModuleDict({"llm": self.llm, "lm_head": self.lm_head})

    def freeze(self) -> None:
        """No weight learns (the policy then opens what it trains)."""
        self.model.requires_grad_(False)

    def train_all_but_codebook(self) -> None:
        """Every weight learns but the VQ model's: the image tokens' codebook stays fixed (SFT's towers)."""
        self.model.requires_grad_(True)
        self.vqmodel.requires_grad_(False)

    def vq_memory_format(self, layout: torch.memory_format = torch.channels_last) -> None:
        """The VQ's convolutions on ``layout`` tensors.

        Channels-last gives the same numbers (to float rounding), and on the CPU its decode, the largest
        cost of an image rollout of the tiny model, takes 0.6x the time (``benchmarks/update.py``).
        """
        self.vqmodel.to(memory_format=layout)

    # --------------------------------------------------------------------------- reading images
    @torch.no_grad()
    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        """The processor's pixels ``[B, 3, H, W]`` in [-1, 1] for real images, on the device."""
        pixels = self.processor.image_processor([im.convert("RGB") for im in images], return_tensors="pt")
        return pixels["pixel_values"].to(self.device).float()

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Aligned vision-tower features ``[B, N_img, D]`` of images ``[B, 3, H, W]`` in [-1, 1]."""
        size = self.image_size
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels.float(), size=(size, size), mode="bilinear", align_corners=False)
        return self.model.model.get_image_features(pixels.to(self.model.dtype)).pooler_output

    def embed_prompt(self, ids: torch.Tensor, image_embeds: torch.Tensor | None,
                     llm: nn.Module | None = None) -> torch.Tensor:
        """Token embeddings ``[R, L, D]`` with the real images' features at the image placeholders."""
        embeds = (llm if llm is not None else self.llm).get_input_embeddings()(ids)
        if image_embeds is not None:
            slots = self.image_token_mask(ids).unsqueeze(-1)
            embeds = embeds.masked_scatter(slots, image_embeds.to(embeds.dtype))
        return embeds

    def image_token_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """``[R, L]`` bool: the image placeholders of prompt ids."""
        return ids == self.config.image_token_id

    # ----------------------------------------------------------------------------- image tokens
    def embed_image_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generation embeddings of image tokens, in the token embedding's dtype.

        The generation aligner is an MLP: under autocast it returns bf16 while token embeddings stay in
        the parameter dtype; one dtype keeps the KV cache and the concatenated inputs consistent.
        """
        embeds = self.model.prepare_embeddings_for_image_generation(tokens)
        return embeds.to(self.llm.get_input_embeddings().weight.dtype)

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The generation head's float32 logits over the image codebook."""
        return self.model.model.generation_head(hidden).float()

    def generation_modules(self) -> list[nn.Module]:
        """The modules an image decode step reads besides the LLM (the generation head and aligner)."""
        return [self.model.model.generation_head, self.model.model.generation_aligner]

    @torch.no_grad()
    def encode_images(self, photos: list[Image.Image]) -> torch.Tensor:
        """VQ tokens ``[B, N]`` of real photos, centre-cropped to the generation resolution (SFT targets)."""
        pixels = torch.stack([photo_pixels(photo, self.image_size) for photo in photos])
        pixels = pixels.to(self.device, self.model.dtype)
        return self.vqmodel.encode(pixels).image_tokens.view(len(photos), -1)

    @torch.no_grad()
    def decode_images(self, tokens: torch.Tensor) -> torch.Tensor:
        """VQ-decode image tokens ``[R, N]`` to pixels ``[R, 3, H, W]`` in [-1, 1], on the device."""
        return self.vqmodel.decode(tokens).float().clamp(-1.0, 1.0)

    # -------------------------------------------------------------------------------- forwards
    def forward(self, embeds: torch.Tensor, mask: torch.Tensor, llm: nn.Module | None = None) -> torch.Tensor:
        """Last hidden states of a full forward pass; no KV cache (activation checkpointing would fill it twice)."""
        llm = llm if llm is not None else self.llm
        out = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False)
        return out.last_hidden_state
