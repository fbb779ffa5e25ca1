"""The weights rollouts decode with: the trained modules themselves, or a plain copy in the compute dtype.

Under mixed precision the masters are float32 and autocast casts every matrix to bfloat16 in every
forward: a decode step would read the float32 weights, write their bfloat16 cast and read it again,
about three times the bytes of the bfloat16 weights, on each of hundreds of steps. Under FSDP the
decoder layers carry FSDP's hooks, which torch.compile cannot trace: each layer would be a frame of its
own. So for rollouts the policy keeps a plain copy of the LLM and its text head (no hooks), with every
matrix in the compute dtype and every other weight (norms) in the dtype the trained one is read in, so
that the copy computes what the trained modules compute under autocast. Its memory is the LLM's
matrices once more in bfloat16 (about 2.6 GB for Janus-Pro-1B; its token embedding is not copied:
decode steps take embeddings, never ids). It is refreshed from the trained weights before every
rollout: one pass over the weights, small beside a rollout's hundreds of decode steps. A LoRA policy
decodes from its own modules (its adapters would need merging). The frozen generation head is not
copied: it is about 3% of the weights a step reads.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

DecodeWeightsMode = Literal["auto", "trained"]  # a plain compute-dtype copy where it helps, or the trained modules


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a parameter, also when it is an FSDP shard (DTensor)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _plain_class(module: nn.Module) -> type:
    """The module's own class: FSDP2 swaps in a subclass of it whose hooks a copy must not have."""
    return next(cls for cls in type(module).__mro__ if not cls.__name__.startswith("FSDP"))


def plain_llm(source: nn.Module, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """A hook-free LLM of ``source``'s class and config, matrices in ``dtype``, rotary tables copied."""
    with torch.device("meta"):
        llm = _plain_class(source)(source.config)
        llm.set_input_embeddings(nn.Embedding(1, source.config.hidden_size))  # decode steps take embeddings
    llm.to_empty(device=device)
    for module in llm.modules():
        if isinstance(module, nn.Linear):
            module.to(dtype)
    for name, buffer in source.named_buffers():  # computed at init, so lost on meta
        llm.get_buffer(name).copy_(buffer)
    return llm.requires_grad_(False).eval()


class DecodeWeights(nn.Module):
    """A plain copy of the trained LLM and text head, matrices in the compute dtype (not registered anywhere).

    Args:
        llm: the policy's LLM (possibly FSDP units, possibly float32).
        lm_head: its text head.
        dtype: the compute dtype (autocast's).
    """

    def __init__(self, llm: nn.Module, lm_head: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        device = full(lm_head.weight).device
        self.dtype = dtype
        self.llm = plain_llm(llm, dtype, device)
        self.lm_head = nn.Linear(lm_head.in_features, lm_head.out_features, bias=False, device=device, dtype=dtype)
        self.lm_head.requires_grad_(False)
        matrices = {id(m.weight) for m in self.llm.modules() if isinstance(m, nn.Linear)}
        trained = dict(llm.named_parameters())
        for name, param in self.llm.named_parameters():  # norms: as the trained ones are read (FSDP may gather bf16)
            if id(param) not in matrices and name in trained:
                param.data = param.data.to(full(trained[name]).dtype)
        self.refresh(llm, lm_head)

    @torch.no_grad()
    def refresh(self, llm: nn.Module, lm_head: nn.Module) -> None:
        """Copy the trained weights in (FSDP's gathered ones too: no version counter tells those apart)."""
        unread = self.llm.get_input_embeddings().weight
        for copy, source in ((self.llm, llm), (self.lm_head, lm_head)):
            values = dict(source.named_parameters())
            for name, param in copy.named_parameters():
                if param is not unread:
                    param.copy_(full(values[name]))
