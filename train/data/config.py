"""TrainDataConfig: every knob of the streaming loader, with where its default comes from.

The trainer embeds these fields in its own config (YAML keys and `--flags` of the same names);
`load_config(TrainDataConfig, path, overrides)` also loads it on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from vipstream.config import ConfigError, config_field as _f

TEXT_SOURCES = ("subtitle", "caption", "both", "mixed", "annotation")
#: Text sources that read a captioner's sidecars.
CAPTION_SOURCES = ("caption", "both", "mixed")
MISSING_CAPTION_POLICIES = ("fallback", "skip")
MODES = ("train", "eval")
PIXEL_DTYPES = ("float32", "bfloat16", "uint8")


@dataclass(frozen=True)
class TrainDataConfig:
    # Where the clips are: a build's OUT folder (finished shards only: those with a stats file),
    # a brace pattern, a comma-separated list, or fsspec / `pipe:` URLs (DESIGN.md section 4).
    shards: str = _f("out/", "build OUT folder, brace pattern out/shards/{000000..000009}.tar, "
                             "comma-separated list, or fsspec/pipe: URLs")
    # The sidecar folder OUT/captions/{captioner_id}/ written by `vipstream caption`.
    captioner_id: str | None = _f(None, "caption sidecar folder under OUT/captions/ (needed by text "
                                        "sources caption, both, mixed)")
    captions_root: str | None = _f(None, "folder holding {shard:06d}.parquet sidecars; unset: "
                                         "OUT/captions/{captioner_id} beside the shards folder")
    # DESIGN.md section 1: OCL pretraining pairs every clip with subtitle S, caption C and frame F.
    text_source: str = _f("both", "subtitle | caption | both (S, C, F for OCL) | mixed (one text per "
                                  "pair, drawn with caption_ratio) | annotation (one of the json's "
                                  "'captions', for retrieval sets)")
    caption_ratio: float = _f(0.5, "mixed: probability that a pair's text is the caption")
    missing_caption: str = _f("fallback", "a clip without a caption row: fallback (use the subtitle, "
                                          "flagged in has_caption) or skip (train mode; eval keeps "
                                          "every clip)")
    # DESIGN.md section 1: 12 frames for pretraining and most fine-tuning, 32 for long videos.
    num_frames: int = _f(12, "frames T per clip")
    # open_clip's per-GPU batch of the reference recipe (B/32: 32 per GPU on 32 GPUs).
    batch_size: int = _f(32, "clips per batch on each rank")
    num_workers: int = _f(4, "DataLoader worker processes per rank")
    mode: str = _f("train", "train: infinite resampled stream, train frame rule, full batches; "
                            "eval: every sample of the rank's shards once, eval frame rule")
    # DESIGN.md section 1: max text length 70 for pretraining (50 for MSR-VTT fine-tuning).
    max_text_length: int = _f(70, "tokens per text, start and end tokens included")
    # uint8 moves a quarter of the bytes through shared memory and to the GPU; the CLIP
    # normalisation then runs where Batch.to(device) puts the batch (bench_loader.py).
    pixel_dtype: str = _f("float32", "dtype of video/frame tensors: float32, bfloat16, or uint8 (cropped "
                                     "0..255 pixels that Batch.to(device) normalises to float32 on arrival)")
    # Shuffling (train mode). A shard round is a full seeded permutation of the shard list, so no
    # shard buffer is needed; samples mix in a buffer (open_clip uses 1000 samples per worker).
    shard_shuffle: bool = _f(True, "train: visit shards in a fresh seeded order each round")
    sample_shuffle: int = _f(1000, "train: sample shuffle buffer per worker (0 or 1: no shuffle)")
    sample_shuffle_initial: int = _f(100, "train: samples buffered before the first is yielded")
    # The buffer holds each sample's raw mp4 bytes. 1000 clips of the builder's defaults (~50-100
    # KB each) are ~100 MB, under this bound; heavier clips (bench_loader's textured ones, ~560
    # KiB) fill fewer slots instead of growing every worker's RSS by ~0.5 GiB (issue 15.11).
    sample_shuffle_bytes: int = _f(128 * 1024 ** 2, "train: mp4 bytes the shuffle buffer of each worker "
                                                     "holds at most (0: no byte bound, only sample_shuffle)")
    # webdataset's with_epoch: the infinite stream has no epochs; this cuts it into epochs of this
    # many samples over all ranks (open_clip's --train-num-samples), one `for batch in loader`
    # pass each. 0: one pass never ends (the trainer counts steps).
    samples_per_epoch: int = _f(0, "train: samples per epoch over all ranks (0: one endless pass)")
    # decord's default (0) starts one thread per core inside every worker (issue 7).
    decode_threads: int = _f(1, "decord threads per clip")
    prefetch_factor: int = _f(2, "batches each worker prepares ahead (torch's default)")
    pin_memory: bool = _f(False, "pin batches in page-locked memory (GPU training)")
    # A corpus where every clip fails alike once printed a warning per clip (130 KB/s, issue 15):
    # a few in full show what is wrong, then a count per reason per minute says how often.
    skip_warnings_in_full: int = _f(3, "per worker and skip reason, warnings logged in full before they are counted")
    skip_warnings_every_s: float = _f(60.0, "then one warning per reason per this many seconds, with the count")

    def validate(self) -> None:
        def choice(name: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, found {getattr(self, name)!r}")

        choice("text_source", TEXT_SOURCES)
        choice("missing_caption", MISSING_CAPTION_POLICIES)
        choice("mode", MODES)
        choice("pixel_dtype", PIXEL_DTYPES)
        if self.text_source in CAPTION_SOURCES and not self.captioner_id:
            raise ConfigError(f"text_source={self.text_source!r} reads caption sidecars: set captioner_id "
                              f"(a folder name under OUT/captions/)")
        if not 0.0 <= self.caption_ratio <= 1.0:
            raise ConfigError(f"caption_ratio must be in [0, 1], found {self.caption_ratio}")
        for name in ("num_frames", "batch_size", "max_text_length", "decode_threads", "prefetch_factor"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.max_text_length < 2:
            raise ConfigError(f"max_text_length must hold the start and end tokens (>= 2), found "
                              f"{self.max_text_length}")
        for name in ("num_workers", "sample_shuffle", "sample_shuffle_initial", "sample_shuffle_bytes",
                     "samples_per_epoch",
                     "skip_warnings_in_full", "skip_warnings_every_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, found {getattr(self, name)}")
        if not str(self.shards).strip():
            raise ConfigError("shards is empty: give a build OUT folder, a brace pattern or URLs")
