"""A few dozen GRPO steps on the tiny model raise a simple verifiable reward, for each task alone."""

import lightning as L

from corl.data.datamodule import ExampleDataModule
from corl.modules.corl_module import CoRLModule
from corl.modules.rewards import ImageReward, TextReward


class LowCodes(ImageReward):
    """Share of image tokens from the lower half of the VQ codebook: verifiable from the tokens alone."""

    default_name = "low_codes"

    def __call__(self, samples):
        assert samples.images.shape[0] == samples.tokens.shape[0] == len(samples.real_photos) == len(samples)
        assert samples.policy is not None
        return (samples.tokens < 128).float().mean(dim=1)


def vowel_fraction(completions, **columns):
    """Share of characters that are vowels."""
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


def train(module: CoRLModule, steps: int, make_trainer) -> list[float]:
    trainer, metrics = make_trainer(steps)
    trainer.fit(module, ExampleDataModule(batch_size=2, length=512, image_size=64))
    return metrics.values("reward/total/mean")


def settings(**kwargs):
    base = dict(model="tiny", group_size=8, lr=1e-2, micro_batch_size=16, log_media_every_n_steps=0,
                max_completion_tokens=8, cfg_weight=2.0)
    return {**base, **kwargs}


def test_text_grpo_raises_a_verifiable_reward(quiet_trainer):
    L.seed_everything(0)
    module = CoRLModule(**settings(text_rewards=[TextReward(vowel_fraction)]))
    values = train(module, 40, quiet_trainer)
    start, end = sum(values[:5]) / 5, sum(values[-5:]) / 5
    assert end > start + 0.2, (start, end)
    assert module.policy.image_logprob_mode == "cfg"


def test_image_grpo_raises_a_verifiable_reward(quiet_trainer):
    L.seed_everything(0)
    module = CoRLModule(**settings(image_rewards=[LowCodes()]))
    values = train(module, 30, quiet_trainer)
    start, end = sum(values[:5]) / 5, sum(values[-5:]) / 5
    assert end - start > 0.6 * (1.0 - start), (start, end)  # most of the way from the start to the maximum, 1
