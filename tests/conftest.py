import lightning as L
import pytest
import torch
from PIL import Image

from corl.data.procedural import make_scene
from corl.modules.lora import LoRA
from corl.modules.policy import JanusPolicy
from corl.modules.tiny import build_tiny_janus
from corl.trainer_setup import TrainerSetup


@pytest.fixture
def tiny_policy():
    """A fresh tiny policy (32 px images, 16 image tokens) that tests may train."""

    def make(**kwargs) -> JanusPolicy:
        model, processor = build_tiny_janus(image_size=32, patch_size=8, seed=0)
        settings = {"cfg_weight": 3.0, "max_completion_tokens": 12, "image_temperature": 1.0, "text_temperature": 1.0}
        return JanusPolicy(model, processor, **{**settings, **kwargs})

    return make


@pytest.fixture
def lora_policy(tiny_policy):
    """``make(lora, **settings)``: a tiny policy with adapters that matter (peft starts B at 0; here it is random)."""

    def make(lora: LoRA | None = None, **kwargs) -> JanusPolicy:
        policy = tiny_policy(lora=lora or LoRA(r=4), **kwargs)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in policy.model.named_parameters():
                if ".lora_B." in name:
                    p.copy_(0.3 * torch.randn(p.shape, generator=generator))
        return policy

    return make


@pytest.fixture
def scenes():
    return [make_scene(seed=0, index=i, image_size=32) for i in range(3)]


@pytest.fixture
def photos():
    """``make(n, width, height)``: n random RGB photos, seeded, as PIL images (what data sets give)."""

    def make(n: int, width: int = 32, height: int = 32, seed: int = 0) -> list[Image.Image]:
        generator = torch.Generator().manual_seed(seed)
        pixels = torch.randint(0, 256, (n, height, width, 3), generator=generator, dtype=torch.uint8)
        return [Image.fromarray(p.numpy()) for p in pixels]

    return make


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class StepMetrics(L.Callback):
    """Keeps every logged metric of every training step."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    def values(self, name):
        return [step[name] for step in self.steps]


@pytest.fixture(scope="session")
def quiet_trainer():
    """A CPU Trainer set up as the CLI sets it (``TrainerSetup``), quiet, and the step metrics it recorded."""

    def make(steps, callbacks=(), **kwargs):
        metrics = StepMetrics()
        options = {"logger": False, "enable_checkpointing": False, **kwargs}
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[metrics, TrainerSetup(), *callbacks], **options)
        return trainer, metrics

    return make
