"""Text-image matching R_TIM: token-level agreement between a generated image and its prompt.

The policy reads (generated image, prompt) through its understanding path; with i_j the last hidden
states at the image positions and t_k those at the prompt's text positions,

    R_TIM = ((1/2) * (mean_j max_k cos(i_j, t_k) + mean_k max_j cos(t_k, i_j)) + 1) / 2   in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from corl.modules.grpo import masked_mean
from corl.modules.rewards.base import GeneratedImages, ImageReward


def token_matching_score(states: torch.Tensor, image_mask: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """R_TIM per row from hidden states ``[R, L, D]`` and boolean span masks ``[R, L]``.

    Rows without image or text positions get NaN (the reward cannot score them).
    """
    unit = F.normalize(states.float(), dim=-1)
    cosine = unit @ unit.transpose(1, 2)  # [R, L, L]: (j, k) = cos(state j, state k)
    pairs = image_mask[:, :, None] & text_mask[:, None, :]  # image j against text k
    masked = cosine.masked_fill(~pairs, float("-inf"))
    best_text = masked.amax(dim=2)  # [R, L] for each image token, its closest prompt token
    best_image = masked.amax(dim=1)  # [R, L] for each prompt token, its closest image token
    image_to_text = masked_mean(torch.where(image_mask, best_text, 0.0), image_mask, dim=1)
    text_to_image = masked_mean(torch.where(text_mask, best_image, 0.0), text_mask, dim=1)
    score = (0.5 * (image_to_text + text_to_image) + 1.0) / 2.0
    scorable = image_mask.any(dim=1) & text_mask.any(dim=1)
    return torch.where(scorable, score, torch.full_like(score, float("nan")))


class TextImageMatchingReward(ImageReward):
    """R_TIM with the policy's own hidden states, one batched forward per call.

    Args:
        batch_size: images per forward pass (bounds memory on long prompts).
        weight: weight in the image reward.
        name: log name.
    """

    default_name = "tim"

    def __init__(self, batch_size: int = 64, weight: float = 1.0, name: str | None = None) -> None:
        super().__init__(weight, name)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, samples: GeneratedImages) -> torch.Tensor:
        """R_TIM per generated image against its prompt."""
        features = samples.image_features()  # shared with the self captioner
        scores = []
        for start in range(0, len(samples), self.batch_size):
            rows = slice(start, start + self.batch_size)
            states, image_mask, text_mask = samples.reader.matching_states(features[rows], samples.prompts[rows])
            scores.append(token_matching_score(states, image_mask, text_mask))
        return torch.cat(scores)
