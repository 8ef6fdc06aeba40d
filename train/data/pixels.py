"""CLIP preprocessing in torch, read from the checkpoint's `preprocessor_config.json`.

The same steps as Hugging Face's `CLIPImageProcessor` (resize the short side with its resample
filter, centre crop, rescale, mean/std), applied to all frames of a clip at once on uint8
tensors: no PIL image per frame, and no torchvision (transformers' fast processors need it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PREPROCESSOR_FILE = "preprocessor_config.json"
# PIL resample codes used by HF image processors -> torch interpolate modes.
_RESAMPLE_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}
# CLIP's constants (OpenAI), HF's defaults when a config omits them.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _hw(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and {"height", "width"} <= set(value):
        return int(value["height"]), int(value["width"])
    raise ValueError(f"{name}: expected an int or {{height, width}}, found {value!r}")


@dataclass(frozen=True)
class PixelSpec:
    """What CLIPImageProcessor would do, as numbers."""

    shortest_edge: int | None     # resize the short side to this (None: resize to `resize_hw`)
    resize_hw: tuple[int, int] | None
    crop_hw: tuple[int, int] | None
    resample: str
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def output_size(self) -> tuple[int, int]:
        if self.crop_hw:
            return self.crop_hw
        if self.resize_hw:
            return self.resize_hw
        raise ValueError("a processor without crop or fixed resize gives variable sizes; cannot batch")

    @classmethod
    def from_pretrained(cls, processor_dir: str | Path) -> "PixelSpec":
        path = Path(processor_dir) / PREPROCESSOR_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {PREPROCESSOR_FILE} in {processor_dir}: expected a CLIP checkpoint "
                                    f"folder (save_pretrained of a CLIPImageProcessor)")
        config = json.loads(path.read_text())
        size = config.get("size", 224) if config.get("do_resize", True) else None
        shortest = resize_hw = None
        if isinstance(size, dict) and "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
        elif size is not None:
            resize_hw = _hw(size, "size")
        crop = _hw(config.get("crop_size", 224), "crop_size") if config.get("do_center_crop", True) else None
        resample = _RESAMPLE_MODES.get(int(config.get("resample", 3)), "bicubic")
        rescale = float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0
        normalize = config.get("do_normalize", True)
        mean = tuple(config.get("image_mean", _CLIP_MEAN)) if normalize else (0.0, 0.0, 0.0)
        std = tuple(config.get("image_std", _CLIP_STD)) if normalize else (1.0, 1.0, 1.0)
        return cls(shortest, resize_hw, crop, resample, rescale, mean, std)


def resized_hw(height: int, width: int, spec: PixelSpec) -> tuple[int, int]:
    """HF's rule: short side -> shortest_edge, long side int(edge * long / short)."""
    if spec.shortest_edge is None:
        return spec.resize_hw or (height, width)
    edge = spec.shortest_edge
    if height <= width:
        return edge, int(edge * width / height)
    return int(edge * height / width), edge


def resize_crop(frames: np.ndarray, spec: PixelSpec) -> torch.Tensor:
    """[K, H, W, 3] uint8 RGB -> [K, S, S, 3] uint8, resized (all K at once) and centre-cropped.

    A clip already at the target short side (the builder's default, 224) is only cropped: a view,
    no copy. A resized clip is rounded back to uint8, as PIL's output would be."""
    x = torch.from_numpy(frames)  # [K, H, W, 3] uint8
    height, width = x.shape[1:3]
    new_h, new_w = resized_hw(height, width, spec)
    if (new_h, new_w) != (height, width):
        antialias = spec.resample in ("bilinear", "bicubic")
        resized = F.interpolate(x.permute(0, 3, 1, 2).float(), size=(new_h, new_w), mode=spec.resample,
                                antialias=antialias,
                                **({} if spec.resample == "nearest" else {"align_corners": False}))
        x = resized.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    if spec.crop_hw:
        crop_h, crop_w = spec.crop_hw
        if new_h < crop_h or new_w < crop_w:  # HF pads with zeros around a too-small image
            pad_h, pad_w = max(crop_h - new_h, 0), max(crop_w - new_w, 0)
            x = F.pad(x.permute(0, 3, 1, 2), (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
            x = x.permute(0, 2, 3, 1)
            new_h, new_w = x.shape[1:3]
        top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
        x = x[:, top:top + crop_h, left:left + crop_w]
    return x


def pixel_affine(spec: PixelSpec) -> torch.Tensor:
    """[2, 3] float32: per-channel (a, b) with normalised = pixel * a - b, pixel in 0..255."""
    return torch.tensor([[spec.rescale / s for s in spec.std],
                         [m / s for m, s in zip(spec.mean, spec.std)]], dtype=torch.float32)


def apply_affine_(x: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """In place on [..., 3, S, S] pixel values 0..255 (float): x * a - b, two passes (the batch
    path fuses this into its uint8 -> float copy: batch.stack_pixels)."""
    affine = affine.to(device=x.device, dtype=x.dtype)
    return x.mul_(affine[0].view(3, 1, 1)).sub_(affine[1].view(3, 1, 1))


def normalize_(x: torch.Tensor, spec: PixelSpec) -> torch.Tensor:
    """In place: (x * rescale - mean) / std of CLIP's processor, x holding 0..255 values."""
    return apply_affine_(x, pixel_affine(spec))


def preprocess_frames(frames: np.ndarray, spec: PixelSpec, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[K, H, W, 3] uint8 RGB -> [K, 3, S, S] normalised: what CLIPImageProcessor gives per image."""
    cropped = resize_crop(frames, spec)
    out = torch.empty((cropped.shape[0], 3, *cropped.shape[1:3]), dtype=dtype)
    out.copy_(cropped.permute(0, 3, 1, 2))
    return normalize_(out, spec)
