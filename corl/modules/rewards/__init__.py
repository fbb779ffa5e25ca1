"""Rewards: text rewards as TRL-convention functions, image rewards as classes that load once."""

from corl.modules.rewards.base import TEXT_REWARDS, GeneratedImages, ImageReader, ImageReward, RewardScore, TextReward
from corl.modules.rewards.caption_metrics import CaptionMetric, CiderD
from corl.modules.rewards.captioners import Captioner, SelfCaptioner
from corl.modules.rewards.clip_score import ClipScoreReward
from corl.modules.rewards.consistency import ImageConsistencyReward
from corl.modules.rewards.cycle import CycleConsistencyReward
from corl.modules.rewards.hf_captioner import HFCaptioner
from corl.modules.rewards.matching import TextImageMatchingReward
from corl.modules.rewards.scene import SceneReward
from corl.modules.rewards.spice import Spice
from corl.modules.rewards.text import accuracy_reward, format_reward, mcq_accuracy_reward, oe_accuracy_reward

__all__ = [
    "TEXT_REWARDS",
    "CaptionMetric",
    "Captioner",
    "CiderD",
    "ClipScoreReward",
    "CycleConsistencyReward",
    "GeneratedImages",
    "HFCaptioner",
    "ImageConsistencyReward",
    "ImageReader",
    "ImageReward",
    "RewardScore",
    "SceneReward",
    "SelfCaptioner",
    "Spice",
    "TextImageMatchingReward",
    "TextReward",
    "accuracy_reward",
    "format_reward",
    "mcq_accuracy_reward",
    "oe_accuracy_reward",
]
