"""The reference implementation's checkpoint layout (microsoft/XPretrain, CLIP-ViP/src), both ways.

The authors released their post-pretrained models (`pretrain_clipvip_base_32.pt`,
`pretrain_clipvip_base_16.pt`) as a `torch.save` of `VidCLIP.state_dict()`: every key is
`clipmodel.` + a Hugging Face CLIP key, plus the reference's own video parameters and two buffers:

    clipmodel.vision_model.embeddings.added_cls            [M-1, D]   our `extra_proxies`
    clipmodel.vision_model.embeddings.temporal_embedding   [1, S, D]  our `temporal_embedding` [S, D]
    clipmodel.vision_model.embeddings.position_ids         [1, 1+P]   0..P, dropped after checking
    clipmodel.text_model.embeddings.position_ids           [1, L]     0..L-1, dropped after checking
    clipmodel.K (every other key)                                    our `clip.K`

The reference proxies are `[class_embedding, added_cls...]` in that order, which is our
`[proxy_0 = class token, extra_proxies...]`. Its trainer ran apex O2, so tensors may be float16;
they are cast to the model's float32 here.

The reference loads non-strictly and skips shape mismatches silently; here a missing key, an
unexpected key, a shape mismatch or a wrong position_ids buffer is an error naming every such key.

This module only maps and checks state dicts; `CLIPViPModel.from_xpretrain` /
`CLIPViPModel.to_xpretrain_state_dict` (model/clip_vip.py) build models with it.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

PREFIX = "clipmodel."
ADDED_CLS_KEY = PREFIX + "vision_model.embeddings.added_cls"
TEMPORAL_KEY = PREFIX + "vision_model.embeddings.temporal_embedding"
VISION_POSITION_IDS_KEY = PREFIX + "vision_model.embeddings.position_ids"
TEXT_POSITION_IDS_KEY = PREFIX + "text_model.embeddings.position_ids"
#: The reference's own trainer-state file (`E2E_TrainingRestorer`, restore.pt) nests the weights here.
NESTED_STATE_KEY = "model_state_dict"

# Reference values (CLIP-ViP/src/configs/*.json "clip_vision_additional_config"): add_cls_num 3
# (so M = 4 proxies with the class token), temporal_size 12.
REFERENCE_NUM_PROXIES = 4
REFERENCE_TEMPORAL_SIZE = 12

# The reference's pixels (datasets/dataloader.py init_transform_dict_simple, every split): resize
# to input_res x input_res with bicubic interpolation, aspect not kept, then a centre crop of the
# same size (a no-op) and OpenAI CLIP's mean/std. PIL's code for bicubic is 3.
_PIL_BICUBIC = 3
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"


class XPretrainCheckpointError(ValueError):
    """A file that is not a reference-layout checkpoint of the expected architecture."""


# ------------------------------------------------------------------------------------ mapping
def to_xpretrain_layout(state: Mapping[str, torch.Tensor], *, vision_positions: int,
                        text_positions: int) -> dict[str, torch.Tensor]:
    """Our `CLIPViPModel.state_dict()` -> the reference's `VidCLIP.state_dict()` key set and shapes.

    state: keys `clip.K`, `extra_proxies` `[M-1, D]`, `temporal_embedding` `[S, D]`;
    vision_positions = 1 + P and text_positions = the text tower's max length, for the
    regenerated `position_ids` buffers (int64 `[1, N]` holding 0..N-1)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        out[_reference_key(name)] = tensor.unsqueeze(0) if name == "temporal_embedding" else tensor
    out[VISION_POSITION_IDS_KEY] = torch.arange(vision_positions, dtype=torch.int64).unsqueeze(0)
    out[TEXT_POSITION_IDS_KEY] = torch.arange(text_positions, dtype=torch.int64).unsqueeze(0)
    return out


def from_xpretrain_layout(checkpoint: Mapping[str, Any], expected: Mapping[str, torch.Tensor], *,
                          vision_positions: int, text_positions: int,
                          source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The reference's state dict -> ours (keys and dtypes of `expected`, our model's state dict).

    Raises XPretrainCheckpointError naming every missing key, unexpected key, shape mismatch,
    non-tensor value and position_ids buffer that is not 0..N-1 (all of them at once)."""
    wanted = to_xpretrain_layout(expected, vision_positions=vision_positions, text_positions=text_positions)
    problems = _layout_problems(checkpoint, wanted)
    if problems:
        raise XPretrainCheckpointError(_explain(source, checkpoint, problems))
    converted: dict[str, torch.Tensor] = {}
    for name, target in expected.items():
        tensor = checkpoint[_reference_key(name)]
        if name == "temporal_embedding":
            tensor = tensor.squeeze(0)
        converted[name] = tensor.detach().to(dtype=target.dtype).contiguous()
    return converted


def _reference_key(name: str) -> str:
    """Our key -> the reference's key (the inverse of `to_xpretrain_layout`'s renaming)."""
    if name == "extra_proxies":
        return ADDED_CLS_KEY
    if name == "temporal_embedding":
        return TEMPORAL_KEY
    if name.startswith("clip."):
        return PREFIX + name[len("clip."):]
    raise ValueError(f"unexpected key {name!r} in a CLIPViPModel state dict")


def _layout_problems(checkpoint: Mapping[str, Any], wanted: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """{"missing": [...], "unexpected": [...], "shape": [...], "not a tensor": [...],
    "position_ids": [...]}, only the non-empty kinds, each entry naming its key."""
    missing = sorted(set(wanted) - set(checkpoint))
    unexpected = sorted(str(key) for key in set(checkpoint) - set(wanted))
    not_tensor, shape, positions = [], [], []
    for key in sorted(set(wanted) & set(checkpoint)):
        value = checkpoint[key]
        if not isinstance(value, torch.Tensor):
            not_tensor.append(f"{key} ({type(value).__name__})")
        elif tuple(value.shape) != tuple(wanted[key].shape):
            shape.append(f"{key}: expected {list(wanted[key].shape)}, found {list(value.shape)}")
        elif key in (VISION_POSITION_IDS_KEY, TEXT_POSITION_IDS_KEY):
            if value.is_floating_point() or not torch.equal(value.long(), wanted[key]):
                positions.append(f"{key}: expected 0..{wanted[key].shape[1] - 1}, found other values")
        elif not value.is_floating_point():
            not_tensor.append(f"{key} (an integer tensor where float weights belong)")
    found = {"missing": missing, "unexpected": unexpected, "shape mismatch": shape,
             "not float weights": not_tensor, "position_ids": positions}
    return {kind: keys for kind, keys in found.items() if keys}


def _explain(source: str, checkpoint: Mapping[str, Any], problems: dict[str, list[str]]) -> str:
    """One message listing every problem, with a hint for the two usual causes."""
    parts = [f"{len(keys)} {kind}: " + "; ".join(keys) for kind, keys in problems.items()]
    hints = []
    if not any(str(key).startswith(PREFIX) for key in checkpoint):
        hints.append(f"no key starts with {PREFIX!r}: expected the reference's VidCLIP.state_dict() "
                     f"(keys like {PREFIX}vision_model.embeddings.added_cls), found keys like "
                     f"{sorted(map(str, checkpoint))[:3]}")
    elif "shape mismatch" in problems or "missing" in problems:
        hints.append("check that --clip names the CLIP this checkpoint was trained from (B/32 vs B/16), and "
                     "num_proxies (added_cls rows + 1) / temporal_size (temporal_embedding rows)")
    return (f"{source}: not a reference-layout CLIP-ViP checkpoint of the expected architecture: "
            + " | ".join(parts) + ("; " + "; ".join(hints) if hints else ""))


# -------------------------------------------------------------------------------------- files
def load_xpretrain_file(path: str | os.PathLike) -> dict[str, Any]:
    """The state dict in a reference `.pt` (a plain `VidCLIP.state_dict()`, or the reference's
    restore.pt holding it under "model_state_dict"), unpickled with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise XPretrainCheckpointError(
            f"{path}: refused: it does not load with torch.load(weights_only=True) (it holds objects "
            f"other than tensors and containers, which could run code): {str(exc).splitlines()[0]}") from exc
    if isinstance(loaded, Mapping) and NESTED_STATE_KEY in loaded and isinstance(loaded[NESTED_STATE_KEY], Mapping):
        loaded = loaded[NESTED_STATE_KEY]
    if not isinstance(loaded, Mapping):
        raise XPretrainCheckpointError(f"{path}: expected a state dict (a mapping of names to tensors), "
                                       f"found a {type(loaded).__name__}")
    return dict(loaded)


def reference_image_processor(image_size: int) -> dict[str, Any]:
    """A `CLIPImageProcessor` config doing the reference's pixels: bicubic resize to
    image_size x image_size (aspect not kept), a centre crop of the same size (no-op), CLIP mean/std."""
    square = {"height": int(image_size), "width": int(image_size)}
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": dict(square),
            "resample": _PIL_BICUBIC, "do_center_crop": True, "crop_size": dict(square),
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(_CLIP_MEAN), "image_std": list(_CLIP_STD), "do_convert_rgb": True}


def with_reference_pixels(files: Mapping[str, bytes], image_size: int) -> dict[str, bytes]:
    """Processor files whose image processor is `reference_image_processor(image_size)`: it is
    written as preprocessor_config.json and replaces the one nested in processor_config.json
    (which transformers reads first), so every reader sees the reference's pixels."""
    config = reference_image_processor(image_size)
    out = dict(files)
    out[IMAGE_PROCESSOR_FILE] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    if PROCESSOR_FILE in out:
        nested = json.loads(out[PROCESSOR_FILE])
        if isinstance(nested, dict) and "image_processor" in nested:
            nested["image_processor"] = config
            out[PROCESSOR_FILE] = (json.dumps(nested, indent=2, sort_keys=True) + "\n").encode()
    return out
