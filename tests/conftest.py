import pytest
import torch

from corl.data.procedural import make_scene
from corl.modules.policy import JanusPolicy
from corl.modules.tiny import build_tiny_janus


@pytest.fixture
def tiny_policy():
    """A fresh tiny policy (32 px images, 16 image tokens) that tests may train."""

    def make(**kwargs) -> JanusPolicy:
        model, processor = build_tiny_janus(image_size=32, patch_size=8, seed=0)
        settings = {"cfg_weight": 3.0, "max_completion_tokens": 12, "image_temperature": 1.0, "text_temperature": 1.0}
        return JanusPolicy(model, processor, **{**settings, **kwargs})

    return make


@pytest.fixture
def scenes():
    return [make_scene(seed=0, index=i, image_size=32) for i in range(3)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
