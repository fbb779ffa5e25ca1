import pytest
import torch
from PIL import Image

from corl.modules.rewards import GeneratedImages
from corl.modules.rewards.hf_captioner import HFCaptioner

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
WORDS += "a an the picture photo of red green blue circle square triangle on white black background".split()


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory):
    """A tiny random BLIP captioner and its processor (BERT tokenizer, 32 px images), saved like a hub download."""
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("blip")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), bos_token="[DEC]", model_max_length=32)
    ids = {word: i for i, word in enumerate(WORDS)}
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(WORDS),
            hidden_size=32,
            encoder_hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=ids["[DEC]"],
            eos_token_id=ids["[SEP]"],
            sep_token_id=ids["[SEP]"],
            pad_token_id=ids["[PAD]"],
            initializer_range=0.5,
        ),
        # Large initializer ranges (BLIP's vision default is 1e-10) so that random captions depend on the image.
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            initializer_range=0.5,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def samples(images):
    n = len(images)
    return GeneratedImages(images, [Image.new("RGB", (8, 8))] * n, [""] * n, torch.zeros(n, 4, dtype=torch.long),
                           reader=None)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(7, 3, 48, 40, generator=generator) * 2 - 1


def test_one_caption_per_image_across_batches(blip_folder, images):
    captioner = HFCaptioner(path=str(blip_folder), max_tokens=6, batch_size=3)
    captions = captioner(samples(images))
    assert len(captions) == 7 and all(isinstance(c, str) for c in captions)
    assert all(c == c.strip() and "[" not in c for c in captions)  # special tokens skipped, stripped
    assert all(len(c.split()) <= 6 for c in captions) and len(set(captions)) > 1  # max_tokens; images matter
    # Batching does not change a caption: one batch of 7 gives the same list as batches of 3.
    assert HFCaptioner(path=str(blip_folder), max_tokens=6, batch_size=7)(samples(images)) == captions


def test_greedy_captions_are_deterministic(blip_folder, images):
    captioner = HFCaptioner(path=str(blip_folder), max_tokens=6, batch_size=4)
    first = captioner(samples(images))
    model = captioner._model
    assert captioner(samples(images)) == first
    captioner.setup()
    assert captioner._model is model  # loaded once


def test_conditional_prompt_is_not_repeated_in_the_caption(blip_folder, images):
    captioner = HFCaptioner(path=str(blip_folder), max_tokens=4, batch_size=4, prompt="A picture of")
    captions = captioner(samples(images))
    assert len(captions) == 7 and all(len(c.split()) <= 4 for c in captions)
    assert not any(c.startswith("a picture of") for c in captions)  # BLIP echoes the prompt; it is removed
    assert captioner._echo == "a picture of"


def test_missing_folder_fails_at_setup_with_advice(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope does not exist.*hf download Salesforce/blip"):
        HFCaptioner(path=str(tmp_path / "nope")).setup()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        HFCaptioner(path=str(tmp_path)).setup()


def test_dtype_sets_the_weights_dtype(blip_folder, images):
    captioner = HFCaptioner(path=str(blip_folder), max_tokens=3, batch_size=4, dtype="bfloat16")
    assert len(captioner(samples(images))) == 7
    assert captioner._model.dtype == torch.bfloat16


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="float32"):
        HFCaptioner(path="x", dtype="float64")
