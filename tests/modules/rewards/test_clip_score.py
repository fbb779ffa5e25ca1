import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from corl.modules.rewards import ClipScoreReward, GeneratedImages

TINY = "corl-tiny-clip"  # registered with open_clip below; keeps the default CLIP BPE tokenizer (no download)
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PROMPTS = ["a red circle", "two blue squares on a white background", "a green triangle", "a cat"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder / f"{TINY}.json")
    torch.manual_seed(123)
    model = open_clip.create_model(TINY)
    path = folder / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


@pytest.fixture(scope="module")
def reward(tiny_checkpoint):
    reward = ClipScoreReward(model=TINY, checkpoint=str(tiny_checkpoint[0]))
    reward.setup()
    return reward


def samples(images, prompts):
    tokens = torch.zeros(len(prompts), 4, dtype=torch.long)
    return GeneratedImages(images, [Image.new("RGB", (8, 8))] * len(images), list(prompts), tokens, reader=None)


def test_scores_have_one_value_per_image_in_unit_range(reward):
    images = torch.rand(4, 3, 48, 48) * 2 - 1
    scores = reward(samples(images, PROMPTS))
    assert scores.shape == (4,) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()
    cosine = reward.similarity(images, PROMPTS)
    torch.testing.assert_close(scores, cosine.clamp(min=0))  # max(0, cos), nothing else


def test_an_image_scores_the_same_alone_and_inside_a_batch(reward):
    images = torch.rand(4, 3, 40, 40) * 2 - 1
    batch = reward.similarity(images, PROMPTS)
    for i in range(4):
        alone = reward.similarity(images[i : i + 1], PROMPTS[i : i + 1])
        torch.testing.assert_close(alone, batch[i : i + 1], rtol=1e-5, atol=1e-5)


def test_weights_come_from_the_checkpoint(reward, tiny_checkpoint):
    saved = tiny_checkpoint[1]
    loaded = reward._model.state_dict()
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)


def test_device_preprocessing_matches_open_clips_pil_transform(reward):
    """Same pixels as open_clip's own inference transform (resize shortest side, centre crop, normalise)."""
    _, _, transform = open_clip.create_model_and_transforms(TINY)
    for shape in [(56, 44), (44, 56), (384, 384)]:  # smooth images, as generated ones are
        smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 6, 6), size=shape, mode="bilinear")
        pixels = (smooth * 255).round().to(torch.uint8)
        ours = reward.preprocess(pixels.float() / 127.5 - 1)
        reference = torch.stack([transform(Image.fromarray(p.permute(1, 2, 0).numpy())) for p in pixels])
        assert ours.shape == reference.shape == (2, 3, 32, 32)
        # PIL resizes in 8 bits; one grey level is 1/255/std ~ 0.015 after normalisation.
        assert (ours - reference).abs().max() < 0.03, shape
    # At the model's own size nothing is resampled, so the features match the PIL path exactly.
    exact = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    reference = transform(Image.fromarray(np.ascontiguousarray(exact[0].permute(1, 2, 0).numpy())))
    torch.testing.assert_close(reward.preprocess(exact.float() / 127.5 - 1)[0], reference, rtol=0, atol=1e-5)


def test_missing_checkpoint_fails_at_setup_with_advice(tmp_path):
    reward = ClipScoreReward(model=TINY, checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*never downloads.*hf download"):
        reward.setup()


def test_models_that_need_a_hub_tokenizer_are_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="Hugging Face hub tokenizer"):
        ClipScoreReward(model="ViT-B-16-SigLIP", checkpoint=str(tiny_checkpoint[0])).setup()


def test_unknown_pretrained_tag_is_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="no pretrained tag"):
        ClipScoreReward(model="ViT-B-32", checkpoint=str(tiny_checkpoint[0]), pretrained_tag="nope").setup()
