import json

import lightning as L
import pytest
import torch

from corl.models import load_named
from corl.modules.loading import load_janus
from corl.modules.tiny import JanusSizes
from corl.warm import build
from corl.warm.build import WarmRecipe, fingerprint, warm_folder

# A warm start small enough to build in seconds: 32 px scenes, 16 image tokens, a few steps of each phase.
SMALL = WarmRecipe(
    sizes=JanusSizes(image_size=32, patch_size=8, vq_base_channels=64, vq_res_blocks=0, codebook_size=256),
    vq_steps=4, vq_batch_size=4, sft_steps=3, sft_batch_size=2, t2i_steps=2, t2i_batch_size=2,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CORL_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture
def built(cache):
    return warm_folder(0, SMALL)


def weights(folder):
    return load_janus(str(folder))[0].state_dict()


def test_a_build_is_cached_and_loads_as_a_model(built, monkeypatch):
    stats = json.loads((built / "warm.json").read_text())
    assert stats["seed"] == 0 and stats["recipe"]["sft_steps"] == 3
    assert 0 <= stats["vq"]["held_out_scene"]["scene/shape"] <= 1
    assert stats["vq"]["held_out_error"] > 0 and len(stats["sft"]["losses_every_10_steps"]) == 1
    assert set(stats["t2i"]["losses_every_10_steps"][0]) == {"sft/image_loss", "sft/loss"}  # images alone
    monkeypatch.setattr(build, "build_warm", lambda *a: pytest.fail("a cached warm start is built again"))
    assert warm_folder(0, SMALL) == built
    model, processor = load_janus(str(built))
    assert model.config.vision_config.num_image_tokens == 16 == processor.num_image_tokens
    assert sorted(p.name for p in built.parent.iterdir()) == sorted([built.name, built.name + ".lock"])


def test_tiny_warm_names_the_default_recipe(built, monkeypatch):
    monkeypatch.setattr(build, "RECIPE", SMALL)
    model, _ = load_named("tiny-warm", seed=0)
    reference = weights(built)
    assert all(torch.equal(value, reference[name]) for name, value in model.state_dict().items())


def test_the_same_seed_builds_the_same_weights_and_another_seed_others(built, cache):
    again = build.cache_root() / "again"
    build.build_warm(again, 0, SMALL)
    other = warm_folder(1, SMALL)
    first, second, third = weights(built), weights(again), weights(other)
    assert all(torch.equal(value, second[name]) for name, value in first.items())
    assert not all(torch.equal(value, third[name]) for name, value in first.items())


def test_the_warm_start_trains_the_vq_and_the_sft_changes_the_llm(built):
    from corl.modules.tiny import build_tiny_janus

    random = build_tiny_janus(SMALL.sizes, seed=0)[0].state_dict()
    warm = weights(built)
    changed = {name for name, value in warm.items() if not torch.equal(value, random[name])}
    assert any(name.startswith("model.vqmodel.") for name in changed)
    assert any(name.startswith("model.language_model.") for name in changed)
    assert any(name.startswith("model.vision_model.") for name in changed), "the random vision tower learns"


def test_the_cache_key_follows_recipe_seed_and_source(monkeypatch):
    key = fingerprint(SMALL, 0)
    assert key == fingerprint(SMALL, 0)
    assert key != fingerprint(SMALL, 1)
    assert key != fingerprint(WarmRecipe(), 0)
    monkeypatch.setattr(build, "_SOURCES", build._SOURCES[1:])  # as if one source file changed
    assert key != fingerprint(SMALL, 0)


def test_a_failed_build_leaves_nothing_that_looks_finished(cache, monkeypatch):
    def dies(out, seed, recipe):
        (out / "model.safetensors").write_text("half")
        raise RuntimeError("killed")

    monkeypatch.setattr(build, "build_warm", dies)
    with pytest.raises(RuntimeError, match="killed"):
        warm_folder(0, SMALL)
    assert [p.name for p in (cache / "warm").iterdir() if not p.name.endswith(".lock")] == []


def test_the_first_use_builds_from_inside_a_lightning_cli_module(cache, monkeypatch):
    from lightning.pytorch.cli import LightningCLI

    class Probe(L.LightningModule):
        def __init__(self, name: str = "tiny-warm") -> None:
            super().__init__()
            self.save_hyperparameters()
            self.janus = load_named(name, seed=0)[0]

    monkeypatch.setattr(build, "RECIPE", SMALL)
    cli = LightningCLI(Probe, run=False, args=["--trainer.logger", "false"], save_config_callback=None)
    assert cli.model.hparams.name == "tiny-warm"
    assert (warm_folder(0, SMALL) / "warm.json").is_file()
