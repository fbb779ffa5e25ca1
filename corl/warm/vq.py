"""Pre-training of the tiny Janus's VQ autoencoder on procedural scenes.

A randomly initialised ``JanusVQVAE`` decodes every token to noise, so an image reward that reads
decoded pixels cannot tell a good sample from a bad one. A minute of autoencoder training on the
procedural scenes makes ``decode(encode(image))`` a recognisable copy of the image.

Two details make the training match how the RL code uses the model:

- ``JanusVQVAE.decode`` looks tokens up with ``quantize.get_codebook_entry``, which l2-normalises the
  code, while ``quantize.forward`` compares un-normalised vectors. Training therefore quantises on the
  unit sphere (cosine nearest code, as in LlamaGen / ViT-VQGAN, which Janus's VQ comes from), so that
  the decoder sees in training exactly the vectors ``decode`` gives it, and finally stores the codebook
  normalised, so that ``encode``'s Euclidean nearest code is the same as the cosine one.
- ``decode`` has no gradient path to the encoder, so the training forward is written out here:
  encoder -> quant_conv -> quantise (straight-through) -> post_quant_conv -> decoder.

What a minute on two CPU cores buys depends on the sizes and the loss more than on the steps: every
norm in the VQ is ``GroupNorm(32)``, which at 32 channels is one channel per group, i.e. instance norm,
and removes each channel's per-image mean and scale, so absolute colours are hard to get through; at 64
channels (two per group) the same budget reaches a several times lower error. The loss weights the
scenes' objects (``reconstruction_loss``), or their colours come through last. And the codebook is
small (256) and never re-seeded: what the LLM learns to generate are the codes, and a uniform white
patch that the encoder maps to one of a few codes is learnable where one of hundreds is noise.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from corl.data.procedural import make_scene
from corl.data.schema import Example


def scene_pixels(seed: int, indices: range | list[int], image_size: int) -> torch.Tensor:
    """The real images of procedural scenes as pixels ``[B, 3, H, W]`` in [-1, 1], the VQ's input range."""
    return pixels_of([make_scene(seed, i, image_size) for i in indices])


def pixels_of(scenes: list[Example]) -> torch.Tensor:
    """The real images of drawn scenes as pixels ``[B, 3, H, W]`` in [-1, 1]."""
    pixels = torch.from_numpy(np.stack([np.asarray(s.real_image, dtype=np.float32) for s in scenes]))  # [B, H, W, 3]
    return (pixels / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()  # [B, 3, H, W]


def quantize_on_sphere(
    codebook: torch.Tensor, latents: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest-code quantisation of l2-normalised latents against l2-normalised codes.

    Normalising both sides is what ``JanusVQVAE.decode`` assumes (it normalises looked-up codes), and
    codes on the sphere cannot drift away from the encoder outputs, a main cause of dead codes.

    Args:
        codebook: the raw code vectors ``[K, D]`` (the quantizer's embedding weight).
        latents: quant_conv outputs ``[B, D, h, w]``.
        beta: weight of the commitment term (pulls latents to their codes; the codebook term pulls codes).

    Returns:
        The straight-through quantised latents ``[B, D, h, w]``, the codebook + commitment loss (scalar)
        and the code indices ``[B * h * w]`` (row-major per image, the order ``encode`` uses).
    """
    z = F.normalize(latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]), dim=-1)  # [B*h*w, D]
    codes = F.normalize(codebook, dim=-1)  # [K, D]
    indices = (z @ codes.t()).argmax(dim=-1)  # nearest by cosine == nearest on the sphere
    quantized = codes[indices]  # [B*h*w, D]
    loss = F.mse_loss(quantized, z.detach()) + beta * F.mse_loss(z, quantized.detach())
    quantized = z + (quantized - z).detach()  # straight-through: the decoder's gradient reaches the encoder
    b, d, h, w = latents.shape
    return quantized.view(b, h, w, d).permute(0, 3, 1, 2), loss, indices


def fan_in_init(vqmodel: nn.Module) -> None:
    """Redraws every convolution of the VQ with torch's default fan-in (Kaiming-uniform) init.

    transformers initialises them N(0, 0.02), a tenth of the fan-in scale of a 3x3 conv on 32 channels,
    so each residual block starts as near identity and the output conv near zero: the VQ then spends
    most of a one-minute training just growing its weights.
    """
    for module in vqmodel.modules():
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()


@torch.no_grad()
def ema_codebook_update(codebook: torch.Tensor, latents: torch.Tensor, indices: torch.Tensor, decay: float) -> None:
    """Moves every code picked this step towards the mean of its latents, back onto the unit sphere.

    A step of online spherical k-means (the EMA codebook of VQ-VAE-2 without the count smoothing): at
    the small learning rate the decoder needs, a gradient-trained codebook moves a code ~lr per step
    and stays where it was drawn, so codes would not follow the encoder and colours merge.

    Args:
        codebook: the raw code vectors ``[K, D]``, unit rows, changed in place.
        latents: this step's quant_conv outputs ``[N, D]``.
        indices: the code picked for each latent ``[N]``.
        decay: how much of the old code is kept per step.
    """
    z = F.normalize(latents, dim=-1)  # [N, D]
    sums = torch.zeros_like(codebook).index_add_(0, indices, z)  # [K, D]
    counts = torch.bincount(indices, minlength=len(codebook))  # [K]
    used = counts > 0
    means = sums[used] / counts[used, None]
    codebook[used] = F.normalize(decay * codebook[used] + (1 - decay) * means, dim=-1)


def autoencode(
    vqmodel: nn.Module, pixels: torch.Tensor, codebook: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training forward of a ``JanusVQVAE``: the one ``encode`` + ``decode`` do, with gradients.

    Returns:
        The reconstruction ``[B, 3, H, W]``, the codebook + commitment loss, the latents ``[B*h*w, D]``
        (detached, for the codebook updates) and their code indices ``[B*h*w]``.
    """
    latents = vqmodel.quant_conv(vqmodel.encoder(pixels))  # [B, D, h, w]
    quantized, vq_loss, indices = quantize_on_sphere(codebook, latents, vqmodel.quantize.beta)
    reconstruction = vqmodel.decoder(vqmodel.post_quant_conv(quantized))  # [B, 3, H, W]
    flat = latents.detach().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # [B*h*w, D]
    return reconstruction, vq_loss, flat, indices


def reconstruction_loss(reconstruction: torch.Tensor, pixels: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Absolute plus squared pixel error, the scene's objects weighted ``1 + object_weight`` against its background.

    The objects cover a small share of a scene's pixels, so a plain L1 autoencoder learns the
    background and one blue-orange colour axis first and the other object colours last: after a
    minute it decoded purple, red and green shapes as orange and blue blobs. Weighting the objects'
    pixels, and the squared term that punishes a wrong colour more than many slightly-off pixels,
    gets the colours through in the same minute. The background is the top-left pixel's colour,
    which no procedural object reaches (objects start a quarter of the way down).

    Args:
        reconstruction: decoded images ``[B, 3, H, W]``.
        pixels: the real images ``[B, 3, H, W]`` in [-1, 1].
        object_weight: extra weight of pixels unlike the background; 0 is a plain L1 + L2 loss.
    """
    error = (reconstruction - pixels).abs()
    objects = (pixels - pixels[:, :, :1, :1]).abs().sum(dim=1, keepdim=True) > 0.1  # [B, 1, H, W]
    weights = 1.0 + object_weight * objects.float()
    return ((error + error**2) * weights).mean() / weights.mean()


def train_vq(
    vqmodel: nn.Module,
    *,
    steps: int,
    batch_size: int,
    image_size: int,
    seed: int,
    lr: float = 5e-4,
    object_weight: float = 3.0,
    codebook_decay: float | None = 0.95,
    reinitialise: bool = True,
) -> dict:
    """Trains a ``JanusVQVAE`` in place to auto-encode procedural scenes, then freezes it again.

    Every step draws ``batch_size`` fresh scenes (indices ``step * batch_size ...`` of scene set
    ``seed``), so the model never sees an image twice; the learning rate decays on a cosine to zero.
    The defaults won in one-minute runs at 64 px: lr 1e-3 and above learned markedly slower, codebook
    decays 0.8 / 0.99 and a gradient-trained codebook ended worse than 0.95. The loss decides what the
    VQ can show: 300 steps of plain L1 decoded a quarter of the held-out objects in their colour (scene
    reward of the reconstructions 0.49), L1 + L2 with the objects weighted 3 more decoded nine in ten
    (0.80; weight 9 lost the backgrounds). And the codes must be learnable: with 1024
    codes and dead ones re-seeded on random latents (mostly background) every 50 steps, a uniform white
    patch came out as any of 209 codes, and the cold-start SFT ended at 3.4 nats per image token; with
    256 codes and no re-seeding, at 1.7.

    On a CPU shared with other jobs, run it under ``torch.set_num_threads(1)``: two OpenMP threads
    that find one free core spin on each other and ran 10x slower here.

    Args:
        vqmodel: the model's VQ autoencoder (``Janus.vqmodel``); left in eval mode with ``requires_grad`` off, as the
            RL trainer expects its frozen VQ.
        steps: optimiser steps.
        batch_size: scenes per step.
        image_size: side of the scenes in pixels; must be the VQ's image size.
        seed: seeds the scenes and the initialisation; equal seeds give equal weights (the global RNG
            is left untouched).
        lr: peak Adam learning rate.
        object_weight: extra weight of the objects' pixels in the loss (``reconstruction_loss``).
        codebook_decay: EMA decay of the k-means codebook update (``ema_codebook_update``); None
            trains the codes by gradient of the codebook loss instead.
        reinitialise: first redraw the convolutions with torch's fan-in init (see ``fan_in_init``); off
            to continue training an already trained VQ.

    Returns:
        ``recon_loss`` (``reconstruction_loss`` over the last 10 steps), ``codes_used``
        (distinct codes picked in the last 10 steps), ``seconds``.
    """
    start = time.perf_counter()
    quantizer = vqmodel.quantize
    recent_losses: list[float] = []
    recent_codes: list[torch.Tensor] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if reinitialise:
            fan_in_init(vqmodel)
        vqmodel.train().requires_grad_(True)
        vqmodel.to(memory_format=torch.channels_last)  # its convolutions 1.6-2.6x faster on the CPU
        codebook = quantizer.embedding.weight
        with torch.no_grad():
            codebook.copy_(F.normalize(codebook, dim=-1))
        trained = [p for p in vqmodel.parameters() if codebook_decay is None or p is not codebook]
        optimizer = torch.optim.Adam(trained, lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * s / steps)))
        for step in range(steps):
            pixels = scene_pixels(seed, range(step * batch_size, (step + 1) * batch_size), image_size)
            codes = codebook if codebook_decay is None else codebook.detach()  # EMA codes take no gradient
            reconstruction, vq_loss, flat, indices = autoencode(vqmodel, pixels, codes)
            recon_loss = reconstruction_loss(reconstruction, pixels, object_weight)
            optimizer.zero_grad(set_to_none=True)
            (recon_loss + vq_loss).backward()
            optimizer.step()
            schedule.step()
            if codebook_decay is not None:
                ema_codebook_update(codebook, flat, indices, codebook_decay)
            recent_losses = [*recent_losses[-9:], recon_loss.item()]
            recent_codes = [*recent_codes[-9:], indices]
        with torch.no_grad():  # unit codes: encode's Euclidean nearest code is then the cosine nearest one
            codebook.copy_(F.normalize(codebook, dim=-1))
        vqmodel.eval().requires_grad_(False)
    return {
        "recon_loss": float(np.mean(recent_losses)) if recent_losses else float("nan"),
        "codes_used": int(torch.cat(recent_codes).unique().numel()) if recent_codes else 0,
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def reconstruct(vqmodel: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``[B, N]`` and decoded pixels ``[B, 3, H, W]`` of ``images``, decoded as the RL policy does.

    ``encode`` returns the indices flat over the batch, ``decode`` wants them per image; the clamp is
    the one ``Janus.decode_images`` applies before any reward reads the pixels.
    """
    tokens = vqmodel.encode(images).image_tokens.view(images.shape[0], -1)  # [B, N]
    return tokens, vqmodel.decode(tokens).float().clamp(-1.0, 1.0)


def reconstruction_error(vqmodel: nn.Module, images: torch.Tensor) -> float:
    """Mean absolute pixel error (in [-1, 1] units) of images ``[B, 3, H, W]`` after encode -> decode.

    It goes through ``encode(...).image_tokens`` and ``decode(tokens)``, not the training forward, so it
    measures what the RL reward will actually see, including any train/decode mismatch.
    """
    _, decoded = reconstruct(vqmodel, images)
    return (decoded - images).abs().mean().item()


def reconstruction_scene(
    vqmodel: nn.Module, seed: int, indices: range | list[int], image_size: int
) -> dict[str, float]:
    """``SceneReward`` of the VQ's reconstructions of procedural scenes, and of each kind of check.

    What a generator that picked every scene's own codes would score: where the decoder cannot show a
    fact, RL on the image tokens has nothing to find for it. Measured for the tiny-warm VQ (seed 0, the
    256 held-out scenes of ``corl evaluate``): 0.78 (background 1.00, count 0.71, colour 0.95, shape
    0.57: the 17 px shapes of three-object scenes blur into blobs), against the warm model's generated
    images' 0.64 (0.82, 0.45, 0.89, 0.46): that difference is roughly the room RL has on ``scene``.
    """
    from corl.modules.rewards.base import GeneratedImages
    from corl.modules.rewards.scene import SceneReward

    scenes = [make_scene(seed, i, image_size) for i in indices]
    tokens, decoded = reconstruct(vqmodel, pixels_of(scenes))  # the scenes drawn once, for pixels and prompts
    samples = GeneratedImages(decoded, [s.real_image for s in scenes], [s.prompt for s in scenes], tokens)
    scored = SceneReward().scored(samples)
    return {"scene": scored.values.mean().item(), **{f"scene/{k}": v.nanmean().item() for k, v in scored.parts.items()}}
