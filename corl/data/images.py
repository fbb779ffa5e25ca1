"""Real photos as square pixel tensors, for what compares or encodes pixels (LPIPS, the VQ encoder)."""

from __future__ import annotations

from typing import Literal

import torch
import torchvision.transforms.functional as TF
from PIL import Image

PhotoFit = Literal["crop", "resize"]


def photo_pixels(photo: Image.Image, size: int, fit: PhotoFit = "crop") -> torch.Tensor:
    """``[3, size, size]`` in [-1, 1]: the photo itself, centre-cropped to a square or resized to one.

    Janus's image processor letterboxes a non-square photo with grey bars for the vision tower. As
    a target for a pixel comparison those bars would reward drawing bars, so rewards that compare
    pixels read the photo: ``crop`` keeps its centre square, ``resize`` squeezes all of it.
    """
    if fit not in ("crop", "resize"):
        raise ValueError(f"fit must be 'crop' or 'resize', got {fit!r}")
    photo = photo.convert("RGB")
    if fit == "crop":
        photo = TF.center_crop(photo, [min(photo.size)])
    photo = TF.resize(photo, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return TF.pil_to_tensor(photo).float().div(127.5).sub(1.0)
