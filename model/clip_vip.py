"""`CLIPViPModel`: a Hugging Face `CLIPModel` with video proxy tokens and proxy-guided attention.

Composition, not inheritance: `self.clip` is an unmodified `transformers.CLIPModel` (patch
embedding, position embedding, layer norms, attention and MLP weights, projections, text tower,
logit scale are all CLIP's); CLIP-ViP adds only `extra_proxies` `[M-1, D]` and
`temporal_embedding` `[S, D]`. The video forward lives in `model/video_encoder.py`.

Checkpoints are a folder with `model.safetensors` + `config.json` (the CLIP config and the
CLIP-ViP fields) + the source checkpoint's tokenizer/processor files. Pickled weights are refused.
The reference implementation's `.pt` checkpoints (the released CLIP-ViP models) load with
`from_xpretrain` and are written with `to_xpretrain_state_dict` (layout: model/xpretrain.py).

The logit scale is CLIP's learnable log-scale s, used as exp(s) in the forward with no clamp
there: as in the reference and open_clip, the parameter itself is clamped in place to
[0, ln 200] after every optimizer step (`clamp_logit_scale_`) and on load. A clamp inside the
forward has zero gradient once s drifts past ln 200, so s could never come back.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPConfig, CLIPModel

from model import xpretrain
from model.loss import clamp_logit_scale_
from model.video_encoder import video_hidden_states

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
MODEL_TYPE = "clip_vip"
# Tokenizer / image-processor files of a Hugging Face CLIP checkpoint, carried along on save.
PROCESSOR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
    "added_tokens.json", "preprocessor_config.json", "processor_config.json",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class PickledWeightsError(ValueError):
    """A checkpoint folder holds only pickled weights, which we never unpickle (DESIGN.md section 6)."""


@dataclass(frozen=True)
class CLIPViPConfig:
    """The fields CLIP-ViP adds to a CLIP config (saved under "clip_vip" in config.json)."""

    num_proxies: int = 4  # M video proxy tokens, proxy_0 = CLIP's class token (paper: 4)
    temporal_size: int = 12  # rows of the temporal embedding table = frames of pretraining (paper: 12)
    proxy_init_std: float | None = None  # std of the new proxies; None -> hidden**-0.5, CLIP's class-token init

    def __post_init__(self) -> None:
        if self.num_proxies < 1 or self.temporal_size < 1:
            raise ValueError(f"expected num_proxies >= 1 and temporal_size >= 1, found "
                             f"{self.num_proxies} and {self.temporal_size}")


class CLIPViPOutput(NamedTuple):
    """What `CLIPViPModel.forward` returns (a NamedTuple, so DDP and torch.compile see the tensors)."""

    video_embeds: torch.Tensor | None  # [B, D] L2-normalised
    text_embeds: torch.Tensor | None  # [B, D] L2-normalised
    logit_scale: torch.Tensor  # 0-dim multiplier exp(s), s kept in [0, ln 200] by clamp_logit_scale_


class CLIPViPModel(nn.Module):
    """CLIP-ViP video-text model. Build with `from_clip` (from CLIP weights) or `from_pretrained`."""

    def __init__(self, clip: CLIPModel, config: CLIPViPConfig | None = None,
                 processor_files: dict[str, bytes] | None = None) -> None:
        super().__init__()
        self.config = config or CLIPViPConfig()
        self.clip = clip
        class_embedding = clip.vision_model.embeddings.class_embedding
        dim = class_embedding.shape[0]
        std = self.config.proxy_init_std if self.config.proxy_init_std is not None else dim ** -0.5
        like = {"device": class_embedding.device, "dtype": class_embedding.dtype}
        self.extra_proxies = nn.Parameter(torch.randn(self.config.num_proxies - 1, dim, **like) * std)
        self.temporal_embedding = nn.Parameter(torch.zeros(self.config.temporal_size, dim, **like))
        self.gradient_checkpointing = False
        # Raw bytes of the source checkpoint's tokenizer/processor files, written beside our weights.
        self.processor_files = dict(processor_files or {})

    # ----------------------------------------------------------------------------------- encoders
    def video_hidden_states(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, T, 3, H, W]` (or `[B, 3, H, W]`, one frame) -> last hidden states `[B, M + T*P, Dv]`."""
        if pixel_values.dim() == 4:
            pixel_values = pixel_values.unsqueeze(1)
        if pixel_values.dim() != 5:
            raise ValueError(f"expected pixel_values [B, T, 3, H, W], found shape {tuple(pixel_values.shape)}")
        return video_hidden_states(self.clip.vision_model, self.extra_proxies, self.temporal_embedding,
                                   pixel_values, self.gradient_checkpointing and self.training)

    def encode_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, T, 3, H, W]` CLIP-normalised frames (a `[B, 3, H, W]` image is a 1-frame video)
        -> `[B, D]` L2-normalised: proxy_0 -> post-LayerNorm -> visual projection."""
        proxy_0 = self.video_hidden_states(pixel_values)[:, 0]
        pooled = self.clip.vision_model.post_layernorm(proxy_0)
        return F.normalize(self.clip.visual_projection(pooled), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, L]` token ids (+ mask) -> `[B, D]` L2-normalised, CLIP's text tower unchanged."""
        pooled = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.clip.text_projection(pooled), dim=-1)

    @property
    def logit_scale(self) -> torch.Tensor:
        """0-dim logit multiplier exp(s), s = CLIP's learnable log-scale (not clamped here: the
        parameter is clamped in place after each optimizer step and on load, `clamp_logit_scale_`)."""
        return self.clip.logit_scale.exp()

    def clamp_logit_scale_(self) -> "CLIPViPModel":
        """Clamp the log-scale parameter in place to [0, ln 200], outside the graph (the
        reference's `torch.clamp_(logit_scale.data, 0, log(200))`); call after optimizer.step()."""
        clamp_logit_scale_(self.clip.logit_scale)
        return self

    def forward(self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> CLIPViPOutput:
        """Video and/or text features plus the clamped logit scale; a missing input gives None."""
        video = self.encode_video(pixel_values) if pixel_values is not None else None
        text = self.encode_text(input_ids, attention_mask) if input_ids is not None else None
        return CLIPViPOutput(video, text, self.logit_scale)

    # ----------------------------------------------------------------------------------- training
    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each layer's activations in the backward (video and text towers), in train mode."""
        self.gradient_checkpointing = enabled
        # transformers >= 5 renamed gradient_checkpointing_* to activation_checkpointing_*.
        prefix = "activation" if hasattr(self.clip, "activation_checkpointing_enable") else "gradient"
        if enabled:
            getattr(self.clip, f"{prefix}_checkpointing_enable")({"use_reentrant": False})
        else:
            getattr(self.clip, f"{prefix}_checkpointing_disable")()

    def no_weight_decay_names(self) -> set[str]:
        """Parameters excluded from weight decay (DESIGN.md recipe): biases, LayerNorms, the
        proxies (class token included), the temporal embedding and the logit scale."""
        names = {"extra_proxies", "temporal_embedding", "clip.logit_scale",
                 "clip.vision_model.embeddings.class_embedding"}
        for module_name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                names.update(f"{module_name}.{param}" for param, _ in module.named_parameters(recurse=False))
        names.update(name for name, _ in self.named_parameters() if name.endswith(".bias"))
        return names

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Two optimiser groups over the trainable parameters: `[{decay}, {no decay}]`, each with a
        "name" key (optimisers keep extra keys), ready for `torch.optim.AdamW(groups, ...)`."""
        excluded = self.no_weight_decay_names()
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if name in excluded else decay).append(param)
        return [{"name": "decay", "params": decay, "weight_decay": weight_decay},
                {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]

    # -------------------------------------------------------------------------------- persistence
    @classmethod
    def from_clip(cls, source: str | os.PathLike | CLIPModel, num_proxies: int = 4, temporal_size: int = 12,
                  config: CLIPViPConfig | None = None, logit_scale_init: float | None = None,
                  **from_pretrained_kwargs) -> "CLIPViPModel":
        """CLIP-ViP on the weights of any Hugging Face CLIP checkpoint (hub name, local folder, or
        a `CLIPModel`); new proxies random, temporal embedding zero. Safetensors weights only.

        `config` overrides `num_proxies` / `temporal_size`; `logit_scale_init` sets the log-scale
        s (the reference starts post-pretraining from CLIP with 4.60; None keeps CLIP's own);
        extra kwargs go to `CLIPModel.from_pretrained`.
        """
        config = config or CLIPViPConfig(num_proxies=num_proxies, temporal_size=temporal_size)
        if isinstance(source, CLIPModel):
            clip, folder = source, _local_folder(getattr(source, "name_or_path", ""))
        else:
            folder = _local_folder(source)
            if folder is not None:
                _refuse_pickled(folder, ("*.safetensors",))
            clip = CLIPModel.from_pretrained(str(source), use_safetensors=True, **from_pretrained_kwargs)
            if folder is None:
                folder = _download_processor_files(str(source))
        model = cls(clip, config, _read_processor_files(folder))
        if logit_scale_init is not None:
            with torch.no_grad():
                model.clip.logit_scale.fill_(float(logit_scale_init))
        return model.clamp_logit_scale_().eval()

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write `model.safetensors`, `config.json` and the processor files; returns the folder."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        meta = {"model_type": MODEL_TYPE, "architectures": [type(self).__name__],
                MODEL_TYPE: asdict(self.config), "clip_config": self.clip.config.to_dict()}
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        for name, data in self.processor_files.items():
            (folder / name).write_bytes(data)
        return folder

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> "CLIPViPModel":
        """Load a folder written by `save_pretrained` (or a hub repo holding one): float32, CPU,
        eval mode; move it with `.to(device)`.

        Raises PickledWeightsError when the folder holds only pickled weights (`pytorch_model.bin`, ...).
        """
        folder = _local_folder(source)
        if folder is None:
            folder = _download(str(source), [CONFIG_NAME, WEIGHTS_NAME, *PROCESSOR_FILES])
        _refuse_pickled(folder, (WEIGHTS_NAME,))
        meta = json.loads((folder / CONFIG_NAME).read_text())
        if MODEL_TYPE not in meta or "clip_config" not in meta:
            raise ValueError(f"{folder / CONFIG_NAME}: expected a CLIP-ViP config (keys {MODEL_TYPE!r}, "
                             f"'clip_config'), found keys {sorted(meta)}; for a plain CLIP checkpoint use "
                             f"CLIPViPModel.from_clip")
        known = {field.name for field in fields(CLIPViPConfig)}
        config = CLIPViPConfig(**{k: v for k, v in meta[MODEL_TYPE].items() if k in known})
        clip = CLIPModel(CLIPConfig.from_dict(meta["clip_config"]))
        model = cls(clip, config, _read_processor_files(folder))
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)), strict=True)
        return model.clamp_logit_scale_().eval()

    # ------------------------------------------------------------------ the reference's .pt layout
    @classmethod
    def from_xpretrain(cls, checkpoint: str | os.PathLike | dict, clip: str | os.PathLike | CLIPConfig, *,
                       num_proxies: int = xpretrain.REFERENCE_NUM_PROXIES,
                       temporal_size: int = xpretrain.REFERENCE_TEMPORAL_SIZE,
                       reference_pixels: bool = True) -> "CLIPViPModel":
        """A model from the reference implementation's checkpoint (XPretrain's `VidCLIP.state_dict()`,
        e.g. the released `pretrain_clipvip_base_32.pt`): float32, CPU, eval mode.

        checkpoint: the `.pt` path (loaded with `torch.load(weights_only=True)`; float16 tensors
            are cast to float32), or the state dict itself.
        clip: hub name or local CLIP folder of the CLIP it was trained from (its config gives the
            architecture; its tokenizer and image processor are carried along; its weights are not
            read), or a `CLIPConfig` (then no tokenizer/processor files).
        num_proxies / temporal_size: the reference's values (add_cls_num 3 + the class token, 12).
        reference_pixels: the carried image processor resizes frames to S x S bicubic like the
            reference (aspect not kept), instead of CLIP's short side + centre crop.

        Strict: raises `XPretrainCheckpointError` naming every missing, unexpected or mis-shaped key
        (the reference's own loader skips them silently). The logit scale is clamped to [0, ln 200].
        """
        files: dict[str, bytes] = {}
        if isinstance(clip, CLIPConfig):
            clip_config = clip
        else:
            folder = _local_folder(clip)
            if folder is not None and is_clip_vip_checkpoint(folder):
                raise ValueError(f"{folder} is a CLIP-ViP checkpoint folder; `clip` must name the plain CLIP the "
                                 f"reference checkpoint was trained from (e.g. openai/clip-vit-base-patch32)")
            clip_config = CLIPConfig.from_pretrained(str(clip))
            files = _read_processor_files(folder if folder is not None else _download_processor_files(str(clip)))
        config = CLIPViPConfig(num_proxies=num_proxies, temporal_size=temporal_size)
        if reference_pixels:
            files = xpretrain.with_reference_pixels(files, clip_config.vision_config.image_size)
        model = cls(CLIPModel(clip_config), config, files)
        source = "state dict" if isinstance(checkpoint, dict) else str(checkpoint)
        state = checkpoint if isinstance(checkpoint, dict) else xpretrain.load_xpretrain_file(checkpoint)
        converted = xpretrain.from_xpretrain_layout(state, model.state_dict(), source=source,
                                                    **model._position_counts())
        model.load_state_dict(converted, strict=True)
        return model.clamp_logit_scale_().eval()

    def to_xpretrain_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """This model's weights in the reference's `VidCLIP.state_dict()` layout (position_ids
        regenerated), detached on CPU; `torch.save` it and the reference code loads it. `dtype`
        (e.g. torch.float16, as the released files) casts the float tensors."""
        state = {name: tensor.detach().cpu() for name, tensor in self.state_dict().items()}
        if dtype is not None:
            state = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor
                     for name, tensor in state.items()}
        return xpretrain.to_xpretrain_layout(state, **self._position_counts())

    def _position_counts(self) -> dict[str, int]:
        """Lengths of the reference's two position_ids buffers: 1 + P vision positions, L text positions."""
        return {"vision_positions": self.clip.vision_model.embeddings.position_embedding.weight.shape[0],
                "text_positions": self.clip.text_model.embeddings.position_embedding.weight.shape[0]}


def is_clip_vip_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a checkpoint written by `CLIPViPModel.save_pretrained` (its config.json
    has the "clip_vip" section), as opposed to a plain CLIP folder or anything else."""
    config_file = Path(folder) / CONFIG_NAME
    return config_file.is_file() and MODEL_TYPE in json.loads(config_file.read_text())


def check_checkpoint_weights(folder: str | os.PathLike) -> None:
    """Raise unless `folder` holds the safetensors weights `from_pretrained` (a CLIP-ViP folder) or
    `from_clip` (a CLIP folder) would load: PickledWeightsError when it holds only pickled weights,
    FileNotFoundError when it holds none. Reads file names only, so a job can check its inputs
    before any expensive work."""
    folder = Path(folder)
    _refuse_pickled(folder, (WEIGHTS_NAME,) if is_clip_vip_checkpoint(folder) else ("*.safetensors",))


#: CLIP's text position table when a config leaves it out (transformers' CLIPTextConfig default).
CLIP_TEXT_POSITIONS = 77


def text_positions(folder: str | os.PathLike) -> int | None:
    """Token positions the text tower of the checkpoint in `folder` has (CLIP: 77), read from its
    config.json (a CLIP-ViP or a plain CLIP one); None when there is no readable config."""
    try:
        meta = json.loads((Path(folder) / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    clip_config = meta.get("clip_config", meta) if isinstance(meta, dict) else {}
    text_config = clip_config.get("text_config") if isinstance(clip_config, dict) else None
    value = (text_config or {}).get("max_position_embeddings", CLIP_TEXT_POSITIONS)
    return value if isinstance(value, int) else None


def _local_folder(source: str | os.PathLike) -> Path | None:
    """The folder when `source` is an existing local directory, else None (a hub name)."""
    path = Path(source) if source else None
    return path if path is not None and path.is_dir() else None


def _refuse_pickled(folder: Path, wanted_globs: tuple[str, ...]) -> None:
    """Raise unless `folder` has safetensors weights matching `wanted_globs`; say what is there."""
    if any(next(folder.glob(pattern), None) is not None for pattern in wanted_globs):
        return
    pickled = sorted(path.name for path in folder.iterdir() if path.name.endswith(PICKLE_SUFFIXES))
    if pickled:
        raise PickledWeightsError(
            f"{folder}: expected safetensors weights ({', '.join(wanted_globs)}), found only pickled "
            f"weights {pickled}; pickled checkpoints are never loaded (they can run code). Convert them "
            f"once in a trusted environment, e.g. CLIPModel.from_pretrained(folder).save_pretrained(new_folder)."
        )
    raise FileNotFoundError(f"{folder}: expected weights {', '.join(wanted_globs)}, found none")


def _read_processor_files(folder: Path | None) -> dict[str, bytes]:
    """Bytes of the tokenizer/processor files present in `folder`."""
    if folder is None:
        return {}
    return {name: (folder / name).read_bytes() for name in PROCESSOR_FILES if (folder / name).is_file()}


def _download(repo_id: str, filenames: list[str]) -> Path:
    """Snapshot of the given files of a hub repo (those that exist) into the local cache."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=filenames))


def _download_processor_files(repo_id: str) -> Path | None:
    """The hub repo's tokenizer/processor files (cached), or None with a warning when unavailable."""
    try:
        return _download(repo_id, list(PROCESSOR_FILES))
    except Exception as error:  # noqa: BLE001 - the weights loaded; missing tokenizer files are not fatal
        logger.warning("could not fetch tokenizer/processor files of %s: %s", repo_id, error)
        return None
