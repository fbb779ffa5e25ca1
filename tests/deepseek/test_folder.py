"""Whole DeepSeek folders: the files the janus package reads, and corl reading them wherever it loads a model."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from corl.checkpoints import export
from corl.models import load_model
from corl.modules.loading import load_janus, load_processor
from corl.modules.tiny import build_tiny_janus

QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which shape is red?"}]}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, processor = build_tiny_janus(seed=5)
    root = tmp_path_factory.mktemp("folders")
    deepseek = export(model, processor, root / "deepseek", "deepseek")
    return model, processor, deepseek, export(model, processor, root / "hf")


def read(folder, name):
    return json.loads((folder / name).read_text(encoding="utf-8"))


def test_the_folder_holds_what_vlchatprocessor_and_multimodalitycausallm_read(tiny):
    model, processor, folder, _ = tiny
    assert read(folder, "config.json")["model_type"] == "multi_modality"
    assert read(folder, "processor_config.json") == {
        "add_special_token": False, "ignore_id": -100, "image_tag": "<image_placeholder>", "mask_prompt": True,
        "num_image_tokens": 64, "processor_class": "VLChatProcessor", "sft_format": "deepseek"}
    images = read(folder, "preprocessor_config.json")
    assert images["image_processor_type"] == "VLMImageProcessor" and images["image_size"] == 64
    assert images["image_mean"] == images["image_std"] == [0.5, 0.5, 0.5]
    assert images["background_color"] == [127, 127, 127]
    assert read(folder, "tokenizer_config.json")["tokenizer_class"] == "LlamaTokenizerFast"
    specials = read(folder, "special_tokens_map.json")
    assert specials["pad_token"] == "<｜▁pad▁｜>" and "<|Assistant|>" in specials["additional_special_tokens"]
    merges = read(folder, "tokenizer.json")["model"]["merges"]
    assert merges and all(isinstance(m, str) and len(m.split(" ")) == 2 for m in merges), \
        "BPE merges as 'a b' strings: the janus package's tokenizers 0.15 reads no other form"
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        assert weights.metadata() == {"format": "pt"}  # transformers 4, which the janus package pins, needs it


def test_a_deepseek_folder_loads_as_the_model_and_processor_it_was_written_from(tiny):
    model, processor, folder, _ = tiny
    loaded, read_processor = load_janus(str(folder))
    state = model.state_dict()
    assert all(torch.equal(loaded.state_dict()[k], state[k]) for k in state)
    text = "a red circle above a blue square"
    assert read_processor.tokenizer(text).input_ids == processor.tokenizer(text).input_ids  # BOS first, as Janus
    assert (read_processor.apply_chat_template(QUESTION, add_generation_prompt=True)
            == processor.apply_chat_template(QUESTION, add_generation_prompt=True))
    assert read_processor.num_image_tokens == processor.num_image_tokens
    assert read_processor.image_processor.size == processor.image_processor.size
    assert load_processor(str(folder))[1] == 64  # corl prompt reads it too
    assert load_janus(str(folder), "bfloat16")[0].dtype == torch.bfloat16


def test_the_releases_pytorch_model_bin_loads_too(tiny, tmp_path):
    model, _, folder, _ = tiny
    for file in folder.iterdir():
        if file.name != "model.safetensors":
            (tmp_path / file.name).write_bytes(file.read_bytes())
    torch.save(load_file(folder / "model.safetensors"), tmp_path / "pytorch_model.bin")
    loaded, _ = load_janus(str(tmp_path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_folder_of_another_model_or_with_wrong_weights_is_refused_by_name(tiny, tmp_path):
    _, _, folder, _ = tiny
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "architectures": ["LlavaForX"]}))
    with pytest.raises(ValueError, match=r"model_type 'llava' model \(architectures \['LlavaForX'\]\), not Janus"):
        load_janus(str(tmp_path))
    for file in folder.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    state = load_file(folder / "model.safetensors")
    state.pop("gen_head.vision_head.bias")
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"do not fit its config.json: missing \['model.generation_head.vision_head"):
        load_janus(str(tmp_path))


def test_model_and_init_from_take_a_deepseek_folder(tiny):
    from corl.modules.corl_module import CoRLModule
    from corl.modules.rewards import TextReward

    model, _, folder, _ = tiny
    state = model.state_dict()
    for settings in ({"model": str(folder)}, {"model": "tiny", "init_from": str(folder)}):
        module = CoRLModule(**settings, text_rewards=[TextReward("format")], group_size=2)
        assert all(torch.equal(module.policy.model.state_dict()[k], state[k]) for k in state), settings
    assert all(torch.equal(load_model(folder)[0].state_dict()[k], state[k]) for k in state)
