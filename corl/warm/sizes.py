"""The warm start's sizes, apart from its build, so that reading a ``tiny-warm`` processor builds nothing."""

from __future__ import annotations

from corl.modules.tiny import JanusSizes

# The sizes the recipe's budget learns in: a 64 px scene is 8 x 8 = 64 image tokens (patches of 8 px);
# the VQ has 64 channels (GroupNorm(32) at 32 would be instance norm and wash out colour) and 256
# codes (few enough that the SFT learns which one a patch is); the LLM is 4 layers of width 128, the
# vision tower 2 of width 64.
WARM_SIZES = JanusSizes(
    image_size=64, patch_size=8, hidden_size=128, intermediate_size=256, num_layers=4, num_heads=4,
    num_kv_heads=2, vision_hidden_size=64, vision_layers=2, vision_heads=2, codebook_size=256,
    vq_base_channels=64, vq_res_blocks=0,
)
