"""Log-probabilities of sampled tokens, as pure tensor functions.

Sampling and training must agree to the last digit that matters (the first-pass ratio is 1), so both
go through ``token_logps``: float32, the same temperature. The training pass takes them over whole
sequences in chunks of positions (``chunked_token_logps``): the float32 logits of all rows, all
positions and a 102,400-token vocabulary at once would be the largest tensor of a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch.utils.checkpoint import checkpoint

# Which logits image tokens are scored with: the guided ones they were sampled from, or the conditional ones.
ImageLogprobMode = Literal["conditional", "cfg"]


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance: ``u + w * (c - u)``, the logits image tokens are sampled from."""
    return uncond + weight * (cond - uncond)


def token_logps(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log softmax(logits / T) at ``tokens``, in float32, without a log-softmax of the whole vocabulary.

    ``logits`` is ``[..., V]`` and ``tokens`` ``[...]``; the value is logit(token) - logsumexp(logits).
    """
    scaled = logits.float() / (temperature if temperature > 0 else 1.0)
    return scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - scaled.logsumexp(dim=-1)


def sample_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """A sample of softmax(logits / T) (greedy when T is 0), without waiting for the device.

    ``argmax(p / E)`` with E ~ Exponential(1) per entry draws from ``p`` exactly (the exponential race;
    the Gumbel-max trick in another form), and unlike ``torch.multinomial`` it needs no sync of the host
    with the device. E is ``-log(U)`` with U uniform in [0, 1): U = 0 gives E = inf, which only
    excludes that entry (never forces it), with probability 2^-24 per entry.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    race = torch.rand_like(probs).log_().neg_()  # Exponential(1)
    return (probs / race).argmax(-1)


def entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy ``[...]`` of softmax(logits / T) over the last dimension, in float32, without gradient."""
    with torch.no_grad():
        scaled = logits.float() / (temperature if temperature > 0 else 1.0)
        return scaled.logsumexp(dim=-1) - (scaled.softmax(dim=-1) * scaled).sum(dim=-1)


def chunked_token_logps(
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    temperature: float,
    chunk_tokens: int = 1024,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[R, N]`` log-probs of ``tokens`` from hidden states ``[B, N, D]``, a chunk of positions at a time.

    ``logits_fn`` maps a chunk of hidden states ``[B, n, D]`` to the logits ``[R, n, V]`` the tokens
    were sampled from (a head, or a head and the CFG mix of conditional and unconditional rows).
    Each chunk covers about ``chunk_tokens`` of the R rows' positions. With autograd on, each chunk
    is recomputed in backward instead of keeping its logits, so memory holds one chunk's logits.
    With ``with_entropy`` also the entropy ``[R, N]`` of each sampling distribution (no gradient),
    taken from the same logits; else None, and no softmax over the vocabulary is spent on it (the
    reference's and the replay's passes throw it away).
    """
    rows, length = tokens.shape
    step = max(1, chunk_tokens // max(rows, 1))

    def chunk(states: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = logits_fn(states)
        logps = token_logps(logits, targets, temperature)
        return (logps, entropy(logits, temperature)) if with_entropy else (logps,)

    parts = []
    for start in range(0, length, step):
        states, targets = hidden[:, start : start + step], tokens[:, start : start + step]
        if torch.is_grad_enabled() and states.requires_grad:
            parts.append(checkpoint(chunk, states, targets, use_reentrant=False))
        else:
            parts.append(chunk(states, targets))
    logps = torch.cat([part[0] for part in parts], dim=1)
    return logps, (torch.cat([part[1] for part in parts], dim=1) if with_entropy else None)
