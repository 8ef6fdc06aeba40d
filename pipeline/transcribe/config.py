"""TranscribeConfig: every knob of `vipstream transcribe` (configs/transcribe.yaml; every key is
also a --flag), documented where it is declared.

Decoding mode, and why. Whisper's guards against its failure on silence and music (no-speech
probability, compression-ratio and log-prob thresholds with temperature fallback) live in
`WhisperForConditionalGeneration.generate` (transformers 5.x: `generate_with_fallback`,
`_need_fallback`) and are checked on every 30 s window it decodes. Two modes reach them:
- chunked (`pipeline(..., chunk_length_s=30)`): fixed overlapping chunks, each decoded alone
  (the guards apply per chunk in 5.x; 4.x ignored them in short-form with a warning), their
  tokens merged afterwards by the longest common sequence of the overlaps. No window knows the
  one before (`condition_on_prev_tokens` does nothing), and a word cut at a chunk edge is
  resolved only by that merge;
- sequential long-form (features longer than 30 s given to `generate` at once): Whisper's own
  algorithm (paper section 3.8) in which each window starts at the last complete segment of the
  one before, so no word is cut at a window edge. The distil-large-v3 model card measures
  large-v3 at 10.0 % WER sequential vs 11.0 % chunked on long-form sets.
We use sequential long-form, calling `generate` with `return_segments=True`: segment times come
from the seek position, exact. (The pipeline's own long-form path, without `chunk_length_s`,
rebuilds times from where the timestamp tokens restart, so a window skipped as silence, which
leaves no token, shifts every later time.) Its memory grows with the input (the audio, its
log-mel features, and the scores of every window, kept until `generate` returns: ~20 MB per
window for a 51k vocabulary), so it is run on blocks of `block_s` seconds: a batch holds at
most `batch_size` blocks, whatever the video's length. Consecutive blocks overlap by `overlap_s`
and are stitched by time (pipeline/transcribe/stitch.py): only those edges are ours, every other
window edge is Whisper's.
"""

from __future__ import annotations

from dataclasses import dataclass

from vipstream.config import ConfigError, config_field as _f

DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class TranscribeConfig:
    asr: str | None = _f(None, "speech recognition model (Whisper family, e.g. openai/whisper-large-v3, "
                               "distil-whisper/distil-large-v3): hub name or local folder")
    revision: str | None = _f(None, "hub revision (branch, tag or commit) of the model; unset: the default branch")
    language: str | None = _f(None, "spoken language (Whisper code or name, e.g. en); unset: detected per block, "
                                    "the video's language is the one of most of its audio")
    # Whisper's long-form guards, with OpenAI's published defaults (whisper/transcribe.py) except
    # where transformers measures differently, as said on each.
    temperatures: tuple[float, ...] = _f((0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                                         "temperature fallback: a window failing a guard is decoded again at "
                                         "the next temperature (first 0.0: greedy)")
    # OpenAI's 2.4 is the zlib ratio of the window's UTF-8 *text*; transformers'
    # `_retrieve_compression_ratio` compresses the *token ids* (2 bytes each for Whisper's 51k
    # vocabulary), which compress less: its docstring gives 1.35 as the matching value. The text
    # form with 2.4 is applied again to every cue after stitching (cue_compression_ratio_threshold).
    compression_ratio_threshold: float | None = _f(1.35, "redo a window whose token-id zlib compression ratio is "
                                                         "above this (transformers' measure; null: off)")
    logprob_threshold: float | None = _f(-1.0, "redo a window whose average token log-probability is below this "
                                               "(null: off)")
    no_speech_threshold: float | None = _f(0.6, "skip a window as silence when its no-speech probability is above "
                                                "this and its log-probability is below logprob_threshold")
    # OpenAI's default is True; False is what transformers' long-form examples use: conditioning
    # on the previous window's text is what lets one hallucination repeat for minutes (OpenAI's
    # own help text says the model is then "less prone to getting stuck in a failure loop").
    condition_on_prev_tokens: bool = _f(False, "prompt each window with the text of the one before")
    num_beams: int = _f(1, "beam search width at temperature 0 (1: greedy)")
    max_new_tokens: int | None = _f(None, "most tokens generated per 30 s window (unset: the model's limit, 448 "
                                          "minus the prompt)")
    # Cues that still repeat after the guards are dropped (pipeline/transcribe/stitch.py).
    cue_compression_ratio_threshold: float = _f(2.4, "drop a cue whose UTF-8 text zlib-compresses by more than "
                                                     "this (OpenAI's text-space value; 0: off)")
    max_ngram_repeats: int = _f(4, "drop a cue in which one word n-gram (n <= 4) repeats this many times in a "
                                   "row (0: off)")
    drop_repeated_cues: bool = _f(True, "drop a cue whose text repeats the cue before it")
    # Blocks: the unit of audio handed to the model (see the module docstring).
    block_s: float = _f(120.0, "seconds of audio per block (4 Whisper windows; memory and batching unit)")
    overlap_s: float = _f(10.0, "seconds shared by consecutive blocks, where they are stitched")
    silence_dbfs: float = _f(-60.0, "a block whose RMS level is below this (dBFS) is silence: not decoded, "
                                    "since Whisper invents text on silence")
    # Model placement. auto = float16 on a GPU, float32 on CPU.
    dtype: str = _f("auto", "model weights dtype: auto, float32, float16 or bfloat16 (half types need a GPU)")
    batch_size: int = _f(16, "blocks per generate call (blocks of different videos batch together)")
    concurrency: int = _f(1, "ASR actors (model copies); one per GPU on a GPU node")
    num_gpus: float = _f(0.0, "GPUs per ASR actor (0: CPU)")
    num_cpus: float = _f(1.0, "CPUs per ASR actor (also its torch threads on CPU)")
    decode_cpus: float = _f(1.0, "CPUs per audio decode task (one video: ffmpeg + log-mel features)")
    ray_num_cpus: int = _f(0, "CPUs for a local Ray (0: all); ignored with --ray-address")
    # ffmpeg (the builder's sandbox: local files, protocol and demuxer whitelists, timeouts).
    probe_timeout_s: float = _f(30.0, "kill an ffprobe that runs longer than this")
    audio_timeout_s: float = _f(1800.0, "kill an audio decode of one video that runs longer than this (an hour "
                                        "of audio decodes in well under a minute)")
    remote_protocols: tuple[str, ...] = _f(("s3", "gs", "gcs", "abfs", "az", "hdfs", "file"),
                                           "fsspec protocols a manifest path may use (copied locally first)")
    max_source_bytes: int = _f(50 * 1024 ** 3, "largest remote source copied locally, bytes")
    source_fetch_timeout_s: float = _f(1800.0, "deadline to copy one remote video locally, seconds")
    # What to transcribe.
    all: bool = _f(False, "also transcribe videos that already have a subtitle file")
    overwrite: bool = _f(False, "redo every video, also those whose .vtt exists")
    retry_failed: bool = _f(False, "transcribe again the videos that failed in an earlier run (without it only "
                                   "failures to fetch a remote copy and internal errors are retried)")

    def __post_init__(self) -> None:
        # A --temperatures flag arrives as strings ("0.0,0.2"): store floats.
        try:
            object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        except (TypeError, ValueError):
            raise ConfigError(f"temperatures must be numbers, found {self.temperatures!r}") from None

    def validate(self) -> None:
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ConfigError(f"temperatures must be a non-empty list of values >= 0, found {self.temperatures}")
        if list(self.temperatures) != sorted(self.temperatures):
            raise ConfigError(f"temperatures must increase (fallback goes hotter), found {self.temperatures}")
        if self.num_beams < 1:
            raise ConfigError(f"num_beams must be >= 1, found {self.num_beams}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, found {self.max_new_tokens}")
        if self.block_s < 30.0:
            raise ConfigError(f"block_s must be >= 30 (one Whisper window), found {self.block_s}")
        if not 0 <= self.overlap_s <= self.block_s / 2:
            raise ConfigError(f"need 0 <= overlap_s <= block_s / 2, found overlap_s={self.overlap_s}, "
                              f"block_s={self.block_s}")
        if self.max_ngram_repeats < 0 or self.cue_compression_ratio_threshold < 0:
            raise ConfigError("max_ngram_repeats and cue_compression_ratio_threshold must be >= 0")
        if self.batch_size < 1 or self.concurrency < 1:
            raise ConfigError(f"batch_size and concurrency must be >= 1, found {self.batch_size}, {self.concurrency}")
        if self.num_gpus < 0 or self.num_cpus <= 0 or self.decode_cpus <= 0:
            raise ConfigError(f"need num_gpus >= 0, num_cpus > 0 and decode_cpus > 0, found "
                              f"{self.num_gpus}, {self.num_cpus}, {self.decode_cpus}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, found {self.dtype!r}")
        if self.no_speech_threshold is not None and self.logprob_threshold is None:
            raise ConfigError("no_speech_threshold needs logprob_threshold: Whisper skips a window as silence only "
                              "when it is both likely silent and poorly predicted")
        if not (self.probe_timeout_s > 0 and self.audio_timeout_s > 0 and self.source_fetch_timeout_s > 0):
            raise ConfigError("probe_timeout_s, audio_timeout_s and source_fetch_timeout_s must be > 0")

    def generation_settings(self) -> dict:
        """What changes the transcripts (recorded in asr.json; a rerun with other values is refused)."""
        return {"language": self.language, "task": "transcribe", "temperatures": list(self.temperatures),
                "compression_ratio_threshold": self.compression_ratio_threshold,
                "logprob_threshold": self.logprob_threshold, "no_speech_threshold": self.no_speech_threshold,
                "condition_on_prev_tokens": self.condition_on_prev_tokens, "num_beams": self.num_beams,
                "max_new_tokens": self.max_new_tokens,
                "cue_compression_ratio_threshold": self.cue_compression_ratio_threshold,
                "max_ngram_repeats": self.max_ngram_repeats, "drop_repeated_cues": self.drop_repeated_cues,
                "block_s": self.block_s, "overlap_s": self.overlap_s, "silence_dbfs": self.silence_dbfs,
                "dtype": self.dtype, "decoding": "sequential long-form (WhisperForConditionalGeneration.generate, "
                                                 "return_segments) per block"}
