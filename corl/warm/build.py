"""The warm-started tiny Janus: a random tiny Janus taught the procedural world, built once and cached.

A random tiny Janus decodes every image token to noise and answers in byte soup, so RL has nothing to
improve. The warm start gives it what a pretrained Janus-Pro brings, in miniature:

1. its VQ autoencoder is trained on procedural scenes (``corl.warm.vq``), so decoded tokens are images;
2. then SFT on text-to-image rows alone teaches prompt -> the scene's VQ tokens: an 18-token prompt makes
   a step a fraction of a triplet step (whose 214-token understanding prompts dominate), and the images
   need the steps to learn which colour and shape go where;
3. then cold-start SFT (``SFTModule``, towers included) on procedural triplets teaches (image, question)
   -> the reasoned answer and keeps teaching the images, and is stopped early on purpose, so that RL has
   room: answers are often, not always, right and in the tags. Last, so that no image-only phase after
   it wears the answers down (measured: with the image phase last, the sampled format fell 0.32 -> 0.20).

``model: tiny-warm`` names the result (``corl.modules.loading``): the first use builds it (a few
minutes on a CPU) into ``$CORL_CACHE`` (default ``~/.cache/corl``), later ones load it. The cache key
is the recipe, the seed and the source of everything that shapes the weights, so a changed recipe or
code builds anew instead of loading a stale model.
"""

from __future__ import annotations

import contextvars
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from corl.modules.tiny import JanusSizes
from corl.names import TINY_WARM
from corl.warm.sizes import WARM_SIZES

# Modules whose code decides the warm weights; an edit to any of them builds the model anew.
_SOURCES = (
    "warm/build.py", "warm/sizes.py", "warm/vq.py", "modules/tiny.py", "modules/sft_module.py", "modules/policy.py",
    "modules/janus.py", "modules/sampling.py", "modules/token_logprobs.py", "modules/rollout.py",
    "modules/logprobs.py", "modules/prompts.py", "modules/decoding.py", "modules/optim.py",
    "data/procedural.py", "data/templates.py", "data/images.py", "data/schema.py", "data/datamodule.py",
    "data/sampling.py",
)


@dataclass(frozen=True)
class WarmRecipe:
    """How the warm start is built; the defaults are ``tiny-warm``'s.

    Args:
        sizes: the tiny Janus's sizes.
        vq_steps: VQ autoencoder training steps (``corl.warm.vq.train_vq``).
        vq_batch_size: procedural scenes per VQ step.
        vq_lr: peak Adam learning rate of the VQ.
        sft_steps: SFT optimiser steps; few on purpose, so RL has room.
        sft_batch_size: procedural triplets per SFT step (each teaches an image and an answer).
        sft_lr: peak AdamW learning rate of the SFT (cosine to 0 after warmup).
        sft_warmup_steps: linear warmup of the SFT.
        image_weight: weight of the image-token loss beside the answer loss (1): image tokens carry
            several nats each, and at equal weight they take the clipped gradient from the answers.
        uncond_prob: share of image rows trained on the unconditional prompt (for CFG).
        reasoned_share: share of SFT answers in the ``<think>…</think><answer>…</answer>`` format; the
            others say the same in plain prose, so the warm model answers in the format only part of the time.
        t2i_steps: SFT steps on text-to-image rows alone, before the triplets (0: none).
        t2i_batch_size: text-to-image rows per such step.
        t2i_lr: their peak AdamW learning rate (cosine to 0 after ``sft_warmup_steps``).
        system_prompt: the understanding prompts' system prompt it is taught with (the demo's configs use
            the same): the processor's default, as a model pretrained with Janus's chat format reads.
        instruction: the instruction wording around its bare procedural questions: the poster's.
    """

    sizes: JanusSizes = field(default_factory=lambda: WARM_SIZES)
    vq_steps: int = 300
    vq_batch_size: int = 8
    vq_lr: float = 5e-4
    sft_steps: int = 300
    sft_batch_size: int = 16
    sft_lr: float = 3e-3
    sft_warmup_steps: int = 10
    image_weight: float = 0.3
    uncond_prob: float = 0.1
    reasoned_share: float = 0.4
    t2i_steps: int = 400
    t2i_batch_size: int = 32
    t2i_lr: float = 1e-3
    system_prompt: str = "default"
    instruction: str = "poster"


RECIPE = WarmRecipe()  # tiny-warm's


def cache_root() -> Path:
    """Where built models live: ``$CORL_CACHE``, else ``~/.cache/corl``."""
    return Path(os.environ.get("CORL_CACHE") or Path.home() / ".cache" / "corl")


def fingerprint(recipe: WarmRecipe, seed: int) -> str:
    """A short hash of the recipe, the seed, the versions and the source that shape the weights."""
    import transformers

    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(json.dumps(
        {"recipe": dataclasses.asdict(recipe), "seed": seed, "torch": torch.__version__,
         "transformers": transformers.__version__}, sort_keys=True, default=str).encode())
    for name in _SOURCES:
        digest.update((package / name).read_bytes())
    return digest.hexdigest()[:12]


def warm_folder(seed: int = 0, recipe: WarmRecipe | None = None) -> Path:
    """The exported folder of the warm model for ``seed``; built first if the cache lacks it.

    Concurrent callers (the ranks of a distributed run) build it once: the others wait on a lock,
    then load what the first one wrote. A build is written beside the final folder and renamed into
    place, so a killed build leaves nothing that looks finished.

    Args:
        seed: seeds the initialisation, the VQ scenes and the SFT data order.
        recipe: the recipe; None is ``tiny-warm``'s.
    """
    recipe = recipe or RECIPE
    folder = cache_root() / "warm" / f"{TINY_WARM}-seed{seed}-{fingerprint(recipe, seed)}"
    if (folder / "warm.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_suffix(".lock")):
        if not (folder / "warm.json").is_file():
            partial = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
            try:
                # In a fresh context: LightningCLI instantiates a module's arguments under a context
                # variable that every save_hyperparameters() inside would read as its own.
                contextvars.Context().run(build_warm, partial, seed, recipe)
                os.replace(partial, folder)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    return folder


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_warm(out: Path, seed: int, recipe: WarmRecipe) -> dict:
    """Build the warm model into ``out`` (an exported transformers folder plus ``warm.json``); returns its stats."""
    from corl.checkpoints import export
    from corl.modules.janus import Janus
    from corl.modules.tiny import build_tiny_janus
    from corl.warm.vq import reconstruction_error, reconstruction_scene, scene_pixels, train_vq

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny_janus(recipe.sizes, seed=seed)
    vqmodel, size = Janus(model, processor).vqmodel, recipe.sizes.image_size
    _say(f"warm start (seed {seed}): training the VQ autoencoder on procedural scenes, {recipe.vq_steps} steps")
    vq = train_vq(vqmodel, steps=recipe.vq_steps, batch_size=recipe.vq_batch_size, image_size=size,
                  seed=seed, lr=recipe.vq_lr)
    vq["held_out_error"] = reconstruction_error(vqmodel, scene_pixels(seed + 999, range(32), size))
    vq["held_out_scene"] = reconstruction_scene(vqmodel, seed + 999, range(256), size)
    _say(f"warm start: VQ done in {vq['seconds']:.0f} s, held-out pixel error {vq['held_out_error']:.3f} "
         f"(random: ~0.7), {vq['codes_used']} codes in use; its reconstructions score "
         + ", ".join(f"{k} {v:.2f}" for k, v in vq["held_out_scene"].items())
         + " (a generator that drew every scene exactly)")
    phases = {  # each phase its own draw of scenes (data seed = seed + its offset)
        "t2i": _Phase("t2i", recipe.t2i_steps, recipe.t2i_batch_size, recipe.t2i_lr, image_weight=1.0,
                      text_weight=0.0, seed_offset=2),
        "sft": _Phase("triplet", recipe.sft_steps, recipe.sft_batch_size, recipe.sft_lr,
                      image_weight=recipe.image_weight, text_weight=1.0, seed_offset=1),
    }
    trained = {}
    for name, phase in phases.items():
        if phase.steps == 0:
            continue
        with tempfile.TemporaryDirectory(dir=out) as staged:
            export(model, processor, staged)
            model, trained[name] = _sft(staged, seed, recipe, phase)
    export(model, processor, out)
    stats = {"seed": seed, "recipe": dataclasses.asdict(recipe), "vq": vq, **trained,
             "seconds": time.perf_counter() - start}
    (out / "warm.json").write_text(json.dumps(stats, indent=2, default=str) + "\n")
    _say(f"warm start: built in {stats['seconds']:.0f} s")
    return stats


@dataclass(frozen=True)
class _Phase:
    """One SFT phase of the warm start: its data kind, length, batch, peak learning rate, loss weights, data seed."""

    kind: str
    steps: int
    batch_size: int
    lr: float
    image_weight: float
    text_weight: float
    seed_offset: int


def _sft(model_folder: str, seed: int, recipe: WarmRecipe, phase: _Phase) -> tuple[torch.nn.Module, dict]:
    """Cold-start SFT of the model in ``model_folder`` on procedural rows, towers included (they are random).

    Returns the trained model and the phase's stats. A plain loop over ``SFTModule.loss`` rather than a
    Lightning fit: the warm model may be built from inside a distributed run (its first
    ``model: tiny-warm``), where a nested Trainer would join the run's process group.
    """
    from corl.data.datamodule import ExampleDataModule
    from corl.modules.sft_module import SFTModule

    _say(f"warm start: SFT on procedural {phase.kind} rows, {phase.steps} steps of {phase.batch_size}")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = SFTModule(
            model=model_folder, image_weight=phase.image_weight, text_weight=phase.text_weight,
            uncond_prob=recipe.uncond_prob, max_answer_tokens=64, reasoned_share=recipe.reasoned_share,
            train_towers=True, lr=phase.lr, warmup_steps=recipe.sft_warmup_steps, lr_schedule="cosine",
            system_prompt=recipe.system_prompt, instruction=recipe.instruction,
        )
        data = ExampleDataModule(source="procedural", kind=phase.kind, batch_size=phase.batch_size,
                                 length=phase.steps * phase.batch_size, seed=seed + phase.seed_offset,
                                 image_size=recipe.sizes.image_size)
        (optimizer,), (schedule,) = module.optimizer(phase.steps)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        history: list[dict[str, float]] = []
        for step, batch in enumerate(data.train_dataloader()):
            loss, metrics = module.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            history.append({k: float(v) for k, v in metrics.items()})
            if (step + 1) % 50 == 0 or step + 1 == phase.steps:
                recent = {k: sum(h[k] for h in history[-50:]) / len(history[-50:]) for k in history[-1]}
                _say(f"  {phase.kind} step {step + 1}/{phase.steps} ({time.perf_counter() - start:.0f} s): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in recent.items()))
    return module.policy.model, {"seconds": time.perf_counter() - start, "losses_every_10_steps": history[::10]}


def _say(message: str) -> None:
    print(message, flush=True)


def warm_command(seed: int = 0, recipe: WarmRecipe | None = None) -> None:
    """Build the warm-started tiny Janus for ``seed`` (or find it in the cache) and print its folder.

    ``corl warm`` builds ``tiny-warm`` itself; ``--recipe.*`` options build a variant, which
    ``model.model`` then takes by its printed folder.

    Args:
        seed: seeds the initialisation, the VQ scenes and the SFT data (``model.seed`` of the configs).
        recipe: how it is built; the defaults are ``tiny-warm``'s.
    """
    folder = warm_folder(seed, recipe)
    stats = json.loads((folder / "warm.json").read_text())
    _say(f"{TINY_WARM} seed {seed}: {folder} (built in {stats['seconds']:.0f} s; VQ held-out pixel error "
         f"{stats['vq']['held_out_error']:.3f})")
