"""An external Hugging Face image-to-text model (BLIP in the CoRL paper) as the cycle-consistency captioner."""

from __future__ import annotations

from pathlib import Path

import torch

from corl.modules.rewards.base import GeneratedImages, absent
from corl.modules.rewards.captioners import Captioner
from corl.names import DTYPES


class HFCaptioner(Captioner):
    """Greedy captions from a frozen transformers image-to-text model, loaded once from a local folder.

    An external captioner is independent of the policy, so the policy cannot raise its own
    cycle-consistency reward by learning to describe its images in the prompt's words.

    Images go to the model's processor as uint8 ``[3, H, W]`` tensors, ``round((x + 1) * 127.5)``: the
    8-bit RGB images the captioner was trained on, which every image processor takes with its own default
    rescale, resize and normalisation. With transformers' torchvision image processors (BLIP's default)
    this all happens on the images' device. (On the CPU torchvision resizes uint8 like PIL, to a grey level; a
    GPU resizes in float, which agrees on smooth images and differs by a few levels on pixel noise.)

    Args:
        path: local Hugging Face folder of the model and its processor, e.g. a download of
            ``Salesforce/blip-image-captioning-large`` (``hf download Salesforce/blip-image-captioning-large
            --local-dir checkpoints/blip-large``). Nothing is downloaded at run time.
        max_tokens: caption length limit (new tokens).
        batch_size: images per batched ``generate`` call.
        dtype: the model's weights dtype: ``float32``, ``float16`` or ``bfloat16``.
        prompt: optional conditional-captioning prefix (BLIP: e.g. ``"a picture of"``). BLIP repeats it at
            the start of its output; it is removed, so the caption is only what the model added.
    """

    def __init__(
        self,
        path: str,
        max_tokens: int = 40,
        batch_size: int = 32,
        dtype: str = "float32",
        prompt: str | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"captioner dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if batch_size < 1 or max_tokens < 1:
            raise ValueError(f"batch_size and max_tokens must be positive, got {batch_size} and {max_tokens}")
        self.path, self.max_tokens, self.batch_size, self.dtype = str(path), max_tokens, batch_size, dtype
        self.prompt = prompt or None
        self._model = None
        self._processor = None
        self._echo = ""

    def _folder(self) -> Path:
        folder = Path(self.path).expanduser()
        if not (folder / "config.json").is_file():
            what = "has no config.json" if folder.is_dir() else "does not exist"
            raise FileNotFoundError(
                f"captioner folder {folder} {what}. corl never downloads models: fetch it once on a machine with "
                f"internet, e.g. `hf download Salesforce/blip-image-captioning-large --local-dir {self.path}`, "
                "or set path to the folder that has it."
            )
        return folder

    def missing(self) -> list[str]:
        """The captioner's folder, where it is absent (``corl check``)."""
        return absent(self._folder)

    def setup(self) -> None:
        """Load the processor and model once, on the CPU; a missing folder fails here, at start."""
        if self._model is not None:
            return
        folder = self._folder()
        from transformers import AutoModelForImageTextToText, AutoProcessor  # heavy; only when used

        self._processor = AutoProcessor.from_pretrained(folder)
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=DTYPES[self.dtype])
        self._model = model.eval().requires_grad_(False)
        if self.prompt:  # the prompt as the model echoes it: through its tokenizer (BLIP's lower-cases)
            tokenizer = getattr(self._processor, "tokenizer", None)
            if tokenizer is not None:
                ids = tokenizer(self.prompt, add_special_tokens=False)["input_ids"]
                self._echo = tokenizer.decode(ids, skip_special_tokens=True).strip()

    @torch.no_grad()
    def __call__(self, samples: GeneratedImages) -> list[str]:
        """One greedy caption per image, in batches of ``batch_size``; the model follows the images' device."""
        self.setup()
        images = samples.images
        device = images.device
        self._model.to(device)
        # uint8 on the images' device; image processors without a torch backend get them on the CPU.
        pixels = ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        image_processor = getattr(self._processor, "image_processor", None)
        if getattr(image_processor, "backend", None) != "torchvision":
            pixels = pixels.cpu()
        captions: list[str] = []
        for start in range(0, len(pixels), self.batch_size):
            batch = list(pixels[start : start + self.batch_size])
            text = [self.prompt] * len(batch) if self.prompt else None
            inputs = self._processor(images=batch, text=text, return_tensors="pt").to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
            output = self._model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False, num_beams=1)
            captions += [self._strip_prompt(c) for c in self._processor.batch_decode(output, skip_special_tokens=True)]
        if len(captions) != len(images):
            raise RuntimeError(f"captioner returned {len(captions)} captions for {len(images)} images")
        return captions

    def _strip_prompt(self, caption: str) -> str:
        caption = caption.strip()
        for echo in (self._echo, self.prompt.strip()) if self.prompt else ():
            if echo and caption.lower().startswith(echo.lower()):
                return caption[len(echo) :].strip()
        return caption
