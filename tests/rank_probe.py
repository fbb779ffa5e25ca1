"""A callback for the multi-process tests: each rank writes its weights' digest, prompts and ratios."""

import hashlib
import json
from pathlib import Path

import lightning as L


def weights_digest(model) -> str:
    """Digest of the whole weights; sharded (FSDP) tensors are gathered first, on every rank alike."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


class RankProbe(L.Callback):
    def __init__(self, out: str):
        self.out = Path(out)
        self.prompts = []
        self.ratios = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.prompts.append(list(batch.prompt))
        metrics = trainer.callback_metrics
        self.ratios.append({k: float(metrics[k]) for k in ("image/ratio", "text/ratio") if k in metrics})

    def on_train_end(self, trainer, pl_module):
        self.out.mkdir(parents=True, exist_ok=True)
        layer = pl_module.policy.llm.layers[0].mlp.up_proj.weight
        local = layer.to_local() if hasattr(layer, "to_local") else layer  # this rank's shard under FSDP
        record = {
            "weights": weights_digest(pl_module.policy.model), "prompts": self.prompts, "ratios": self.ratios,
            "world_size": trainer.world_size, "group_size": pl_module.hparams.group_size,
            "layer_shape": list(layer.shape), "layer_local_shape": list(local.shape),
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
