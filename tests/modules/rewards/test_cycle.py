import pytest
import torch
from pycocoevalcap.cider.cider import Cider

from corl.data.images import photo_pixels
from corl.modules.rewards import (
    CiderD,
    CycleConsistencyReward,
    GeneratedImages,
    ImageConsistencyReward,
    SelfCaptioner,
)
from corl.modules.rewards.caption_metrics import CaptionMetric, simple_tokenize
from corl.modules.rewards.captioners import Captioner

CANDIDATES = ["a red circle on a white background", "A blue square.", "a red circle", "two green triangles",
              "a yellow square on a gray background"]
REFERENCES = ["a red circle on a white background", "a blue square and a red circle", "a red circle on black",
              "a green triangle", "a yellow square on a gray background"]


def test_cider_d_agrees_with_pycocoevalcap():
    ours = CiderD()(CANDIDATES, REFERENCES)
    gts = {i: [simple_tokenize(r)] for i, r in enumerate(REFERENCES)}
    res = {i: [simple_tokenize(c)] for i, c in enumerate(CANDIDATES)}
    _, theirs = Cider().compute_score(gts, res)
    torch.testing.assert_close(ours, torch.tensor(theirs, dtype=torch.float32).div(10).clamp(0, 1))
    assert ours[0] > ours[2] > 0  # exact match beats partial overlap


def test_cider_d_is_unchanged_by_group_repetition():
    once = CiderD()(CANDIDATES, REFERENCES)
    twice = CiderD()([c for c in CANDIDATES for _ in range(2)], [r for r in REFERENCES for _ in range(2)])
    torch.testing.assert_close(twice[::2], once)


def test_simple_tokenize():
    assert simple_tokenize("A Red-circle, on the  table.") == "a red circle on the table"


def test_self_captioner_gives_one_greedy_caption_per_image(tiny_policy, photos):
    policy = tiny_policy()
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    samples = GeneratedImages(images, photos(5), ["p"] * 5, torch.zeros(5, 16, dtype=torch.long), policy.reader)
    captioner = SelfCaptioner(max_tokens=6, batch_size=2)  # 3 batches
    captions = captioner(samples)
    assert len(captions) == 5 and all(isinstance(c, str) for c in captions)
    assert captioner(samples) == captions  # greedy: deterministic
    with pytest.raises(ValueError, match="needs the policy"):
        captioner(GeneratedImages(images, samples.real_photos, ["p"] * 5, samples.tokens, None))


class FixedCaptions(Captioner):
    def __init__(self, captions):
        self.captions = captions

    def __call__(self, samples):
        return self.captions[: len(samples)]


class Halves(CaptionMetric):
    def __call__(self, candidates, references):
        return torch.tensor([0.5 if c else float("nan") for c in candidates])


def test_cycle_is_the_mean_of_the_scored_halves(photos):
    real = photos(3)
    generated = torch.cat([photo_pixels(real[0], 64)[None], torch.rand(2, 3, 64, 64) * 2 - 1])
    similarity = ImageConsistencyReward(random_trunk=True, resolution=64)
    reward = CycleConsistencyReward(similarity, FixedCaptions(["x", "y", ""]), Halves())
    reward.setup()
    samples = GeneratedImages(generated, real, ["a", "b", "c"], torch.zeros(3, 4, dtype=torch.long))
    scored = reward.scored(samples)
    values = scored.values
    image_half = similarity(samples)
    assert values[0].item() == pytest.approx((1.0 + 0.5) / 2)  # identical image: LPIPS term is 1
    assert values[1].item() == pytest.approx((image_half[1].item() + 0.5) / 2)
    # The caption metric could not score the third: R_cycle is its LPIPS half alone, not NaN or half of it.
    assert values[2].item() == pytest.approx(image_half[2].item())
    assert scored.captions == ["x", "y", ""]
    torch.testing.assert_close(reward(samples), values)


def test_cycle_with_real_parts_on_the_tiny_policy(tiny_policy, photos):
    policy = tiny_policy()
    real = photos(4)
    images = torch.stack([photo_pixels(p, 64) for p in real])
    prompts = ["a red circle", "a red circle", "a blue square", "a blue square"]
    reward = CycleConsistencyReward(ImageConsistencyReward(random_trunk=True, resolution=64),
                                    SelfCaptioner(max_tokens=8), CiderD())
    reward.setup()
    scored = reward.scored(GeneratedImages(images, real, prompts, torch.zeros(4, 16, dtype=torch.long), policy.reader))
    values = scored.values
    assert values.shape == (4,) and ((values >= 0.5) & (values <= 1)).all()  # identical images: >= 1/2
    assert len(scored.captions) == 4
