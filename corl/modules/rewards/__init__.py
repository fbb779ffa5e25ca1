"""Rewards: text rewards as TRL-convention functions, image rewards as classes that load once."""

from corl.modules.rewards.base import TEXT_REWARDS, GeneratedImages, ImageReward, TextReward
from corl.modules.rewards.consistency import ImageConsistencyReward
from corl.modules.rewards.text import accuracy_reward, format_reward, mcq_accuracy_reward, oe_accuracy_reward

__all__ = [
    "TEXT_REWARDS",
    "GeneratedImages",
    "ImageConsistencyReward",
    "ImageReward",
    "TextReward",
    "accuracy_reward",
    "format_reward",
    "mcq_accuracy_reward",
    "oe_accuracy_reward",
]
