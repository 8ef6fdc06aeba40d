"""The speech recogniser: a Whisper-family model loaded once, blocks of audio -> timed segments.

Pure of Ray, files and progress bars (`pipeline/transcribe/stages.py` maps it over blocks):

    check_asr_model(cfg)                -> fails fast, naming the model, before any work is scheduled
    load_feature_extractor(name, rev)   -> the model's log-mel front end (cached per process)
    block_features(extractor, samples)  -> [n_mels, frames] float32, computed on the CPU stage
    AsrModel(cfg)(features)             -> one BlockResult per block, one batched `generate` per call

Any model that transformers' `pipeline("automatic-speech-recognition")` runs as Whisper
(`model_type` whisper: openai/whisper-*, distil-whisper/*, fine-tunes) works, by hub name or
local folder: we call the same `WhisperForConditionalGeneration.generate` the pipeline calls,
in sequential long-form with `return_segments` (why: pipeline/transcribe/config.py).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.hf_models import dtype_kwarg, local_model_problem, quiet_transformers
from pipeline.transcribe.config import TranscribeConfig
from pipeline.transcribe.stitch import Segment
from vipstream.config import ConfigError

log = logging.getLogger(__name__)

#: Log-mel frames of one Whisper window (30 s at 100 frames/s): the encoder's fixed input length.
WINDOW_FRAMES = 3000


#: transformers warnings that every Whisper long-form `generate` call triggers by itself (its
#: own suppress_tokens hand-over; max_length from the model config beside max_new_tokens):
#: nothing a user can act on, and one per actor would bury the job's log.
_GENERATE_NOISE = ("Passing `generation_config` together with generation-related", "Both `max_new_tokens`")


def _drop_generate_noise(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_GENERATE_NOISE)


def _quiet_generate() -> None:
    quiet_transformers()
    logging.getLogger("transformers.generation.utils").addFilter(_drop_generate_noise)  # idempotent


class AsrLoadError(RuntimeError):
    """The speech model, its processor or its generation config cannot be used; names the model."""


@dataclass(frozen=True)
class BlockResult:
    """Segments of one block, times in seconds from the block's start, and its language."""

    segments: tuple[Segment, ...]
    language: str | None


# ---------------------------------------------------------------------------------------------
# Checking and loading


def _load_kwargs(cfg: TranscribeConfig) -> dict[str, Any]:
    return {"revision": cfg.revision} if cfg.revision else {}


def check_asr_model(cfg: TranscribeConfig) -> dict[str, Any]:
    """Fail fast, before Ray work: the config, processor and generation config must load and be
    Whisper's, with timestamp support (no weights are read). Returns what asr.json records.

    Raises ConfigError (no model given, a language the model cannot do) or AsrLoadError.
    """
    quiet_transformers()
    name = cfg.asr
    if not name:
        raise ConfigError("no speech recognition model given (--asr NAME_OR_PATH)")
    problem = local_model_problem(name)
    if problem is not None:
        raise AsrLoadError(f"cannot load ASR model {name!r}: {problem}")
    try:
        from transformers import AutoConfig, AutoProcessor, GenerationConfig

        config = AutoConfig.from_pretrained(name, **_load_kwargs(cfg))
        if config.model_type != "whisper":
            raise AsrLoadError(f"model type {config.model_type!r} is not a Whisper-family model; vipstream "
                               f"transcribe runs Whisper's long-form decoding (openai/whisper-*, "
                               f"distil-whisper/*, fine-tunes of them)")
        processor = AutoProcessor.from_pretrained(name, **_load_kwargs(cfg))
        generation = GenerationConfig.from_pretrained(name, **_load_kwargs(cfg))
    except AsrLoadError as exc:
        raise AsrLoadError(f"cannot load ASR model {name!r}: {exc}") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AsrLoadError(f"cannot load ASR model {name!r}: {type(exc).__name__}: {first}") from None
    if getattr(generation, "no_timestamps_token_id", None) is None:
        raise AsrLoadError(f"cannot load ASR model {name!r}: its generation config has no "
                           f"no_timestamps_token_id, so it cannot predict timestamps")
    if getattr(processor, "feature_extractor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise AsrLoadError(f"cannot load ASR model {name!r}: expected a processor with a feature extractor "
                           f"and a tokenizer, found {type(processor).__name__}")
    multilingual = bool(getattr(generation, "is_multilingual", False))
    if cfg.language and not multilingual and _language_code(cfg.language, generation) not in (None, "en"):
        raise ConfigError(f"{name!r} is an English-only model; it cannot transcribe language={cfg.language!r}")
    if cfg.language and multilingual and _language_code(cfg.language, generation) is None:
        raise ConfigError(f"language {cfg.language!r} is not one of the model's languages "
                          f"({', '.join(sorted(_codes(generation))[:12])}, ...)")
    return {"model": name, "model_path": str(Path(name).resolve()) if Path(name).is_dir() else None,
            "revision": cfg.revision, "commit_hash": getattr(config, "_commit_hash", None),
            "model_type": config.model_type, "multilingual": multilingual,
            "num_mel_bins": int(config.num_mel_bins),
            "sampling_rate": int(processor.feature_extractor.sampling_rate)}


def _codes(generation: Any) -> set[str]:
    return {token[2:-2] for token in (getattr(generation, "lang_to_id", None) or {})}


def language_code(language: str) -> str:
    """"English" or "en" -> "en" (Whisper's language names and codes)."""
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    return TO_LANGUAGE_CODE.get(language.lower(), language.lower())


def _language_code(language: str, generation: Any) -> str | None:
    """"en" or "english" -> "en" if the model knows it, else None."""
    code = language_code(language)
    codes = _codes(generation)
    return code if code in codes or (not codes and code == "en") else None


@functools.lru_cache(maxsize=4)
def load_feature_extractor(name: str, revision: str | None = None) -> Any:
    """The model's WhisperFeatureExtractor, loaded once per process (decode tasks reuse workers)."""
    from transformers import AutoFeatureExtractor

    quiet_transformers()
    return AutoFeatureExtractor.from_pretrained(name, **({"revision": revision} if revision else {}))


def block_features(extractor: Any, samples: np.ndarray) -> np.ndarray:
    """16 kHz mono samples [n] -> log-mel features [n_mels, n // hop] float32, not padded to 30 s
    (the long-form input form: `generate` cuts and pads its 30 s windows itself)."""
    features = extractor(samples, sampling_rate=extractor.sampling_rate, truncation=False, padding="longest",
                         return_attention_mask=False, return_tensors="np")["input_features"]
    return np.ascontiguousarray(features[0], dtype=np.float32)


def _batch(features: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Blocks' features -> (input_features [B, n_mels, T], attention_mask [B, T]), T = the longest.

    A shorter block is padded with its own floor value, the log-mel of silence after Whisper's
    normalisation (max - 8 dB, clamped), i.e. what the feature extractor gives for audio padded
    with zeros: the model sees silence there, as it does at the end of every input it was
    trained on. The mask tells long-form decoding where each block really ends.
    """
    longest = max(f.shape[-1] for f in features)
    batch = np.empty((len(features), features[0].shape[0], longest), dtype=np.float32)
    mask = np.zeros((len(features), longest), dtype=np.int64)
    for row, block in enumerate(features):
        frames = block.shape[-1]
        batch[row, :, :frames] = block
        batch[row, :, frames:] = block.min() if frames else 0.0
        mask[row, :frames] = 1
    return batch, mask


class AsrModel:
    """One loaded model: `model(features)` -> one BlockResult per block, one batched generate.

    Runs on CUDA when visible (Ray hides GPUs from actors without `num_gpus`), else on CPU; dtype
    "auto" is float16 on a GPU and float32 on CPU (half precision on CPU is slow or unsupported).
    """

    def __init__(self, cfg: TranscribeConfig, device: str | None = None):
        import torch

        _quiet_generate()
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype_name = cfg.dtype if cfg.dtype != "auto" else ("float16" if self.device.type == "cuda" else "float32")
        if self.device.type == "cpu" and dtype_name != "float32":
            log.warning("dtype %s on CPU is slow or unsupported; using float32", dtype_name)
            dtype_name = "float32"
        self.dtype = getattr(torch, dtype_name)
        try:
            from transformers import AutoModelForSpeechSeq2Seq, AutoTokenizer

            self.model = AutoModelForSpeechSeq2Seq.from_pretrained(
                cfg.asr, **dtype_kwarg(self.dtype), **_load_kwargs(cfg)).to(self.device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.asr, **_load_kwargs(cfg))
        except Exception as exc:
            raise AsrLoadError(f"cannot load ASR model {cfg.asr!r}: {type(exc).__name__}: {exc}") from None
        generation = self.model.generation_config
        self.multilingual = bool(getattr(generation, "is_multilingual", False))
        self.language = _language_code(cfg.language, generation) if cfg.language else None
        self._id_to_language = {token_id: token[2:-2] for token, token_id in
                                (getattr(generation, "lang_to_id", None) or {}).items()}
        self.generate_kwargs = self._generate_kwargs(cfg)

    def _generate_kwargs(self, cfg: TranscribeConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "return_timestamps": True, "return_segments": True,
            "temperature": tuple(cfg.temperatures), "num_beams": cfg.num_beams,
            "compression_ratio_threshold": cfg.compression_ratio_threshold,
            "logprob_threshold": cfg.logprob_threshold, "no_speech_threshold": cfg.no_speech_threshold,
            "condition_on_prev_tokens": cfg.condition_on_prev_tokens,
        }
        if cfg.max_new_tokens is not None:
            kwargs["max_new_tokens"] = cfg.max_new_tokens
        if self.multilingual:
            kwargs["task"] = "transcribe"
        return kwargs

    def detect_languages(self, input_features: Any) -> list[str]:
        """Whisper's language detection on each block's first window: [B] language codes."""
        import torch

        with torch.inference_mode():
            ids = self.model.detect_language(input_features=input_features[:, :, :WINDOW_FRAMES])
        return [self._id_to_language.get(int(i), "") for i in ids]

    def __call__(self, features: Sequence[np.ndarray]) -> list[BlockResult]:
        """features: per block [n_mels, frames] float32 -> segments with block-relative times."""
        import torch

        if not len(features):
            return []
        batch, mask = _batch(features)
        inputs = torch.from_numpy(batch).to(self.device, dtype=self.dtype)
        attention_mask = torch.from_numpy(mask).to(self.device)
        kwargs = dict(self.generate_kwargs)
        languages: list[str | None] = [self.language if self.multilingual else "en"] * len(features)
        if self.multilingual:
            if self.language is None:
                first_window = inputs if inputs.shape[-1] >= WINDOW_FRAMES else torch.nn.functional.pad(
                    inputs, (0, WINDOW_FRAMES - inputs.shape[-1]), value=0.0)
                languages = self.detect_languages(first_window)
            kwargs["language"] = languages
        with torch.inference_mode():
            output = self.model.generate(input_features=inputs, attention_mask=attention_mask, **kwargs)
        results = []
        for segments, language in zip(output["segments"], languages):
            results.append(BlockResult(tuple(
                Segment(float(s["start"]), float(s["end"]),
                        self.tokenizer.decode(s["tokens"], skip_special_tokens=True))
                for s in segments), language or None))
        return results
