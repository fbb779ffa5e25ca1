"""The two reward interfaces: model-backed image rewards (classes) and text rewards (TRL functions)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

from corl.data.images import PhotoFit, photo_pixels
from corl.modules.rewards.text import accuracy_reward, format_reward, mcq_accuracy_reward, oe_accuracy_reward
from corl.modules.settings import check_reward_weight

TEXT_REWARDS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "mcq_accuracy": mcq_accuracy_reward,
    "oe_accuracy": oe_accuracy_reward,
}


class ImageReader(Protocol):
    """What rewards that read images with the policy get from it (``corl.modules.reading.PolicyReader``)."""

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Aligned vision features ``[R, N_img, D]`` of images ``[R, 3, H, W]`` in [-1, 1]."""

    def describe(self, features: torch.Tensor, instruction: str, max_tokens: int) -> list[str]:
        """Greedy captions of images given by their features."""

    def matching_states(self, features: torch.Tensor,
                        prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hidden states of (image, prompt) with the image and prompt spans."""


@dataclass
class GeneratedImages:
    """What an image reward scores: R generated images, row-aligned with their examples."""

    images: torch.Tensor  # [R, 3, H, W] decoded samples in [-1, 1], on the device
    real_photos: list[Image.Image]  # [R] the original real image of each row's example (shared by its group)
    prompts: list[str]  # [R] the prompt each image was generated from
    tokens: torch.Tensor  # [R, N] the sampled image tokens
    reader: ImageReader | None = None  # the policy's reading of images, for rewards that need it
    _features: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.prompts)

    def real_images(self, size: int, fit: PhotoFit = "crop") -> torch.Tensor:
        """``[R, 3, size, size]`` the real photos (``photo_pixels``) on the images' device, each converted once."""
        converted: dict[int, torch.Tensor] = {}
        for photo in self.real_photos:
            if id(photo) not in converted:
                converted[id(photo)] = photo_pixels(photo, size, fit)
        return torch.stack([converted[id(photo)] for photo in self.real_photos]).to(self.images.device)

    @torch.no_grad()
    def image_features(self) -> torch.Tensor:
        """``[R, N_img, D]``: the policy's vision features of the images, computed once for every reward."""
        if self.reader is None:
            raise ValueError("reading the generated images needs the policy's reader in GeneratedImages.reader")
        if self._features is None:
            self._features = self.reader.image_features(self.images)
        return self._features


@dataclass
class RewardScore:
    """One reward's scores of a batch, with what they are made of.

    ``parts`` are sub-scores ``[R]`` (NaN where one does not apply), logged as ``<name>/<part>`` beside the
    reward, so a run shows which part of it moves; ``captions`` are how a captioning reward read the
    images (shown beside them in TensorBoard).
    """

    values: torch.Tensor  # [R]
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    captions: list[str] | None = None


class ImageReward:
    """Scores a batch of generated images. Subclasses load their scorer once, lazily, on first use.

    Args:
        weight: the reward's weight in the image part of the total reward.
        name: how it is logged; defaults to the class's ``default_name``.
    """

    default_name = "image"

    def __init__(self, weight: float = 1.0, name: str | None = None) -> None:
        self.name = name or self.default_name
        self.weight = check_reward_weight(weight, self.name)

    def setup(self) -> None:
        """Load the scorer (once). The module calls this before training, so missing files fail at start."""

    def missing(self) -> list[str]:
        """The files or programs the reward needs that are absent, each with its fix; checked before loading."""
        return []

    def __call__(self, samples: GeneratedImages) -> torch.Tensor:
        """Rewards ``[R]``, one per generated image; NaN where an image cannot be scored."""
        raise NotImplementedError

    def scored(self, samples: GeneratedImages) -> RewardScore:
        """The rewards ``[R]`` with their parts and captions; most rewards have neither."""
        return RewardScore(self(samples))


class TextReward:
    """A text reward in the TRL convention, named in the YAML.

    Args:
        fn: a built-in name (``format``, ``accuracy``, ``mcq_accuracy``, ``oe_accuracy``), an import
            path ``package.module:function``, or the function ``fn(completions, **columns) -> list[float]``.
        weight: the reward's weight in the text part of the total reward (before lambda).
        name: how it is logged; defaults to ``fn``.
        kwargs: extra keyword arguments for the function, e.g. ``{"lenient": true}`` for accuracy.
    """

    def __init__(
        self,
        fn: str | Callable[..., list[float]],
        weight: float = 1.0,
        name: str | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.fn = resolve_text_reward(fn) if isinstance(fn, str) else fn
        self.name = name or (fn.rsplit(":", 1)[-1] if isinstance(fn, str) else fn.__name__)
        self.weight = check_reward_weight(weight, self.name)
        self.kwargs = dict(kwargs or {})

    def __call__(self, completions: Sequence[str], **columns: Sequence[Any]) -> torch.Tensor:
        """Rewards ``[R]`` as float32."""
        scores = self.fn(list(completions), **columns, **self.kwargs)
        if len(scores) != len(completions):
            raise ValueError(
                f"text reward {self.name!r} returned {len(scores)} scores for {len(completions)} completions"
            )
        return torch.tensor([float("nan") if s is None else float(s) for s in scores], dtype=torch.float32)

    def scored(self, completions: Sequence[str], **columns: Sequence[Any]) -> RewardScore:
        """The scores, as ``ImageReward.scored``: a text reward has no parts."""
        return RewardScore(self(completions, **columns))


def absent(check: Callable[[], object]) -> list[str]:
    """The message of the ``FileNotFoundError`` that ``check()`` raises, as the one thing missing, or nothing."""
    try:
        check()
    except FileNotFoundError as err:
        return [str(err)]
    return []


def missing(*parts: object) -> list[str]:
    """What the parts need that is absent: each part's ``missing()``, where it has one."""
    return [problem for part in parts if hasattr(part, "missing") for problem in part.missing()]


def resolve_text_reward(fn: str) -> Callable[..., list[float]]:
    """A built-in reward by name, or a function by ``module:function`` import path."""
    if fn in TEXT_REWARDS:
        return TEXT_REWARDS[fn]
    if ":" not in fn:
        raise ValueError(f"unknown text reward {fn!r}: use one of {sorted(TEXT_REWARDS)} or 'package.module:function'")
    module, _, name = fn.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import text reward {fn!r}: {err}") from err
