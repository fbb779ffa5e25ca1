"""The CoRL LightningModule: rollout -> rewards -> group advantages -> clipped GRPO update -> logs.

A training step samples, for each of the B examples, G images from its prompt and G answers from
its (real image, question). Output i of a group is the pair (image i, answer i) and gets one reward
R_i = R_image(I_i) + lambda * R_text(T_i); its advantage is applied to every token of both. A task
with no reward configured is not rolled out at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch

from corl.callbacks import ExactResume, FinalCheckpoint, RewardLayout
from corl.checkpoints import start_from
from corl.data.schema import ExampleBatch
from corl.lightning_internals import logged_step
from corl.models import load_named
from corl.modules.collect import Collected, collect, sample, tasks_at
from corl.modules.decode_weights import DecodeWeightsMode
from corl.modules.decoding import DecodeMode
from corl.modules.grpo import AdvantageScale, Aggregation, ImportanceLevel, group_advantages
from corl.modules.held_out import held_out_scores
from corl.modules.logging_media import log_held_out_images, log_media
from corl.modules.logprobs import ImageLogprobMode
from corl.modules.lora import LoRA, check_resumable
from corl.modules.metrics import step_scalars
from corl.modules.optim import LRSchedule, adamw_with_schedule
from corl.modules.policy import JanusPolicy
from corl.modules.reference import FrozenModules
from corl.modules.rewards.base import ImageReward, TextReward
from corl.modules.rollout import OldLogps, Rollout
from corl.modules.scoring import Scores, reward_names, score_rollout
from corl.modules.settings import check_settings
from corl.modules.sharding import Sharding, checkpoint_layers, checkpointing_paused, gathered, shard_on_mesh
from corl.modules.update import OptimiserSteps, UpdateSettings, rollout_logprobs, update


class CoRLModule(L.LightningModule):
    """GRPO post-training of a unified Janus model on both tasks at once (stage 1 of CoRL).

    Args:
        model: ``tiny`` (embedded default) or a local Hugging Face folder of Janus-Pro weights.
        dtype: parameter dtype of the loaded model (``float32``, ``bfloat16``, ``float16``).
        group_size: G, outputs sampled per example for each task.
        cfg_weight: classifier-free guidance weight for image sampling.
        image_temperature: sampling (and scoring) temperature of image tokens.
        text_temperature: sampling (and scoring) temperature of answer tokens.
        max_completion_tokens: length limit of an answer.
        image_logprob_mode: ``cfg`` scores image tokens with the guided logits they were sampled
            from; ``conditional`` with the conditional logits only (cheaper, no unconditional pass).
        logprob_chunk_tokens: training and reference log-probs are taken over about this many
            (row, position) pairs at a time: the float32 logits of a micro-batch over the whole
            vocabulary never exist at once (each chunk is recomputed in backward).
        decode: the rollout's one-token decode step: ``captured`` (a CUDA graph captured once per
            rollout shape and replayed), ``eager``, or ``auto`` (captured on CUDA, eager elsewhere).
            Each prompt is prefilled once and its KV cache copied to the G rows of its group.
        decode_weights: what rollouts decode from: ``auto``, a plain copy of the LLM and text head with their
            matrices in the compute dtype under mixed precision (bf16-mixed: each decode step would otherwise
            cast every float32 weight again) or FSDP (its hooks split the captured step), refreshed before
            every rollout (memory: the matrices once more, ~2.6 GB for Janus-Pro-1B; not with LoRA);
            ``trained``, the trained modules themselves.
        old_logps: pi_old: ``rollout``, the log-probs the tokens were sampled with, or ``replay``, the
            training forward's before the first pass (one extra forward without gradients). In bf16,
            cached decoding and the teacher-forced forward round differently and CFG amplifies the gap;
            replay makes the first ratio exactly 1 and logs the gap (``image/replay_gap``, ``text/replay_gap``).
        image_rewards: image rewards with their weights.
        text_rewards: text rewards with their weights.
        text_weight: lambda, the weight of the text part of the paired reward.
        advantage_scale: ``group`` (std of the group), ``batch`` (std of the batch) or ``none``.
        advantage_eps: added to the std before dividing.
        beta: KL penalty weight; the frozen reference is only built when it is > 0 (with ``lora``: the
            model with its adapters switched off, no copy).
        eps_low: lower clip range of the ratio.
        eps_high: upper clip range of the ratio.
        aggregation: ``sequence`` (the paper's, Eq. 2 and 6, and the authors' loss: each output's token
            mean, then the mean over outputs), ``token`` (the mean over all valid tokens of the batch, which
            weights long answers more) or ``constant`` (Dr. GRPO: the sum over valid tokens divided by rows
            times the task's length limit, ``max_completion_tokens`` for answers and the image-token count for images).
        importance_sampling_level: ``token`` (a ratio per token) or ``sequence`` (GSPO: one ratio
            per sequence, the exp of its mean token log-ratio, clipped the same way).
        mask_truncated_completions: answers cut off by ``max_completion_tokens`` (no EOS) get no
            loss (DAPO's overlong filtering); they still count in the rewards and advantages.
        dynamic_sampling: DAPO's dynamic sampling: groups whose rewards are all equal (no advantage)
            are replaced by informative groups rolled out from further examples; a step always keeps
            ``data.batch_size`` groups, so every rank takes the same steps (logged:
            ``dynamic/left_out_fraction``, ``dynamic/rounds``).
        max_resample_rounds: the most further rollouts per step under dynamic sampling.
        mu: optimisation passes over each rollout, one optimiser step each; Lightning's
            ``global_step`` and ``trainer.max_steps`` count optimiser steps, so mu steps per batch.
        micro_batch_size: rollout rows per forward/backward in the update, and per forward of the
            KL reference at rollout time.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: linear warmup in optimiser steps.
        lr_schedule: ``constant`` or ``cosine`` (to 0 at the last step) after warmup.
        grad_clip: max gradient norm; 0 disables clipping.
        max_skipped_steps: optimiser steps that may be skipped for a non-finite loss or gradient norm
            (each is counted in ``train/skipped_steps`` and reported with its cause); one more stops the run.
        log_media_every_n_steps: how often image grids and completions go to TensorBoard; 0 never.
        alternate_every: RL-Cycle (the pilot study): with rewards for both tasks, roll out only the image
            task for this many steps, then only the text task, and so on; 0 trains both every step.
        init_from: start from these weights (a corl checkpoint or an exported Hugging Face folder) with
            a fresh optimiser and step counter, e.g. stage 2 from stage 1; the KL reference (``beta >
            0``) is this starting model. A LoRA run's checkpoint is read with its adapters merged.
            Resuming an interrupted run is ``--ckpt_path`` instead.
        lora: train low-rank adapters (peft's LoRA) on the LLM's decoder layers instead of the LLM and
            its text head; everything else stays frozen and the optimiser gets only the adapters.
            Checkpoints hold base and adapters; ``corl export`` merges them (``--adapters-only``
            writes a peft adapter folder). LoRA usually wants a higher ``lr`` than full training.
        activation_checkpointing: recompute each decoder layer's activations in backward instead of
            keeping them (less memory for a second forward per layer); any strategy.
        sharding: FSDP settings, used when the strategy shards (``corl.strategies.FullyShardedStrategy``).
        system_prompt: in front of every understanding prompt (rollouts, validation, the self-captioner, the
            matching reward): ``none``, the CoRL authors' training layout; ``default``, the processor's
            (Janus-Pro's default system prompt, what evaluation suites put there); or a text of one's own.
        instruction: the answer-format instruction around a bare question: ``authors`` (their wording and
            layout), ``poster`` (the CoRL poster's), ``none``, or ``{MC: template, OE: template}`` with
            ``{question}``. A question that asks for ``<answer>`` tags itself (the public data's) is used as
            it is, so the instruction is never doubled. ``corl prompt -c CONFIG`` shows what the model reads.
        seed: initialisation seed of the tiny model.
    """

    def __init__(
        self,
        model: str = "tiny",
        dtype: str = "float32",
        group_size: int = 8,
        cfg_weight: float = 5.0,
        image_temperature: float = 1.0,
        text_temperature: float = 1.0,
        max_completion_tokens: int = 512,
        image_logprob_mode: ImageLogprobMode = "cfg",
        logprob_chunk_tokens: int = 1024,
        decode: DecodeMode = "auto",
        decode_weights: DecodeWeightsMode = "auto",
        old_logps: OldLogps = "rollout",
        image_rewards: list[ImageReward] | None = None,
        text_rewards: list[TextReward] | None = None,
        text_weight: float = 0.8,
        advantage_scale: AdvantageScale = "group",
        advantage_eps: float = 1e-4,
        beta: float = 0.0,
        eps_low: float = 0.2,
        eps_high: float = 0.2,
        aggregation: Aggregation = "sequence",
        importance_sampling_level: ImportanceLevel = "token",
        mask_truncated_completions: bool = False,
        dynamic_sampling: bool = False,
        max_resample_rounds: int = 3,
        mu: int = 1,
        micro_batch_size: int = 16,
        lr: float = 4e-6,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        lr_schedule: LRSchedule = "constant",
        grad_clip: float = 1.0,
        max_skipped_steps: int = 3,
        log_media_every_n_steps: int = 50,
        alternate_every: int = 0,
        init_from: str | None = None,
        lora: LoRA | None = None,
        activation_checkpointing: bool = False,
        sharding: Sharding | None = None,
        system_prompt: str = "none",
        instruction: str | dict[str, str] = "authors",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["image_rewards", "text_rewards", "sharding"])
        check_settings(dict(self.hparams))
        self.sharding = sharding or Sharding()
        self.automatic_optimization = False
        self.image_rewards = list(image_rewards or [])
        self.text_rewards = list(text_rewards or [])
        if not self.image_rewards and not self.text_rewards:
            raise ValueError("configure at least one reward in model.image_rewards or model.text_rewards")
        janus, processor = load_named(model, dtype, seed)
        start_from(janus, init_from)
        self.policy = JanusPolicy(janus, processor, cfg_weight=cfg_weight, image_temperature=image_temperature,
                                  text_temperature=text_temperature, max_completion_tokens=max_completion_tokens,
                                  image_logprob_mode=image_logprob_mode, logprob_chunk_tokens=logprob_chunk_tokens,
                                  decode=decode, decode_weights=decode_weights, lora=lora, system_prompt=system_prompt,
                                  instruction=instruction)
        self.reference = self.policy.make_reference() if beta > 0 else None
        self._model_configured = False
        self.skipped_reading = 0  # this rank's rows passed over while reading (restored on resume)
        self.skipped_steps = 0  # optimiser steps skipped for non-finite values (restored on resume)

    def configure_model(self) -> None:
        """Activation checkpointing, and FSDP units when the strategy gives a device mesh."""
        if self._model_configured:  # Lightning calls this hook again for each stage
            return
        self._model_configured = True
        if self.hparams.activation_checkpointing:
            checkpoint_layers(self.policy.llm)
        if self.device_mesh is not None:  # ModelParallelStrategy's mesh (one device, or DDP: nothing to shard)
            # A frozen reference is a copy of its own; LoRA's reference is the policy's own units.
            copies = [self.reference] if isinstance(self.reference, FrozenModules) else []
            self._fsdp_roots = shard_on_mesh(self.device_mesh, self.policy.trained_modules(), copies, self.sharding)

    @contextmanager
    def rollout_mode(self) -> Iterator[None]:
        """For rollouts and rewards: the policy's sharded parameters gathered, activation checkpointing off."""
        with gathered(self.policy, self.sharding.reshard_after_forward), checkpointing_paused(self.policy.llm):
            yield

    def setup(self, stage: str) -> None:
        """Load the image rewards' scorers (the Trainer's own checks are ``corl.trainer_setup``'s)."""
        for reward in self.image_rewards:
            reward.setup()

    def configure_callbacks(self) -> list:
        """Exact resume, the final ``last.ckpt`` and TensorBoard's layout (``corl.callbacks``)."""
        return [ExactResume(), FinalCheckpoint(), RewardLayout()]

    def on_train_start(self) -> None:
        """Count the unreadable rows the data set left out when it was opened, once."""
        dataset = getattr(self.trainer.datamodule, "dataset", None) if self.trainer.datamodule else None
        self.skipped_at_opening = getattr(dataset, "skipped", 0)  # every rank opens the same files

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint whose adapters this run's settings cannot load (``corl.modules.lora``)."""
        check_resumable(checkpoint.get("hyper_parameters", {}), self.hparams)

    # ----------------------------------------------------------------------------- the algorithm
    def training_step(self, batch: ExampleBatch, batch_idx: int) -> None:
        """Collect a rollout and its scores, group advantages, ``mu`` clipped GRPO updates, logs."""
        hp = self.hparams
        self.skipped_reading += batch.skipped
        tasks = tasks_at(self.global_step // hp.mu, self.tasks(), hp.alternate_every)
        pad = self.policy.tokenizer.pad_token_id
        with self.rollout_mode():  # rewards such as the self-captioner decode with the policy too
            step = collect(batch, lambda examples: self.rollout(examples, tasks), self.scores, self._more_examples,
                           hp.group_size, hp.dynamic_sampling, hp.max_resample_rounds, pad)
        start = time.perf_counter()
        advantages = group_advantages(step.scores.values["total"], hp.group_size, hp.advantage_scale, hp.advantage_eps)
        update_stats = self.update(step.rollout, advantages, step.scores.values)
        self.log_step(step, advantages, {**update_stats, "time/update": time.perf_counter() - start}, batch_idx)

    def _more_examples(self) -> ExampleBatch:
        """Further examples for dynamic sampling, from this rank's own resumable stream."""
        batch = self.trainer.datamodule.extra_batch()
        self.skipped_reading += batch.skipped
        return batch

    def log_step(self, step: Collected, advantages: torch.Tensor, update_stats: dict[str, float],
                 batch_idx: int) -> None:
        """The step's scalars, averaged over the ranks in one collective (not ``sync_dist``'s one a key), and media."""
        rollout, rewards, hp = step.rollout, step.scores.values, self.hparams
        stats = step_scalars(step, advantages, update_stats, self.policy.decode_stats())
        means = self.trainer.strategy.reduce(torch.tensor(list(stats.values()), device=self.device), reduce_op="mean")
        self.log_dict(dict(zip(stats, means.tolist(), strict=True)), on_step=True, on_epoch=False,
                      batch_size=len(step.batch))
        reading = torch.tensor(float(self.skipped_reading), device=self.device)
        reading = self.trainer.strategy.reduce(reading, reduce_op="sum")  # ranks read different rows
        self.log("data/skipped_rows", self.skipped_at_opening + reading, on_step=True, on_epoch=False,
                 batch_size=len(step.batch))
        every = hp.log_media_every_n_steps
        if every and batch_idx % every == 0:
            # Lightning logs this batch's scalars at a step that counts batches, not the mu optimiser steps.
            log_media(self.logger, logged_step(self.trainer), step.batch, rollout, rewards, hp.group_size,
                      step.scores.captions)

    def tasks(self) -> tuple[str, ...]:
        """The tasks that have rewards."""
        return tuple(task for task, rewards in (("image", self.image_rewards), ("text", self.text_rewards)) if rewards)

    @torch.no_grad()
    def rollout(self, batch: ExampleBatch, tasks: tuple[str, ...] | None = None, evaluation: bool = False,
                greedy: bool = True) -> Rollout:
        """Sample G outputs per example for each task (default: all with rewards); record pi_old and ref log-probs.

        ``evaluation`` samples one image and one answer per example and no reference log-probs; the
        answer is greedy, or with ``greedy=False`` sampled at ``text_temperature`` as in training.
        """
        hp = self.hparams
        rollout = sample(self.policy, batch, self.tasks() if tasks is None else tasks,
                         1 if evaluation else hp.group_size, greedy_answers=evaluation and greedy,
                         mask_truncated=hp.mask_truncated_completions and not evaluation)
        if self.reference is not None and not evaluation:
            rollout.ref_image_logps, rollout.ref_text_logps = rollout_logprobs(
                self.policy, rollout, self.hparams.micro_batch_size, self.reference)
        return rollout

    @torch.no_grad()
    def validation_step(self, batch: ExampleBatch, batch_idx: int) -> None:
        """Held-out scores: greedy answers (accuracy, format) and one image per prompt (image rewards).

        Images are sampled with a seed of their own, so the scores are reproducible and validation
        draws nothing from the training stream. The first batch's images go to TensorBoard at every check.
        """
        held = held_out_scores(self, batch, self.hparams.seed * 7919 + batch_idx)
        if batch_idx == 0 and held.images is not None:
            log_held_out_images(self.logger, logged_step(self.trainer), batch.prompt, held.images)
        for name, values in held.scores.items():
            # Logged even with nothing scored (weight 0), so every rank syncs the same keys.
            mean = values.mean() if values.numel() else values.new_zeros(())
            self.log(f"val/{name}", mean, on_step=False, on_epoch=True, batch_size=values.numel(),
                     sync_dist=True)

    def score(self, rollout: Rollout, batch: ExampleBatch) -> dict[str, torch.Tensor]:
        """Every reward ``[R]`` by name, its parts (``<name>/<part>``), the weighted ``image``, ``text``, ``total``."""
        return self.scores(rollout, batch).values

    def scores(self, rollout: Rollout, batch: ExampleBatch) -> Scores:
        """The rollout's typed score record (``corl.modules.scoring``), with the module's rewards."""
        return score_rollout(rollout, batch, self.policy, self.image_rewards, self.text_rewards,
                             self.hparams.text_weight, self.device)

    def reward_names(self, scores: dict[str, torch.Tensor], task: str | None = None) -> list[str]:
        """The keys of ``score``'s output that are rewards (of ``task``: ``image`` or ``text``) or their parts."""
        return reward_names(scores, self.image_rewards, self.text_rewards, task)

    def update(self, rollout: Rollout, advantages: torch.Tensor, rewards: dict[str, torch.Tensor]) -> dict[str, float]:
        """``mu`` optimiser steps over the rollout with the skip policy (``corl.modules.update``); its scalars."""
        hp = self.hparams
        optimizer = self.optimizers()

        def clip() -> None:
            if hp.grad_clip > 0:
                self.clip_gradients(optimizer, gradient_clip_val=hp.grad_clip, gradient_clip_algorithm="norm")

        steps = OptimiserSteps(optimizer, self.lr_schedulers(), self.manual_backward, clip, self._finite_on_every_rank)
        stats = update(self.policy, rollout, advantages, rewards, self.update_settings, steps, self.skipped_steps,
                       self.global_step)
        self.skipped_steps = stats.skipped_steps
        return stats.logged()

    @property
    def update_settings(self) -> UpdateSettings:
        """The update's and the objective's settings, from the module's."""
        return UpdateSettings.of(self.hparams)

    def _finite_on_every_rank(self, finite: bool) -> bool:
        """Whether every rank's pass was finite; all ranks reach the same answer."""
        bad = torch.tensor(0.0 if finite else 1.0, device=self.device)
        return float(self.trainer.strategy.reduce(bad, reduce_op="sum")) == 0.0

    # ------------------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        """AdamW over the trainable (LLM) parameters with warmup + constant/cosine schedule."""
        hp = self.hparams
        trainer = self.trainer
        total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches * hp.mu
        return adamw_with_schedule(
            (p for p in self.policy.parameters() if p.requires_grad), lr=hp.lr, weight_decay=hp.weight_decay,
            betas=hp.betas, warmup_steps=hp.warmup_steps, schedule=hp.lr_schedule, total_steps=int(total),
        )

