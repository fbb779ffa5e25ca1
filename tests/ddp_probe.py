"""A callback for the two-process test: each rank writes its weights' digest and the prompts it scored."""

import hashlib
import json
from pathlib import Path

import lightning as L


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


class RankProbe(L.Callback):
    def __init__(self, out: str):
        self.out = Path(out)
        self.prompts = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.prompts.append(list(batch.prompt))

    def on_train_end(self, trainer, pl_module):
        self.out.mkdir(parents=True, exist_ok=True)
        record = {"weights": weights_digest(pl_module.policy.model), "prompts": self.prompts,
                  "world_size": trainer.world_size, "group_size": pl_module.hparams.group_size}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
