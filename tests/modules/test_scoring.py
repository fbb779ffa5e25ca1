"""Scoring is one typed record: values, the weighted sums, each reward's time and the re-captions."""

import torch

from corl.data.procedural import ProceduralExamples
from corl.data.schema import collate_examples
from corl.modules.corl_module import CoRLModule
from corl.modules.rewards import ImageReward, RewardScore, TextReward
from corl.modules.scoring import score_rollout


class Recaptioned(ImageReward):
    """An image reward that re-captions, as the cycle reward does."""

    default_name = "recap"

    def __call__(self, samples):
        return self.scored(samples).values

    def scored(self, samples):
        return RewardScore(torch.ones(len(samples)), captions=[f"caption {i}" for i in range(len(samples))])


def test_a_rollout_scores_into_one_record_without_a_trainer():
    module = CoRLModule(model="tiny", group_size=2, max_completion_tokens=4, log_media_every_n_steps=0,
                        image_rewards=[Recaptioned(weight=2.0)], text_rewards=[TextReward("format", weight=0.5)],
                        text_weight=0.8)
    batch = collate_examples([ProceduralExamples(2, seed=3)[i] for i in range(2)])
    rollout = module.rollout(batch)
    scores = score_rollout(rollout, batch, module.policy, module.image_rewards, module.text_rewards, 0.8,
                           torch.device("cpu"))
    assert set(scores.seconds) == {"recap", "format"} and all(s >= 0 for s in scores.seconds.values())
    assert scores.captions == [f"caption {i}" for i in range(4)]
    torch.testing.assert_close(scores.values["image"], torch.full((4,), 2.0))
    torch.testing.assert_close(scores.values["total"], scores.values["image"] + 0.8 * 0.5 * scores.values["format"])
    assert list(scores.values) == ["recap", "format", "image", "text", "total"]
