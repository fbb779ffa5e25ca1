"""CLIP score of each generated image against its prompt: the text-image alignment half of the image reward."""

from __future__ import annotations

from pathlib import Path

import torch

from corl.modules.rewards.base import GeneratedImages, ImageReward, absent


class ClipScoreReward(ImageReward):
    """``max(0, cos(CLIP_image(I), CLIP_text(prompt)))`` per generated image, batched on the device.

    The reward lies in [0, 1]. The usual CLIPScore (Hessel et al., 2021) is ``2.5 * max(cos, 0)``; the
    factor 2.5 only stretches the range (real CLIP cosines of matching pairs sit around 0.2-0.4), so it
    is left out here to keep every image reward in [0, 1]: set ``weight: 2.5`` for CLIPScore's scale.

    The model is built from open_clip's built-in config of ``model`` and filled from ``checkpoint``,
    once, on the CPU; it follows the images to their device on first use. Nothing is downloaded.

    Args:
        model: an open_clip model name, e.g. ``ViT-B-32`` (``open_clip.list_models()``). Its text tower
            must use open_clip's built-in CLIP tokenizer (models with a Hugging Face tokenizer, such as
            SigLIP or XLM-RoBERTa towers, would need a download and are refused). Checkpoints trained with
            QuickGELU (OpenAI's and LAION-400M's) need the ``-quickgelu`` variant, e.g.
            ``ViT-B-32-quickgelu``, or ``pretrained_tag`` set.
        checkpoint: local path of the weights file (an open_clip state dict, ``.pt``/``.bin``/
            ``.safetensors``). Required: there is no random or downloaded fallback. Fetch it once on a
            machine with internet, e.g. ``hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K
            open_clip_pytorch_model.bin --local-dir checkpoints/clip``.
        pretrained_tag: the open_clip pretrained tag the checkpoint was published under (e.g.
            ``laion2b_s34b_b79k``, ``openai``). Optional; only read from open_clip's table, never
            downloaded: it supplies that tag's preprocessing (mean, std, interpolation, resize mode) and
            its QuickGELU setting, which a bare weights file does not record.
        weight: weight in the image reward.
        name: log name.
    """

    default_name = "clip"

    def __init__(
        self,
        checkpoint: str,
        model: str = "ViT-B-32",
        pretrained_tag: str | None = None,
        weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(weight, name)
        self.model, self.checkpoint, self.pretrained_tag = model, checkpoint, pretrained_tag
        self._model = None
        self._tokenizer = None

    def setup(self) -> None:
        """Build the model and tokenizer once, on the CPU; a missing checkpoint fails here, at start."""
        if self._model is None:
            self._model, self._tokenizer = self._load()

    def _checkpoint(self) -> Path:
        path = Path(self.checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"CLIP checkpoint for {self.model!r} not found at {path}. corl never downloads weights: fetch "
                "open_clip's pretrained weights once on a machine with internet, e.g. `hf download "
                "laion/CLIP-ViT-B-32-laion2B-s34B-b79K open_clip_pytorch_model.bin --local-dir checkpoints/clip` "
                "(the weights of model ViT-B-32, pretrained_tag laion2b_s34b_b79k), and set checkpoint to the file."
            )
        return path

    def missing(self) -> list[str]:
        """The CLIP weights file, where it is absent (``corl check``)."""
        return absent(self._checkpoint)

    def _load(self):
        import open_clip  # heavy; imported only when the reward is used

        path = self._checkpoint()
        if self.model.startswith(("hf-hub:", "local-dir:")):
            raise ValueError(
                f"CLIP model {self.model!r}: give an open_clip model name (e.g. ViT-B-32) and the weights file in "
                "checkpoint; hf-hub:/local-dir: names are not supported"
            )
        config = open_clip.get_model_config(self.model)
        if config is None:
            raise ValueError(f"unknown open_clip model {self.model!r}; see open_clip.list_models()")
        text_cfg = config.get("text_cfg", {})
        if "hf_tokenizer_name" in text_cfg or "hf_model_name" in text_cfg or "siglip" in self.model.lower():
            raise ValueError(
                f"CLIP model {self.model!r} needs a Hugging Face hub tokenizer or text tower, which corl does not "
                "load (no downloads at run time); use a model with open_clip's built-in CLIP tokenizer, e.g. "
                "ViT-B-32, ViT-B-16 or ViT-L-14"
            )

        preprocess: dict = {}
        quick_gelu = False
        if self.pretrained_tag is not None:
            tag_cfg = open_clip.get_pretrained_cfg(self.model, self.pretrained_tag)
            if not tag_cfg:
                tags = open_clip.list_pretrained_tags_by_model(self.model)
                raise ValueError(f"open_clip has no pretrained tag {self.pretrained_tag!r} for {self.model!r}: {tags}")
            keys = ("mean", "std", "interpolation", "resize_mode", "fill_color")
            preprocess = {k: tag_cfg[k] for k in keys if tag_cfg.get(k) is not None}
            quick_gelu = bool(tag_cfg.get("quick_gelu", False))
            if config.get("quick_gelu", False) and not quick_gelu:
                raise ValueError(
                    f"CLIP model {self.model!r} uses QuickGELU but tag {self.pretrained_tag!r} was trained without it"
                )

        # An absolute path can never collide with a pretrained tag name, so open_clip takes it as a file
        # (a tag would be downloaded). No tower defaults are loaded: every weight comes from the checkpoint,
        # and open_clip loads it strictly (a missing or unexpected key is an error).
        model = open_clip.create_model(
            self.model,
            pretrained=str(path.resolve()),
            pretrained_image=False,
            pretrained_text=False,
            force_quick_gelu=quick_gelu,
            force_preprocess_cfg=preprocess,
        )
        tokenizer = open_clip.get_tokenizer(self.model)
        return model.eval().requires_grad_(False), tokenizer

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] to the model's input, on their device (no PIL round trip).

        Mirrors open_clip's inference transform: resize (antialiased, the configured interpolation) and
        centre-crop, or squash, or fit-and-pad, then normalise with the model's mean and std.
        """
        import torchvision.transforms.functional as TF

        self.setup()
        cfg = self._model.visual.preprocess_cfg
        size = cfg["size"]
        th, tw = (size, size) if isinstance(size, int) else tuple(size)
        bicubic = cfg.get("interpolation", "bicubic") != "bilinear"
        interpolation = TF.InterpolationMode.BICUBIC if bicubic else TF.InterpolationMode.BILINEAR
        mode = cfg.get("resize_mode", "shortest")

        x = ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)
        h, w = x.shape[-2:]
        if mode == "squash":
            x = TF.resize(x, [th, tw], interpolation=interpolation, antialias=True)
        elif mode == "shortest" and th == tw:
            x = TF.resize(x, [th], interpolation=interpolation, antialias=True)
            x = TF.center_crop(x, [th, tw])
        else:  # keep the aspect ratio, fitting the shorter ("shortest") or longer ("longest") side
            ratios = (h / th, w / tw)
            ratio = max(ratios) if mode == "longest" else min(ratios)
            x = TF.resize(x, [round(h / ratio), round(w / ratio)], interpolation=interpolation, antialias=True)
            if mode == "longest":
                fill = cfg.get("fill_color", 0)  # a pixel value (0-255), as PIL fills
                fill = [c / 255.0 for c in fill] if isinstance(fill, (list, tuple)) else fill / 255.0
                x = _center_crop_or_pad(x, th, tw, fill)
            else:
                x = TF.center_crop(x, [th, tw])
        x = x.clamp(0.0, 1.0)  # bicubic overshoots; PIL clamps to the pixel range
        mean = torch.tensor(cfg["mean"], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(cfg["std"], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def similarity(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Raw cosine similarity ``[R]`` in [-1, 1] of each image with its prompt, in one batched forward."""
        self.setup()
        device = images.device
        self._model.to(device)
        pixels = self.preprocess(images)
        texts = self._tokenizer(list(prompts)).to(device)
        image_features = self._model.encode_image(pixels, normalize=True).float()
        text_features = self._model.encode_text(texts, normalize=True).float()
        return (image_features * text_features).sum(dim=-1)

    def __call__(self, samples: GeneratedImages) -> torch.Tensor:
        """``max(0, cos)`` per row, in [0, 1], float32 on the images' device."""
        if len(samples.prompts) != samples.images.shape[0]:
            raise ValueError(f"{samples.images.shape[0]} images but {len(samples.prompts)} prompts")
        return self.similarity(samples.images, samples.prompts).clamp(min=0.0)


def _center_crop_or_pad(x: torch.Tensor, th: int, tw: int, fill: float | list[float]) -> torch.Tensor:
    """Pad (with ``fill``) to at least ``th x tw``, then centre-crop, as open_clip's ``CenterCropOrPad``."""
    import torchvision.transforms.functional as TF

    h, w = x.shape[-2:]
    if th > h or tw > w:
        top, left = max(th - h, 0) // 2, max(tw - w, 0) // 2
        canvas = torch.empty(*x.shape[:-2], max(th, h), max(tw, w), device=x.device, dtype=x.dtype)
        canvas[:] = torch.as_tensor(fill, device=x.device, dtype=x.dtype).reshape(-1, 1, 1)
        canvas[..., top : top + h, left : left + w] = x
        x = canvas
    return TF.center_crop(x, [th, tw])
