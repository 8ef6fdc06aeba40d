"""Auxiliary captions of clips: the middle frame of a clip -> an image-to-text model -> one caption.

Pure of Ray, files and progress bars (`pipeline/caption/job.py` maps these over shards):

    middle_frame(mp4_bytes)        -> (frame [H, W, 3] uint8, frame_index, frame_time_s)
    check_captioner(cfg)           -> fails fast, naming the model, before any work is scheduled
    Captioner(cfg)(frames)         -> list[str], one batched `generate` per call
    derive_captioner_id(cfg)       -> a stable, file-safe id, so two captioners never share a folder

The captioned frame is `vipstream.schema.middle_frame_index(n)` of the decoded clip: the same
frame the trainer encodes for the F<->C loss (DESIGN.md section 1, OCL), so F and C describe one
image. Any Hugging Face image-to-text model loadable by `AutoModelForImageTextToText` (BLIP,
GIT, VisionEncoderDecoder ViT+GPT-2, ...) works, by hub name or local folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.errors import StageError
from pipeline.hf_models import dtype_kwarg, local_model_problem, quiet_transformers
from vipstream.config import ConfigError, config_field as _f
from vipstream.schema import middle_frame_index, sanitize_id

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class CaptionerConfig:
    """Every knob of `vipstream caption` (configs/caption.yaml; each key is also a --flag)."""

    captioner: str | None = _f(None, "Hugging Face image-to-text model: hub name or local folder")
    captioner_id: str | None = _f(None, "folder name under captions/; unset: derived from the model "
                                        "name and generation settings")
    # Generation. Greedy decoding (num_beams=1, no sampling) is deterministic: a rerun gives the
    # same captions. 30 new tokens covers BLIP/GIT captions (typically 8-15 words).
    max_new_tokens: int = _f(30, "longest caption, in generated tokens")
    num_beams: int = _f(1, "beam search width (1: greedy)")
    prompt: str | None = _f(None, "text prefix for conditional captioning (BLIP, GIT); kept in the caption")
    # 30 word-piece tokens are at most ~30 words (~200 characters); 1,000 leaves room for a long
    # prompt and a larger max_new_tokens, and is far beyond the 77 tokens CLIP's text tower reads.
    # A longer caption (a runaway generation, a model that repeats, a hostile imported value:
    # OFA's released captions are ~10 words) is cut and counted.
    max_caption_chars: int = _f(1000, "longest caption written to a sidecar, generated or imported with --import, "
                                      "in characters (longer: cut, counted)")
    dtype: str = _f("float32", "model weights dtype: float32, float16 or bfloat16 (half types need a GPU)")
    # Ray Data. One captioner actor holds one model copy; batch_size frames go to one generate.
    batch_size: int = _f(16, "frames per generate call")
    concurrency: int = _f(1, "captioner actors (model copies)")
    num_gpus: float = _f(0.0, "GPUs per captioner actor (0: CPU)")
    num_cpus: float = _f(1.0, "CPUs per captioner actor (also its torch threads on CPU)")
    decode_cpus: float = _f(1.0, "CPUs per shard read/decode task")
    ray_num_cpus: int = _f(0, "CPUs for a local Ray (0: all); ignored with --ray-address")
    overwrite: bool = _f(False, "recaption shards whose sidecar already exists")

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, found {self.max_new_tokens}")
        if self.max_caption_chars < 1:
            raise ConfigError(f"max_caption_chars must be >= 1, found {self.max_caption_chars}")
        if self.num_beams < 1:
            raise ConfigError(f"num_beams must be >= 1, found {self.num_beams}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, found {self.batch_size}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, found {self.concurrency}")
        if self.num_gpus < 0 or self.num_cpus <= 0 or self.decode_cpus <= 0:
            raise ConfigError(f"need num_gpus >= 0, num_cpus > 0 and decode_cpus > 0, found "
                              f"{self.num_gpus}, {self.num_cpus}, {self.decode_cpus}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, found {self.dtype!r}")
        if self.captioner_id is not None and sanitize_id(self.captioner_id) != self.captioner_id:
            raise ConfigError(f"captioner_id may only hold [A-Za-z0-9_-], found {self.captioner_id!r} "
                              f"(try {sanitize_id(self.captioner_id)!r})")

    def generation_settings(self) -> dict[str, Any]:
        """What changes the captions (recorded in captioner.json; part of the derived id)."""
        return {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                "do_sample": False, "prompt": self.prompt, "dtype": self.dtype}


class CaptionerLoadError(RuntimeError):
    """The captioner model or its processor cannot be loaded; the message names the model."""


# ---------------------------------------------------------------------------------------------
# Middle frame


def middle_frame(mp4_bytes: bytes) -> tuple[np.ndarray, int, float]:
    """Decode the middle frame of a clip: (frame [H, W, 3] uint8 RGB, frame_index, frame_time_s).

    frame_index = n // 2 over the frames decord decodes (the trainer's rule), frame_time_s its
    presentation time. Raises StageError(stage="decode") when the bytes are not a decodable video.
    """
    import decord

    if not mp4_bytes:
        raise StageError("decode", "the mp4 member is empty (0 bytes)")
    try:
        reader = decord.VideoReader(io.BytesIO(mp4_bytes), ctx=decord.cpu(0), num_threads=1)
        num_frames = len(reader)
        if num_frames <= 0:
            raise StageError("decode", f"the clip decodes to 0 frames ({len(mp4_bytes)} bytes)")
        index = middle_frame_index(num_frames)
        frame = reader[index].asnumpy()
        time_s = float(reader.get_frame_timestamp(index)[0])
    except StageError:
        raise
    except Exception as exc:  # decord raises bare RuntimeError/DECORDError with ffmpeg's text
        first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise StageError("decode", f"expected a decodable mp4 clip ({len(mp4_bytes)} bytes), "
                                   f"decord failed: {first_line}") from None
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise StageError("decode", f"expected an RGB frame [H, W, 3], found shape {frame.shape}")
    return np.ascontiguousarray(frame, dtype=np.uint8), index, time_s


# ---------------------------------------------------------------------------------------------
# Captioner identity


def _model_stem(name_or_path: str) -> str:
    """'Salesforce/blip-image-captioning-base' -> 'blip-image-captioning-base'; './x/y/' -> 'y'."""
    stem = Path(str(name_or_path).rstrip("/\\")).name or str(name_or_path)
    return sanitize_id(stem).lower()


def derive_captioner_id(cfg: CaptionerConfig) -> str:
    """A stable folder name from the model and the settings that change its captions.

    e.g. 'blip-image-captioning-base-greedy-t30', 'my-captioner-beam3-t20-p1a2b3c4-fp16'. Two
    local folders with one name still collide here; captioner.json catches that (caption_job).
    """
    if not cfg.captioner:
        raise ConfigError("no captioner given (--captioner NAME_OR_PATH)")
    parts = [_model_stem(cfg.captioner),
             "greedy" if cfg.num_beams == 1 else f"beam{cfg.num_beams}", f"t{cfg.max_new_tokens}"]
    if cfg.prompt:
        parts.append("p" + hashlib.sha256(cfg.prompt.encode("utf-8")).hexdigest()[:8])
    if cfg.dtype != "float32":
        parts.append({"float16": "fp16", "bfloat16": "bf16"}[cfg.dtype])
    return sanitize_id("-".join(parts))


def resolve_captioner_id(cfg: CaptionerConfig) -> str:
    return cfg.captioner_id or derive_captioner_id(cfg)


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class _Preprocess:
    """Images (+ optional prompt) -> model inputs, and token ids -> text.

    `processor` is a combined processor (BLIP, GIT) when the model folder has one; some models
    (VisionEncoderDecoder, e.g. nlpconnect/vit-gpt2) only ship an image processor and a
    tokenizer, which AutoProcessor returns one of, so both are loaded separately then.
    """

    processor: Any | None
    image_processor: Any
    tokenizer: Any

    def inputs(self, images: Sequence[np.ndarray], prompt: str | None) -> dict[str, Any]:
        if prompt:
            if self.processor is None:
                raise ConfigError("prompt needs a model whose processor takes text (BLIP, GIT); "
                                  "this one has only an image processor and a tokenizer")
            return dict(self.processor(images=list(images), text=[prompt] * len(images),
                                       return_tensors="pt"))
        if self.processor is not None:
            return dict(self.processor(images=list(images), return_tensors="pt"))
        return {"pixel_values": self.image_processor(images=list(images), return_tensors="pt").pixel_values}

    def decode(self, token_ids: Any) -> list[str]:
        decoder = self.processor if self.processor is not None else self.tokenizer
        return [" ".join(text.split()) for text in decoder.batch_decode(token_ids, skip_special_tokens=True)]


def _load_preprocess(name_or_path: str) -> _Preprocess:
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    processor = AutoProcessor.from_pretrained(name_or_path)
    if getattr(processor, "image_processor", None) is not None and getattr(processor, "tokenizer", None) is not None:
        return _Preprocess(processor, processor.image_processor, processor.tokenizer)
    return _Preprocess(None, AutoImageProcessor.from_pretrained(name_or_path),
                       AutoTokenizer.from_pretrained(name_or_path))


def _model_class_for(config: Any) -> Any:
    """The auto class that maps this config to a generating image-to-text model."""
    import transformers
    from transformers import AutoModelForImageTextToText

    candidates = [AutoModelForImageTextToText]
    if hasattr(transformers, "AutoModelForVision2Seq"):  # transformers 4.x
        candidates.append(transformers.AutoModelForVision2Seq)
    for auto_class in candidates:
        if type(config) in auto_class._model_mapping:
            return auto_class
    raise CaptionerLoadError(
        f"model type {getattr(config, 'model_type', '?')!r} is not an image-to-text model "
        f"(AutoModelForImageTextToText knows BLIP, GIT, VisionEncoderDecoder, ...)")


def check_captioner(cfg: CaptionerConfig) -> dict[str, Any]:
    """Fail fast, before Ray work: config, model class and processor must load (no weights).

    Returns what captioner.json records about the model. Raises CaptionerLoadError naming it.
    """
    quiet_transformers()
    name = cfg.captioner
    if not name:
        raise ConfigError("no captioner given (--captioner NAME_OR_PATH)")
    problem = local_model_problem(name)
    if problem is not None:
        raise CaptionerLoadError(f"cannot load captioner {name!r}: {problem}")
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name)
        auto_class = _model_class_for(config)
        preprocess = _load_preprocess(name)
    except CaptionerLoadError as exc:
        raise CaptionerLoadError(f"cannot load captioner {name!r}: {exc}") from None
    except Exception as exc:
        raise CaptionerLoadError(f"cannot load captioner {name!r}: {type(exc).__name__}: "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    if cfg.prompt and preprocess.processor is None:
        raise ConfigError(f"captioner {name!r} has no text processor, so prompt={cfg.prompt!r} "
                          f"cannot be used")
    return {"model": name,
            "model_path": str(Path(name).resolve()) if Path(name).is_dir() else None,
            "model_type": config.model_type,
            "auto_class": auto_class.__name__}


class Captioner:
    """One loaded model: `captioner(frames)` -> captions, one batched generate per call.

    Frames are RGB uint8 arrays [H, W, 3] of any size (the processor resizes them). Runs on CUDA
    when visible (Ray hides GPUs from actors without `num_gpus`), else on CPU.
    """

    def __init__(self, cfg: CaptionerConfig, device: str | None = None):
        import torch

        quiet_transformers()
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = getattr(torch, cfg.dtype)
        if self.device.type == "cpu" and dtype != torch.float32:
            log.warning("dtype %s on CPU is slow or unsupported; using float32", cfg.dtype)
            dtype = torch.float32
        self.dtype = dtype
        name = cfg.captioner
        try:
            from transformers import AutoConfig

            auto_class = _model_class_for(AutoConfig.from_pretrained(name))
            self.model = auto_class.from_pretrained(name, **dtype_kwarg(dtype)).to(self.device).eval()
            self.preprocess = _load_preprocess(name)
        except Exception as exc:
            raise CaptionerLoadError(f"cannot load captioner {name!r}: {type(exc).__name__}: {exc}") from None
        self.generate_kwargs = {"max_new_tokens": cfg.max_new_tokens, "num_beams": cfg.num_beams,
                                "do_sample": False}

    def __call__(self, frames: Sequence[np.ndarray]) -> list[str]:
        """frames: list of [H, W, 3] uint8 -> one caption per frame, in order."""
        import torch

        if not len(frames):
            return []
        inputs = self.preprocess.inputs(frames, self.cfg.prompt)
        inputs = {k: (v.to(self.device, dtype=self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        with torch.inference_mode():
            token_ids = self.model.generate(**inputs, **self.generate_kwargs)
        return self.preprocess.decode(token_ids.cpu())

