"""Every model corl can start from, by name or path: the catalogue above loading, checkpoints and the warm start.

``corl.modules.loading`` reads model folders and builds the embedded tiny models; it never trains.
The warm-started ``tiny-warm`` is made by supervised fine-tuning on first use (``corl.warm.build``),
and a corl checkpoint is rebuilt as the run that wrote it built its model, which may be ``tiny-warm``:
both need training code, so they are resolved here, a layer above it, and nothing below imports this.
"""

from __future__ import annotations

from pathlib import Path

from corl.checkpoints import is_exported_folder, load_state, read_checkpoint
from corl.modules.loading import load_janus
from corl.names import TINY_WARM


def load_named(model: str, dtype: str = "float32", seed: int = 0):
    """``(JanusForConditionalGeneration, JanusProcessor)`` of a ``model.model`` setting.

    ``tiny-warm`` is the embedded model taught the procedural world: built on first use (a few
    minutes on a CPU), then cached (``corl.warm.build``); any other name or folder is
    ``corl.modules.loading.load_janus``'s.
    """
    if model == TINY_WARM:
        from corl.warm.build import warm_folder

        model = str(warm_folder(seed))
    return load_janus(model, dtype, seed)


def load_model(path: str | Path, dtype: str = "float32"):
    """``(model, processor)`` from a corl checkpoint (built as its run built it) or an exported folder."""
    path = Path(path)
    if is_exported_folder(path):
        return load_janus(str(path), dtype)
    state, hparams = read_checkpoint(path)
    model, processor = load_named(hparams.get("model", "tiny"), dtype, hparams.get("seed", 0))
    load_state(model, state, str(path))
    return model, processor
