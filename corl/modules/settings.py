"""Checks of the module's settings, so a bad value stops the run at start with the setting's name.

Without them a bad value fails much later, deep inside torch (a division by a zero-size group, an
empty range of micro-batches) or, worse, trains something else than was asked for.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, get_args

from corl.modules.decode_weights import DecodeWeightsMode
from corl.modules.decoding import DecodeMode
from corl.modules.grpo import AdvantageScale, Aggregation, ImportanceLevel
from corl.modules.logprobs import ImageLogprobMode
from corl.modules.optim import LRSchedule
from corl.modules.rollout import OldLogps

# The allowed values of each choice, read from the one type the signatures use.
CHOICES = {
    "advantage_scale": get_args(AdvantageScale),
    "aggregation": get_args(Aggregation),
    "importance_sampling_level": get_args(ImportanceLevel),
    "image_logprob_mode": get_args(ImageLogprobMode),
    "lr_schedule": get_args(LRSchedule),
    "decode": get_args(DecodeMode),
    "decode_weights": get_args(DecodeWeightsMode),
    "old_logps": get_args(OldLogps),
}
AT_LEAST_ONE = ("group_size", "micro_batch_size", "mu", "max_completion_tokens", "logprob_chunk_tokens")
NOT_NEGATIVE = ("beta", "eps_low", "eps_high", "image_temperature", "text_temperature", "weight_decay",
                "warmup_steps", "grad_clip", "advantage_eps", "max_skipped_steps", "alternate_every",
                "log_media_every_n_steps", "max_resample_rounds")


def check_choice(name: str, value: Any, choice: Any) -> None:
    """Raise ``ValueError`` naming the setting when ``value`` is not one of the ``Literal`` type ``choice``."""
    if value not in get_args(choice):
        raise ValueError(f"{name} must be one of {get_args(choice)}, got {value!r}")


def check_settings(settings: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming ``model.<setting>`` for the first value that cannot work."""
    for name, choices in CHOICES.items():
        if name in settings and settings[name] not in choices:
            raise ValueError(f"model.{name} must be one of {choices}, got {settings[name]!r}")
    for name, value in settings.items():
        numeric = name in AT_LEAST_ONE or name in NOT_NEGATIVE or name in ("lr", "cfg_weight", "text_weight")
        if numeric and (isinstance(value, bool) or not isinstance(value, Real)):
            raise ValueError(f"model.{name} must be a number, got {value!r}")
    for name in AT_LEAST_ONE:
        if name in settings and settings[name] < 1:
            raise ValueError(f"model.{name} must be at least 1, got {settings[name]}")
    for name in NOT_NEGATIVE:
        if name in settings and settings[name] < 0:
            raise ValueError(f"model.{name} must not be negative, got {settings[name]}")
    if settings.get("lr", 1.0) <= 0:
        raise ValueError(f"model.lr must be positive, got {settings['lr']}")
    if settings.get("advantage_scale") == "group" and settings.get("group_size", 2) < 2:
        raise ValueError(f"model.group_size is {settings['group_size']}: group-scaled advantages "
                         "(model.advantage_scale: group) compare at least 2 samples per example")
    if settings.get("eps_low", 0.2) >= 1:
        raise ValueError(f"model.eps_low must be below 1 (the ratio is clipped at 1 - eps_low), "
                         f"got {settings['eps_low']}")


def check_reward_weight(weight: Any, name: str) -> float:
    """A reward's weight as a float, or an error that names the reward."""
    if isinstance(weight, bool) or not isinstance(weight, Real):
        raise ValueError(f"the weight of reward {name!r} must be a number, got {weight!r}")
    return float(weight)
