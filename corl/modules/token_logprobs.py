"""Training log-probs of given tokens: one teacher-forced forward per call, for RL's update and SFT's targets.

Convention (the public reference code gets this wrong): the token at position k is scored from the
hidden state at k - 1, with the same temperature (and, in ``cfg`` mode, the same guided logits) it was
sampled with, so the first training pass reproduces the sampling log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from corl.modules.janus import Janus
from corl.modules.logprobs import ImageLogprobMode, chunked_token_logps, guided_logits
from corl.modules.packing import Packing, pack_rows, packed_inputs, packed_mask, packed_positions, unpacked_states
from corl.modules.rollout import ImageTokens, TextTokens


@dataclass(frozen=True)
class TokenLogps:
    """Log-probs ``[R, T]`` of the scored tokens (0 off their mask) and, when asked, each entropy (no gradient)."""

    logps: torch.Tensor
    entropy: torch.Tensor | None = None


@dataclass
class ScoringSettings:
    """How tokens are scored (``JanusPolicy``'s settings of the same names; benchmarks switch some)."""

    cfg_weight: float = 5.0
    image_temperature: float = 1.0
    text_temperature: float = 1.0
    image_logprob_mode: ImageLogprobMode = "cfg"
    logprob_chunk_tokens: int = 1024
    pack_groups: bool = True


class TokenScorer:
    """Scores image or answer tokens with given weights (the policy's, or the reference's)."""

    def __init__(self, janus: Janus, settings: ScoringSettings) -> None:
        self.janus, self.settings = janus, settings

    def __call__(self, tokens: ImageTokens | TextTokens, weights: nn.ModuleDict,
                 with_entropy: bool = False) -> TokenLogps:
        """``weights`` holds the ``llm`` and ``lm_head`` that score (``Janus.trained_modules`` or a reference)."""
        if isinstance(tokens, ImageTokens):
            return self.image(tokens, weights, with_entropy)
        return self.text(tokens, weights, with_entropy)

    def image(self, tokens: ImageTokens, weights: nn.ModuleDict, with_entropy: bool = False) -> TokenLogps:
        """Log-probs ``[R, N]`` of image tokens under the logits they were sampled from."""
        janus, s = self.janus, self.settings
        n, length = tokens.tokens.shape[1], tokens.prompt_ids.shape[1]
        ids, mask = tokens.prompt_ids, tokens.prompt_mask
        if s.image_logprob_mode == "cfg":
            ids, mask = torch.cat([ids, tokens.uncond_ids]), torch.cat([mask, mask])
        inputs = tokens.tokens.repeat(ids.shape[0] // tokens.tokens.shape[0], 1)
        # Inputs are prompt + tokens[:-1]: the state at position L-1 (<begin_of_image>) predicts token 0.
        prompt = janus.embed_prompt(ids, None, weights["llm"])
        embeds = torch.cat([prompt, janus.embed_image_tokens(inputs[:, :-1])], dim=1)
        full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], n - 1)], dim=1)
        hidden = janus.forward(embeds, full_mask, weights["llm"])[:, length - 1 :]  # [rows, N, D]

        def logits(states: torch.Tensor) -> torch.Tensor:  # [rows, n, D] -> [R, n, V], as sampled
            out = janus.image_logits(states)
            return guided_logits(*out.chunk(2), s.cfg_weight) if s.image_logprob_mode == "cfg" else out

        logps, spread = chunked_token_logps(hidden, tokens.tokens, logits, s.image_temperature,
                                            s.logprob_chunk_tokens, with_entropy)
        return TokenLogps(logps, spread)

    def text(self, tokens: TextTokens, weights: nn.ModuleDict, with_entropy: bool = False) -> TokenLogps:
        """Log-probs ``[R, T]`` of answer tokens (0 off ``tokens.mask``); groups packed behind one prompt."""
        janus, s, llm = self.janus, self.settings, weights["llm"]
        length, t = tokens.prompt_ids.shape[1], tokens.completion_ids.shape[1]
        answer = llm.get_input_embeddings()(tokens.completion_ids[:, :-1])
        packing = pack_rows(tokens.example_index) if self._packs(llm) else None
        if packing is not None and len(packing.sources) < len(tokens.example_index):
            hidden = self._packed_forward(tokens, answer, packing, llm)
        else:
            prompt = janus.embed_prompt(tokens.prompt_ids, tokens.image_embeds[tokens.example_index], llm)
            # The state at the prompt's last position scores completion token 0 (shift by one).
            embeds = torch.cat([prompt, answer], dim=1)
            mask = torch.cat([tokens.prompt_mask, tokens.prompt_mask.new_ones(prompt.shape[0], t - 1)], dim=1)
            hidden = janus.forward(embeds, mask, llm)[:, length - 1 :]
        logps, spread = chunked_token_logps(hidden, tokens.completion_ids, weights["lm_head"], s.text_temperature,
                                            s.logprob_chunk_tokens, with_entropy)
        return TokenLogps(logps.masked_fill(~tokens.mask, 0.0), spread)

    def _packs(self, llm: nn.Module) -> bool:
        """Whether the text forward packs groups: on, and an attention that takes a 4D mask."""
        return self.settings.pack_groups and getattr(llm.config, "_attn_implementation", None) in ("sdpa", "eager")

    def _packed_forward(self, tokens: TextTokens, answer: torch.Tensor, packing: Packing, llm: nn.Module):
        """States ``[R, T, D]`` scoring each row's answer tokens, from one forward per distinct prompt."""
        sources, block = packing.sources, answer.shape[1]
        prompt = self.janus.embed_prompt(tokens.prompt_ids[sources],
                                         tokens.image_embeds[tokens.example_index[sources]], llm)
        mask = tokens.prompt_mask[sources]
        attend = packed_mask(mask, packing.blocks, block)
        if llm.config._attn_implementation == "eager":  # eager attention adds its mask to the scores
            attend = torch.zeros(attend.shape, dtype=prompt.dtype, device=attend.device).masked_fill(
                ~attend, torch.finfo(prompt.dtype).min)
        out = llm(inputs_embeds=packed_inputs(prompt, answer, packing), attention_mask=attend,
                  position_ids=packed_positions(mask, packing.blocks, block), use_cache=False)
        return unpacked_states(out.last_hidden_state, packing, mask.shape[1], block)
