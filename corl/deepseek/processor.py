"""The processor files of DeepSeek's layout, which ``VLChatProcessor.from_pretrained`` reads.

``processor_config.json`` (VLChatProcessor's own settings), ``preprocessor_config.json``
(``VLMImageProcessor``: pad to a square with the background colour, resize, normalise), and a fast
Llama tokenizer (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``). corl reads
them back into transformers' ``JanusProcessor`` with the chat template of transformers' conversion.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer
from transformers import JanusImageProcessor, JanusProcessor, PreTrainedTokenizerFast

from corl.modules.tiny import ADDITIONAL_TOKENS, CHAT_TEMPLATE, IMAGE_TOKENS, add_bos

MAX_LENGTH = 16384  # Janus-Pro's model_max_length (its LLM's max_position_embeddings)


def write_processor(processor: JanusProcessor, out: Path) -> None:
    """Write ``processor`` as DeepSeek's five processor and tokenizer files into ``out``."""
    images, tokenizer = processor.image_processor, processor.tokenizer
    specials = {name: getattr(tokenizer, name) for name in ("bos_token", "eos_token", "pad_token")}
    vocab = tokenizer.get_vocab()
    additional = [token for token in (processor.image_token, *ADDITIONAL_TOKENS) if token in vocab]
    files = {
        "processor_config.json": {
            "add_special_token": False, "ignore_id": -100, "image_tag": processor.image_token, "mask_prompt": True,
            "num_image_tokens": processor.num_image_tokens, "processor_class": "VLChatProcessor",
            "sft_format": "deepseek",
        },
        "preprocessor_config.json": {
            "background_color": list(images.background_color), "do_normalize": images.do_normalize,
            "image_mean": list(images.image_mean), "image_processor_type": "VLMImageProcessor",
            "image_size": images.size["height"], "image_std": list(images.image_std), "min_size": images.min_size,
            "processor_class": "VLChatProcessor", "rescale_factor": images.rescale_factor,
        },
        "tokenizer_config.json": {
            "add_bos_token": True, "add_eos_token": False, **specials, "clean_up_tokenization_spaces": False,
            "legacy": True, "model_max_length": MAX_LENGTH, "tokenizer_class": "LlamaTokenizerFast",
            "unk_token": None, "use_default_system_prompt": True,
        },
        "special_tokens_map.json": {**specials, "additional_special_tokens": additional},
    }
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "tokenizer.json").write_text(_old_style_merges(tokenizer.backend_tokenizer.to_str()), encoding="utf-8")


def read_processor(folder: Path) -> JanusProcessor:
    """The transformers ``JanusProcessor`` of a DeepSeek folder: its tokenizer, image settings and image count."""
    settings = _read(folder, "processor_config.json")
    images = _read(folder, "preprocessor_config.json")
    specials = {name: _content(value) for name, value in _read(folder, "special_tokens_map.json").items()
                if name in ("bos_token", "eos_token", "pad_token")}
    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    if _read(folder, "tokenizer_config.json").get("add_bos_token", True):  # LlamaTokenizerFast's default
        add_bos(backend, specials["bos_token"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, **specials, padding_side="left", chat_template=CHAT_TEMPLATE,
        extra_special_tokens={**IMAGE_TOKENS, "image_token": settings.get("image_tag", IMAGE_TOKENS["image_token"])},
    )
    size = images["image_size"]
    image_processor = JanusImageProcessor(
        size={"height": size, "width": size}, min_size=images.get("min_size", 14),
        image_mean=images["image_mean"], image_std=images["image_std"],
        rescale_factor=images.get("rescale_factor", 1 / 255), do_normalize=images.get("do_normalize", True),
        background_color=tuple(images.get("background_color", (127, 127, 127))), do_convert_rgb=True,
    )
    return JanusProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE, use_default_system_prompt=True,
                          num_image_tokens=settings.get("num_image_tokens", 576))


def _old_style_merges(tokenizer_json: str) -> str:
    """``tokenizer.json`` with BPE merges as "a b" strings, the form tokenizers < 0.20 reads.

    The janus package pins transformers 4.38, whose tokenizers (0.15) fails on the pairs newer versions
    write ("data did not match any variant of untagged enum ModelWrapper"); every version reads strings.
    A merge with a space in one of its parts has no string form, so then the file is left as it is.
    """
    content = json.loads(tokenizer_json)
    merges = content.get("model", {}).get("merges")
    if merges and all(isinstance(m, list) and not any(" " in part for part in m) for m in merges):
        content["model"]["merges"] = [" ".join(m) for m in merges]
    return json.dumps(content, ensure_ascii=False, indent=2)


def _read(folder: Path, name: str) -> dict:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is in DeepSeek's Janus layout but has no {name} (copy it from the "
                                "download the weights came from)")
    return json.loads(path.read_text(encoding="utf-8"))


def _content(token: str | dict) -> str:
    """special_tokens_map.json holds a token as its text or as an AddedToken's fields."""
    return token["content"] if isinstance(token, dict) else token
