"""Cold-start supervised fine-tuning (SFT): the paper's Cold-SFT baseline, and the demo's warm start.

On the same three kinds of example as RL: rows with a prompt and a real image teach prompt -> the
VQ tokens of that image; rows with a question teach (image, question) -> the answer in the
``<think>…</think><answer>…</answer>`` format the RL rewards check (``sft_completion``). The loss is
the mean negative log-likelihood of the target tokens only, computed by the same log-prob code that
scores RL rollouts. Its checkpoints are read like RL checkpoints: stage 1 starts from one with
``model.init_from``, and ``corl export`` turns one into a transformers folder.
"""

from __future__ import annotations

import lightning as L
import torch

from corl.checkpoints import start_from
from corl.data.schema import ExampleBatch
from corl.data.templates import prose_completion, sft_completion
from corl.modules.loading import load_janus
from corl.modules.lora import LoRA
from corl.modules.optim import LRSchedule, adamw_with_schedule
from corl.modules.policy import JanusPolicy
from corl.modules.rollout import ImageTokens, TextTokens
from corl.modules.sharding import checkpoint_layers


class SFTModule(L.LightningModule):
    """Supervised fine-tuning of a Janus model on images (prompt -> VQ tokens) and answers.

    Args:
        model: ``tiny`` (embedded default) or a local Hugging Face folder of Janus-Pro weights.
        dtype: parameter dtype of the loaded model.
        image_weight: weight of the image-token loss; 0 trains answers only.
        text_weight: weight of the answer loss; 0 trains images only.
        uncond_prob: share of image rows trained on the unconditional prompt (only BOS and
            ``<begin_of_image>``), as Janus was pretrained, so classifier-free guidance keeps an
            unconditional model to contrast with.
        max_answer_tokens: longer target answers are cut to this many tokens.
        reasoned_share: share of answers taught in the ``<think>…</think><answer>…</answer>`` format
            (``sft_completion``); the others teach the same reasoning and answer as plain prose
            (``prose_completion``). 1 for Cold-SFT; the demo's warm start keeps it lower, so that RL's
            format reward has something left to teach.
        train_towers: also train the vision tower, the aligners and the generation embedding and head.
            Only for a randomly initialised model (the demo's warm start); Janus-Pro's are pretrained
            and stay frozen, as in RL.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: linear warmup in optimiser steps.
        lr_schedule: ``constant`` or ``cosine`` (to 0 at the last step) after warmup.
        init_from: start from these weights (a corl checkpoint or an exported folder).
        lora: train low-rank adapters on the LLM's decoder layers (peft's LoRA) instead of the LLM and its
            text head; not with ``train_towers``.
        activation_checkpointing: recompute each decoder layer in backward instead of keeping it.
        system_prompt: in front of every question: ``none`` (the CoRL authors' layout), ``default`` (the
            processor's) or a text; as ``corl fit``'s, so RL reads what SFT taught.
        instruction: the answer-format instruction around bare questions (``authors``, ``poster``, ``none`` or
            ``{MC: template, OE: template}``); questions that ask for ``<answer>`` tags stay verbatim.
        seed: initialisation seed of the tiny model.
    """

    def __init__(
        self,
        model: str = "tiny",
        dtype: str = "float32",
        image_weight: float = 1.0,
        text_weight: float = 1.0,
        uncond_prob: float = 0.1,
        max_answer_tokens: int = 512,
        reasoned_share: float = 1.0,
        train_towers: bool = False,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        lr_schedule: LRSchedule = "cosine",
        init_from: str | None = None,
        lora: LoRA | None = None,
        activation_checkpointing: bool = False,
        system_prompt: str = "none",
        instruction: str | dict[str, str] = "authors",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if image_weight < 0 or text_weight < 0 or image_weight + text_weight == 0:
            raise ValueError("model.image_weight and model.text_weight must not be negative, and one must be positive")
        if not 0 <= uncond_prob < 1:
            raise ValueError(f"model.uncond_prob must lie in [0, 1), got {uncond_prob}")
        if not 0 <= reasoned_share <= 1:
            raise ValueError(f"model.reasoned_share must lie in [0, 1], got {reasoned_share}")
        if train_towers and lora is not None:
            raise ValueError("model.train_towers trains every weight but the VQ model's, model.lora only adapters "
                             "on the LLM: set one of them")
        janus, processor = load_janus(model, dtype, seed)
        start_from(janus, init_from)
        # Log-likelihoods at temperature 1, image tokens under the conditional logits (no CFG mix).
        self.policy = JanusPolicy(janus, processor, image_temperature=1.0, text_temperature=1.0,
                                  max_completion_tokens=max_answer_tokens, image_logprob_mode="conditional", lora=lora,
                                  system_prompt=system_prompt, instruction=instruction)
        if train_towers:
            self.policy.janus.train_all_but_codebook()
        if activation_checkpointing:
            checkpoint_layers(self.policy.llm)

    def training_step(self, batch: ExampleBatch, batch_idx: int) -> torch.Tensor:
        """The weighted image and answer losses of the batch's rows that have them."""
        loss, metrics = self.loss(batch)
        self.log_dict(metrics, on_step=True, batch_size=len(batch), sync_dist=True)
        return loss

    def loss(self, batch: ExampleBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted sum of the image and answer losses, and each of them (``sft/...``, detached)."""
        hp = self.hparams
        losses = {}
        if hp.image_weight > 0 and batch.prompt is not None:
            losses["image"] = self.image_loss(batch.prompt, batch.real_image)
        if hp.text_weight > 0 and batch.qa_problem is not None:
            losses["text"] = self.text_loss(batch)
        if not losses:
            raise ValueError("the SFT data has neither prompts nor questions for the weighted losses (data.kind)")
        loss = sum({"image": hp.image_weight, "text": hp.text_weight}[task] * value for task, value in losses.items())
        metrics = {f"sft/{task}_loss": value.detach() for task, value in losses.items()}
        return loss, {**metrics, "sft/loss": loss.detach()}

    def image_loss(self, prompts: list[str], photos: list) -> torch.Tensor:
        """Mean NLL of the real images' VQ tokens given their prompts (some rows unconditional)."""
        tokens = self.policy.janus.encode_images(photos)  # [B, N]
        ids, mask, uncond = self.policy.generation_prompts(prompts)
        dropped = torch.rand(len(prompts), device=ids.device) < self.hparams.uncond_prob
        ids = torch.where(dropped[:, None], uncond, ids)
        return -self.policy.logprobs(ImageTokens(ids, mask, uncond, tokens)).logps.mean()

    def text_loss(self, batch: ExampleBatch) -> torch.Tensor:
        """Mean NLL per answer token of the target answers given (image, question)."""
        ids, mask, features, _ = self.policy.understanding_prompts(batch.qa_problem, batch.qa_type, batch.real_image)
        captions = batch.prompt or [None] * len(batch)
        reasoned = (torch.rand(len(batch)) < self.hparams.reasoned_share).tolist()
        answers = [(sft_completion if keep else prose_completion)(solution, caption)
                   for solution, caption, keep in zip(batch.qa_solution, captions, reasoned, strict=True)]
        completion, completion_mask = self.policy.answer_ids(answers)
        limit = self.hparams.max_answer_tokens
        completion, completion_mask = completion[:, :limit], completion_mask[:, :limit]
        rows = torch.arange(len(batch), device=ids.device)
        logps = self.policy.logprobs(TextTokens(ids, mask, rows, features, completion, completion_mask)).logps
        return -logps.sum() / completion_mask.sum()

    def configure_optimizers(self):
        """AdamW over the trained parameters with warmup + constant/cosine schedule."""
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        return self.optimizer(int(total))

    def optimizer(self, total_steps: int):
        """``([AdamW], [schedule])`` over the trained parameters for a run of ``total_steps`` steps."""
        hp = self.hparams
        return adamw_with_schedule(
            (p for p in self.policy.parameters() if p.requires_grad), lr=hp.lr, weight_decay=hp.weight_decay,
            betas=hp.betas, warmup_steps=hp.warmup_steps, schedule=hp.lr_schedule, total_steps=total_steps,
        )
