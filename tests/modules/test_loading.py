import json

import pytest

from corl.checkpoints import export
from corl.modules.loading import check_processor, load_janus, on_hub
from corl.modules.tiny import build_tiny_janus


def test_missing_folder_is_explained(tmp_path):
    missing = tmp_path / "nothing-here"
    with pytest.raises(FileNotFoundError, match=f"no Janus weights at {missing} .*`hf download "
                       f"deepseek-community/Janus-Pro-1B --local-dir {missing}`"):
        load_janus(str(missing))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_janus(str(tmp_path))  # a folder without a model


def test_a_relative_folder_is_never_taken_for_a_hub_id(monkeypatch, tmp_path):
    # checkpoints/Janus-Pro-1B has two path parts, like a hub id: it is one only where the hub knows it.
    monkeypatch.chdir(tmp_path)
    asked = []
    monkeypatch.setattr("corl.modules.loading.on_hub", lambda name: asked.append(name) or False)
    with pytest.raises(FileNotFoundError, match="--local-dir checkpoints/Janus-Pro-1B`"):
        load_janus("checkpoints/Janus-Pro-1B")
    assert asked == ["checkpoints/Janus-Pro-1B"]


def test_the_hub_is_asked_once_and_never_offline(monkeypatch):
    calls = []
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", lambda self, repo, timeout: calls.append((repo, timeout)))
    assert on_hub("deepseek-community/Janus-Pro-1B") and calls == [("deepseek-community/Janus-Pro-1B", 5)]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not on_hub("deepseek-community/Janus-Pro-1B") and len(calls) == 1  # offline: not even asked


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype"):
        load_janus("tiny", dtype="float8")


def test_processor_that_does_not_fit_the_model_is_refused():
    model, processor = build_tiny_janus(image_size=32, patch_size=8)
    check_processor(model, processor, "tiny")  # the embedded pair fits
    processor.num_image_tokens = 10
    with pytest.raises(ValueError, match="expands an image to 10 tokens, the model uses 16"):
        check_processor(model, processor, "x")
    processor.num_image_tokens = 16
    model.config.image_token_id = 100
    with pytest.raises(ValueError, match="image token has id"):
        check_processor(model, processor, "x")
    model.config.image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    processor.tokenizer.add_tokens([f"<extra_{i}>" for i in range(50)])
    with pytest.raises(ValueError, match=r"tokenizer has \d+ tokens, the model.s vocabulary only"):
        check_processor(model, processor, "x")


def test_a_folder_whose_processor_disagrees_fails_at_load(tmp_path):
    model, processor = build_tiny_janus(image_size=32, patch_size=8)
    export(model, processor, tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    config["num_image_tokens"] = 9
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match"):
        load_janus(str(tmp_path))


def test_the_warm_start_is_not_built_from_below_the_catalogue():
    with pytest.raises(ValueError, match="tiny-warm is built on first use by corl.models.load_named"):
        load_janus("tiny-warm")
