"""CLIP preprocessing in torch, as the checkpoint's image processor (read by transformers) says.

`PixelSpec.from_pretrained(folder)` loads the folder's image processor with transformers
(`AutoImageProcessor`: `preprocessor_config.json`, or the `processor_config.json` that
`CLIPProcessor.save_pretrained` writes in transformers 5, with the image processor nested), and
takes its numbers: resize (short side `{"shortest_edge": S}`, the legacy int form `"size": S`
that the openai checkpoints ship, which transformers also reads as the short side, or a fixed
`{"height", "width"}`), resample filter, centre crop, rescale, mean/std. The pixels themselves
are then made here, the same steps applied to all frames of a clip at once on uint8 tensors: no
PIL image per frame, and no torchvision (transformers' fast processors need it).

A checkpoint converted from the reference implementation (`vipstream convert --from-xpretrain`)
carries `{"height": S, "width": S}` bicubic: the reference's square resize, aspect not kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# PIL resample codes used by HF image processors -> torch interpolate modes (others are refused:
# a filter we do not reproduce would silently give other pixels).
_RESAMPLE_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _size_field(size: Any, key: str) -> int | None:
    """`size[key]` of a transformers size (a dict, or transformers 5's SizeDict), None when unset."""
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return None if value is None else int(value)


def _hw(size: Any, name: str) -> tuple[int, int]:
    height, width = _size_field(size, "height"), _size_field(size, "width")
    if height is None or width is None:
        raise ValueError(f"{name}: expected {{height, width}}, found {size!r}")
    return height, width


def load_image_processor(processor_dir: str | Path):
    """The folder's image processor, read by transformers (PIL backend: torchvision does not load
    here, and only its settings are used). A folder whose config names no image-processor class
    (a CLIP-ViP folder's config.json has model_type "clip_vip") is read as CLIP's."""
    from transformers import AutoImageProcessor

    folder = Path(processor_dir)
    if not (folder / "preprocessor_config.json").is_file() and not (folder / "processor_config.json").is_file():
        raise FileNotFoundError(f"no preprocessor_config.json or processor_config.json in {folder}: expected a "
                                f"CLIP checkpoint folder (save_pretrained of a CLIPImageProcessor or CLIPProcessor)")
    try:
        return AutoImageProcessor.from_pretrained(str(folder), backend="pil")
    except ValueError as exc:  # "Unrecognized image processor": no class named anywhere
        log.debug("%s names no image processor class (%s); reading it as CLIP's", folder, exc)
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor.from_pretrained(str(folder))


@dataclass(frozen=True)
class PixelSpec:
    """What the checkpoint's image processor does, as numbers."""

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
        """The spec of the image processor in `processor_dir` (see `load_image_processor`)."""
        return cls.from_image_processor(load_image_processor(processor_dir), source=str(processor_dir))

    @classmethod
    def from_image_processor(cls, processor: Any, source: str = "image processor") -> "PixelSpec":
        """The spec of a transformers image processor object (CLIPImageProcessor or alike)."""
        shortest = resize_hw = None
        if getattr(processor, "do_resize", True):
            size = processor.size
            shortest = _size_field(size, "shortest_edge")
            if shortest is None:
                resize_hw = _hw(size, f"{source}: size")
            elif _size_field(size, "longest_edge") is not None:
                raise ValueError(f"{source}: size {size!r} caps the longest edge too; expected shortest_edge "
                                 f"alone or height/width")
        crop = _hw(processor.crop_size, f"{source}: crop_size") if getattr(processor, "do_center_crop", False) else None
        resample_code = int(getattr(processor, "resample", 3))
        if resample_code not in _RESAMPLE_MODES:
            raise ValueError(f"{source}: resample {resample_code} (a PIL filter code) is not reproduced here; "
                             f"expected one of {sorted(_RESAMPLE_MODES)} (nearest, bilinear, bicubic)")
        rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
        normalize = getattr(processor, "do_normalize", True)
        mean = tuple(float(m) for m in processor.image_mean) if normalize else (0.0, 0.0, 0.0)
        std = tuple(float(v) for v in processor.image_std) if normalize else (1.0, 1.0, 1.0)
        return cls(shortest, resize_hw, crop, _RESAMPLE_MODES[resample_code], rescale, mean, std)


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
    no copy. Resizing runs on the uint8 frames themselves (channels-last): torch's antialiased
    uint8 bilinear/bicubic kernel is PIL's fixed-point algorithm, so it gives PIL's pixels (what
    CLIPImageProcessor computes) to within 1-2 levels (a float resize: up to ~14 levels at sharp
    edges). One known gap: when one axis shrinks and the other grows (e.g. a 180x320 frame to
    224x224), Pillow runs the two 1-D passes in the other order, and single pixels at sharp edges
    (~0.4 %) differ by up to ~20 levels (mean well under 0.1 level)."""
    x = torch.from_numpy(frames)  # [K, H, W, 3] uint8
    height, width = x.shape[1:3]
    new_h, new_w = resized_hw(height, width, spec)
    if (new_h, new_w) != (height, width):
        antialias = spec.resample in ("bilinear", "bicubic")
        resized = F.interpolate(x.permute(0, 3, 1, 2), size=(new_h, new_w), mode=spec.resample,
                                antialias=antialias,
                                **({} if spec.resample == "nearest" else {"align_corners": False}))
        x = resized.permute(0, 2, 3, 1)  # [K, new_h, new_w, 3] uint8
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
