"""TrainConfig: every knob of the trainer, plus the loader's `TrainDataConfig`, from one flat YAML.

A training YAML (configs/pretrain_b16.yaml, configs/tiny.yaml) is flat: each key belongs to
`TrainConfig` (below) or to the streaming loader's `TrainDataConfig` (train/data), and every key
is also a `--flag-name`. `load_setup` routes the keys, type-checks both halves and checks that
they fit together (a loss needs the texts its terms use), so a bad combination fails before any
process starts.

The run's identity for `--resume` is `config_digest`: a hash of every value that changes what the
run computes. Bookkeeping keys (logging, checkpoint cadence, worker counts, progress bar) may
change between a run and its resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from vipstream.config import ConfigError, config_field as _f, config_to_dict, load_config, read_yaml_mapping

LOSSES_OCL = ("ocl", "joint", "vs", "vc", "vs+vc")  # plus "+fc" forms, parsed by model.loss.parse_variant
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Keys that may differ between a run and its `--resume` (they do not change the computed run).
BOOKKEEPING_KEYS = frozenset({
    "log_every", "save_every", "keep_checkpoints", "progress", "num_workers", "prefetch_factor",
    "pin_memory", "decode_threads", "val_every", "val_data", "val_metric", "val_batch_size", "compile",
    "skip_warnings_in_full", "skip_warnings_every_s",
    "max_nonfinite_steps",
})


@dataclass(frozen=True)
class TrainConfig:
    # Model. `init` is a hub CLIP name or a local CLIP folder (CLIPViPModel.from_clip) or a
    # CLIP-ViP checkpoint folder (CLIPViPModel.from_pretrained).
    init: str = _f("openai/clip-vit-base-patch32", "hub CLIP name, local CLIP folder, or CLIP-ViP checkpoint folder")
    num_proxies: int = _f(4, "video proxy tokens M when starting from CLIP (paper: 4)")
    temporal_size: int = _f(12, "temporal embedding rows when starting from CLIP (paper: 12 frames)")
    # The reference (XPretrain VidCLIP) sets the log logit scale to 4.60 when it starts from CLIP;
    # a CLIP-ViP checkpoint keeps its own. The parameter is clamped to [0, ln 200] after each step.
    logit_scale_init: float = _f(4.60, "log logit scale when starting from a plain CLIP (reference: 4.60; "
                                       "openai CLIP's own is ln 100 = 4.6052); a CLIP-ViP --init keeps its own")
    # Loss. "ocl" is the paper's six-term sum (DESIGN.md section 1); "infonce" (fine-tuning, or
    # text_source mixed/annotation) is symmetric video-text InfoNCE over the one text per clip.
    loss: str = _f("ocl", "ocl | joint | vs | vc | vs+vc (any may add +fc) | infonce")
    local_loss: bool = _f(False, "each rank computes only its rows of the logits (b x B instead of B x B)")
    # Optimiser: AdamW on model.parameter_groups (no decay on biases, LayerNorms, proxies,
    # temporal embedding, logit scale). Reference recipe: lr 5e-6, wd 0.05, betas (0.9, 0.98).
    lr: float = _f(5e-6, "peak learning rate (after warm-up)")
    weight_decay: float = _f(0.05, "AdamW weight decay of the decayed group")
    betas: tuple[float, ...] = _f((0.9, 0.98), "AdamW betas (b1,b2)")
    eps: float = _f(1e-8, "AdamW epsilon (torch's default)")
    warmup_fraction: float = _f(0.01, "fraction of max_steps of linear warm-up, then cosine to 0 (reference: 0.01)")
    max_steps: int = _f(1000, "optimizer steps of the run")
    # The reference sums the six OCL terms and clips the norm of that sum's gradient at 5.0
    # (open_clip averages its two terms); 0 disables clipping (the norm is still logged).
    grad_clip_norm: float = _f(5.0, "clip the global gradient norm at this value (0: off)")
    # A step with a NaN/inf loss or gradient norm is skipped (train/finite.py). A skipped step leaves
    # the weights as they were, so one that persists over this many different batches comes from
    # the weights, not the data: the run stops (exit 1) naming the last good checkpoint.
    max_nonfinite_steps: int = _f(5, "stop after this many consecutive steps with a non-finite loss or grad norm")
    # Exact large-batch accumulation (open_clip's accum_freq): global batch =
    # batch_size x world size x accum_freq, with every negative of that batch.
    accum_freq: int = _f(1, "micro-batches per optimizer step (exact contrastive accumulation)")
    precision: str = _f("auto", "auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 (GradScaler)")
    gradient_checkpointing: bool = _f(False, "recompute layer activations in the backward (saves memory)")
    compile: bool = _f(False, "torch.compile the model")
    seed: int = _f(0, "seed of model init, data order and frame sampling")
    # Bookkeeping
    log_every: int = _f(10, "log metrics every N steps (metrics.jsonl, TensorBoard)")
    save_every: int = _f(1000, "checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _f(3, "keep the last K step checkpoints")
    progress: bool = _f(True, "tqdm progress bar on rank 0")
    # Fine-tuning validation (issue 9): rank 0 evaluates retrieval every val_every steps and keeps
    # checkpoints/best/ by val_metric ("t2v/R@1" = text->video recall at 1).
    val_data: str | None = _f(None, "retrieval set (build OUT folder) to validate on; unset: no validation")
    val_every: int = _f(0, "validate every N steps (0: off)")
    val_metric: str = _f("t2v/R@1", "metric that picks checkpoints/best/ (higher is better)")
    val_batch_size: int = _f(0, "validation batch size (0: the training batch_size)")

    def __post_init__(self) -> None:
        # Flags give "0.9,0.98" as strings; the YAML gives floats.
        try:
            object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"betas: expected two floats like 0.9,0.98, found {self.betas!r}") from exc

    def validate(self) -> None:
        if self.loss != "infonce":
            from model.loss import parse_variant

            try:
                parse_variant(self.loss)
            except ValueError as exc:
                raise ConfigError(f"loss: {exc} (or 'infonce')") from exc
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, found {self.precision!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two values in [0, 1), found {self.betas}")
        for name in ("max_steps", "accum_freq", "log_every", "save_every", "keep_checkpoints",
                     "num_proxies", "temporal_size", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, found {getattr(self, name)}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction must be in [0, 1), found {self.warmup_fraction}")
        for name in ("lr", "weight_decay", "grad_clip_norm", "eps", "warmup_fraction"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, found {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip_norm < 0:
            raise ConfigError(f"need lr > 0, weight_decay >= 0, grad_clip_norm >= 0; found "
                              f"{self.lr}, {self.weight_decay}, {self.grad_clip_norm}")
        if self.val_every < 0 or self.val_batch_size < 0:
            raise ConfigError("val_every and val_batch_size must be >= 0")
        if not 0.0 <= self.logit_scale_init <= math.log(200.0):
            raise ConfigError(f"logit_scale_init must be in [0, ln 200 = 5.298], found {self.logit_scale_init}")
        if self.val_every and not self.val_data:
            raise ConfigError(f"val_every={self.val_every} needs val_data (a retrieval set's OUT folder)")


def data_config_class() -> type:
    """The loader's config class (imported lazily: train.data pulls in webdataset and decord)."""
    from train.data import TrainDataConfig

    return TrainDataConfig


@dataclass(frozen=True)
class TrainSetup:
    """The two halves of a training config: the trainer's and the loader's."""

    train: TrainConfig
    data: Any  # train.data.TrainDataConfig

    def to_dict(self) -> dict[str, Any]:
        """One flat mapping, the form of the YAML file (RUN/config.yaml)."""
        return {**config_to_dict(self.train), **config_to_dict(self.data)}

    @property
    def digest(self) -> str:
        return config_digest(self.to_dict())


def config_digest(flat: dict[str, Any]) -> str:
    """sha256 (16 hex digits) of the values that change what a run computes (see BOOKKEEPING_KEYS)."""
    kept = {k: v for k, v in sorted(flat.items()) if k not in BOOKKEEPING_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys (outside BOOKKEEPING_KEYS) whose values differ between two flat configs."""
    keys = (set(old) | set(new)) - BOOKKEEPING_KEYS
    return sorted(k for k in keys if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str))


def load_setup(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainSetup:
    """Defaults < YAML at `path` < `overrides` (None ignored), split between the trainer and the
    loader, each type-checked, then checked together (`check_loss_fits_texts`)."""
    data_cls = data_config_class()
    values = {**read_yaml_mapping(path), **{k.replace("-", "_"): v for k, v in (overrides or {}).items() if v is not None}}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    data_keys = {f.name for f in dataclasses.fields(data_cls)}
    unknown = sorted(set(values) - train_keys - data_keys)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(train_keys | data_keys)}")
    train = load_config(TrainConfig, None, {k: v for k, v in values.items() if k in train_keys})
    data = load_config(data_cls, None, {k: v for k, v in values.items() if k in data_keys})
    setup = TrainSetup(train, data)
    check_loss_fits_texts(train.loss, data.text_source)
    return setup


def loss_features(loss: str, text_source: str) -> tuple[str, ...]:
    """Features the loss needs besides the video: from {"subtitle", "caption", "frame", "text"}.

    "infonce" takes the one text per clip: the loader's `text_*` for mixed/annotation, else the
    subtitle or the caption the text source gives.
    """
    if loss == "infonce":
        return ({"mixed": ("text",), "annotation": ("text",), "subtitle": ("subtitle",),
                 "caption": ("caption",)}.get(text_source, ()))
    from model.loss import parse_variant

    terms = parse_variant(loss)
    needs = []
    if terms.video_subtitle or terms.joint:
        needs.append("subtitle")
    if terms.video_caption or terms.joint or terms.frame_caption:
        needs.append("caption")
    if terms.frame_caption:
        needs.append("frame")
    return tuple(needs)


#: The texts each loader text source delivers.
SOURCE_TEXTS = {"subtitle": {"subtitle"}, "caption": {"caption"}, "both": {"subtitle", "caption"},
                "mixed": {"text"}, "annotation": {"text"}}


def check_loss_fits_texts(loss: str, text_source: str) -> None:
    """Refuse a loss whose terms need a text the text source does not deliver, saying what fits."""
    given = SOURCE_TEXTS.get(text_source)
    if given is None:
        raise ConfigError(f"text_source must be one of {sorted(SOURCE_TEXTS)}, found {text_source!r}")
    needs = set(loss_features(loss, text_source)) - {"frame"}
    if loss == "infonce" and not needs:
        raise ConfigError(f"loss 'infonce' needs one text per clip, but text_source={text_source!r} gives "
                          f"{sorted(given)}; use text_source subtitle, caption, mixed or annotation, or an "
                          f"OCL loss (ocl, joint, vs+vc, ...)")
    missing = needs - given
    if missing:
        fits = {"subtitle": "vs or infonce", "caption": "vc, vc+fc or infonce", "both": "any OCL variant",
                "mixed": "infonce", "annotation": "infonce"}[text_source]
        raise ConfigError(f"loss {loss!r} needs {sorted(missing)} texts, but text_source={text_source!r} "
                          f"gives {sorted(given)}; with this text source use loss {fits}")
