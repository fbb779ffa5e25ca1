"""Callbacks for the multi-process tests: what each rank trained on, its weights, and a kill switch."""

import hashlib
import json
import os
import signal
import signal as signal_module
from pathlib import Path

import lightning as L


def _digest(state) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def weights_digest(model) -> str:
    """Digest of the whole weights; sharded (FSDP) tensors are gathered first, on every rank alike."""
    return _digest(model.state_dict())


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def base_digest(model) -> str:
    """Digest of a LoRA model's base weights under the plain model's names: ``weights_digest`` of its start."""
    return _digest({k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if not is_adapter(k)})


def adapters_digest(model) -> str:
    return _digest({k: v for k, v in model.state_dict().items() if is_adapter(k)})


class RankProbe(L.Callback):
    def __init__(self, out: str):
        self.out = Path(out)
        self.prompts = []
        self.ratios = []
        self.logged = []

    def on_train_start(self, trainer, pl_module):
        self.adapters_at_start = adapters_digest(pl_module.policy.model)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.prompts.append(list(batch.prompt))
        metrics = trainer.callback_metrics
        self.ratios.append({k: float(metrics[k]) for k in ("image/ratio", "text/ratio") if k in metrics})
        self.logged.append({k: float(metrics[k]) for k in ("reward/total/mean", "advantage/abs_mean")})

    def on_train_end(self, trainer, pl_module):
        self.out.mkdir(parents=True, exist_ok=True)
        layer = pl_module.policy.llm.layers[0].mlp.up_proj.weight
        local = layer.to_local() if hasattr(layer, "to_local") else layer  # this rank's shard under FSDP
        record = {
            "weights": weights_digest(pl_module.policy.model), "prompts": self.prompts, "ratios": self.ratios,
            "logged": self.logged,
            "world_size": trainer.world_size, "group_size": pl_module.hparams.group_size,
            "layer_shape": list(layer.shape), "layer_local_shape": list(local.shape),
            "base_weights": base_digest(pl_module.policy.model), "adapters": adapters_digest(pl_module.policy.model),
            "adapters_at_start": self.adapters_at_start,
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class StepLog(L.Callback):
    """Appends every training step (examples, scalars) and validation to ``out/rank<r>.jsonl`` as it happens."""

    def __init__(self, out: str):
        self.out = Path(out)

    def _write(self, trainer, record):
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / f"rank{trainer.global_rank}.jsonl").open("a") as log:
            log.write(json.dumps(record) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if not k.startswith(("time/", "throughput/", "val/"))}
        self._write(trainer, {"step": trainer.global_step, "prompts": batch.prompt, "questions": batch.qa_problem,
                              "metrics": metrics})

    def on_validation_end(self, trainer, pl_module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self._write(trainer, {"validation_at": trainer.global_step, "metrics": metrics})

    def on_train_end(self, trainer, pl_module):
        digest = weights_digest(pl_module.policy.model)
        (self.out / f"rank{trainer.global_rank}.weights").write_text(digest)


class KillAt(L.Callback):
    """SIGKILLs the run's process group (as a preempting scheduler does: data workers, other ranks) when step
    ``step`` is about to start, right after the last checkpoint was written."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.killpg(os.getpgrp(), signal.SIGKILL)


class SignalAt(L.Callback):
    """Sends ``signal`` to this process as step ``step`` starts, the way a scheduler warns before preempting."""

    def __init__(self, step: int, signal: str = "SIGTERM"):
        self.step, self.signal = step, getattr(signal_module, signal)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


def constant_for_counting(completions, qa_problem, **columns):
    """A text reward with no advantage on counting questions (the same for every answer), for dynamic sampling."""
    return [1.0 if "How many" in q else float(len(c) % 5) for c, q in zip(completions, qa_problem, strict=True)]
