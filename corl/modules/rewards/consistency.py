"""Image consistency 1 - LPIPS(real, generated): the perceptual half of the cycle-consistency reward."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from corl.data.images import PhotoFit
from corl.modules.rewards.base import GeneratedImages, ImageReward, absent

# torchvision checkpoints that lpips' trunks load from the torch hub cache.
TRUNK_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


class ImageConsistencyReward(ImageReward):
    """1 - LPIPS between the real image and each generated image, batched on the device.

    Args:
        net: the LPIPS trunk, ``alex`` or ``vgg``.
        random_trunk: use a randomly initialised trunk. Only for the embedded default, where no
            ImageNet weights exist; a real config must leave it false and provide the weights.
        trunk_path: a torchvision checkpoint of the trunk; defaults to the torch hub cache
            (``$TORCH_HOME/hub/checkpoints``).
        resolution: images are compared at this square size (LPIPS is calibrated on 64 px
            patches; larger sizes cost more and change little).
        real_fit: how the real photo becomes a square target: ``crop`` (its centre square, the
            default) or ``resize`` (all of it, squeezed). Never the letterboxed understanding input,
            whose grey bars would reward drawing bars.
        weight: weight in the image reward.
        name: log name.
    """

    default_name = "consistency"

    def __init__(
        self,
        net: Literal["alex", "vgg"] = "alex",
        random_trunk: bool = False,
        trunk_path: str | None = None,
        resolution: int = 224,
        real_fit: PhotoFit = "crop",
        weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(weight, name)
        if net not in TRUNK_FILES:
            raise ValueError(f"LPIPS net must be one of {sorted(TRUNK_FILES)}, got {net!r}")
        if real_fit not in get_args(PhotoFit):
            raise ValueError(f"real_fit must be one of {get_args(PhotoFit)}, got {real_fit!r}")
        self.net, self.random_trunk, self.trunk_path, self.resolution = net, random_trunk, trunk_path, resolution
        self.real_fit = real_fit
        self._metric = None

    def _find_trunk(self) -> Path:
        filename = TRUNK_FILES[self.net]
        path = Path(self.trunk_path) if self.trunk_path else Path(torch.hub.get_dir()) / "checkpoints" / filename
        if not path.is_file():
            builder = "alexnet" if self.net == "alex" else "vgg16"
            raise FileNotFoundError(
                f"LPIPS {self.net} trunk weights not found at {path}. Copy torchvision's {filename} there (on a "
                f"machine with internet: python -c \"import torchvision; torchvision.models.{builder}(weights="
                f"'DEFAULT')\" fills {torch.hub.get_dir()}/checkpoints), or set trunk_path. "
                "Only the embedded demo may set random_trunk: true."
            )
        return path

    def missing(self) -> list[str]:
        """The trunk weights, where they are needed and absent (``corl check``)."""
        return [] if self.random_trunk else absent(self._find_trunk)

    def setup(self) -> None:
        """Build LPIPS once, on the CPU; it follows the images to their device on first use."""
        if self._metric is None:
            self._metric = self._load()

    def _load(self):
        import lpips  # heavy; imported only when the reward is used

        # The linear calibration layers ship inside the lpips package; the trunk is built empty
        # (never downloaded) and filled from the torchvision checkpoint when one is configured.
        with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            metric = lpips.LPIPS(net=self.net, pnet_rand=True, verbose=False)
        if not self.random_trunk:
            trunk_path = self._find_trunk()
            features = torch.load(trunk_path, map_location="cpu", weights_only=True)
            # lpips keeps torchvision's features[i] as slice<k>.<i>; map "slice2.3.weight" <- "features.3.weight".
            state = {}
            for key in metric.net.state_dict():
                source = "features." + key.split(".", 1)[1]
                if source not in features:
                    raise RuntimeError(f"LPIPS trunk {trunk_path} is not a torchvision {self.net}: no {source}")
                state[key] = features[source]
            metric.net.load_state_dict(state)
        return metric.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, samples: GeneratedImages) -> torch.Tensor:
        """``1 - LPIPS`` per row against the real photo at ``resolution``, clamped to [0, 1]."""
        self.setup()
        self._metric.to(samples.images.device)
        size = (self.resolution, self.resolution)
        generated = F.interpolate(samples.images.float(), size=size, mode="bilinear", align_corners=False)
        real = samples.real_images(self.resolution, self.real_fit)
        distance = self._metric(generated, real, normalize=False).flatten()
        return (1.0 - distance).clamp(0.0, 1.0)

