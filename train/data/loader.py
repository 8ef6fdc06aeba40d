"""`make_train_loader`: built shards + a captioner's sidecars -> batches, one stream per worker.

The whole data path of one DataLoader worker, top to bottom (see `ClipStream.pipeline`):

    shards (train: seeded rounds over all shards | eval: this rank's, this worker's share)
    -> tar samples, mp4 + json members only          (members.py: forbidden members refused)
    -> caption joined by key from the shard's sidecar (text.py)
    -> texts chosen for text_source                   (text.py: fallbacks, skips, mixed draw)
    -> sample shuffle buffer                          (train; seeded)
    -> skip the samples consumed before a resume      (stream.py: before any decoding)
    -> decode the needed frames, CLIP pixels          (frames.py, pixels.py)
    -> batch: stack + tokenise                        (batch.py)

Batching happens in the workers, so the DataLoader runs with batch_size=None and hands batches
out round-robin, which is what the exact resume of stream.py relies on. Worker batches carry
uint8 pixels (a quarter of the shared memory a float32 batch needs); TrainLoader normalises
them to the configured dtype in the main process (batch.finish_pixels).
"""

from __future__ import annotations

import logging
import math
import os
from functools import partial
from typing import Any, Iterable, Iterator

import torch
import webdataset as wds

from train.data.batch import Batch, ClipSample, collate, finish_pixels
from train.data.config import CAPTION_SOURCES, TrainDataConfig
from train.data.frames import decode_clip
from train.data.members import read_samples
from train.data.pixels import PixelSpec, resize_crop
from train.data.seeding import sample_rng
from train.data.skips import SkipCounts, SkipWarnings
from train.data.sources import check_captions_root, resolve_shards
from train.data.stream import (NoUsableData, RoundTally, StreamSlot, eval_shards, shuffle_samples, skip_samples,
                               train_shards)
from train.data.text import attach_texts, join_captions, load_tokenizer

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "uint8": torch.uint8}


def decode_samples(samples: Iterable[dict[str, Any]], cfg: TrainDataConfig, spec: PixelSpec, seed: int,
                   counts: SkipCounts, tally: RoundTally | None = None) -> Iterator[ClipSample]:
    """Stage: decode each clip's frames (train or eval rule) and the middle frame F, resize/crop
    them as uint8 ([K, H, W, 3] -> [K, S, S, 3]). Undecodable clips are counted
    (`corrupt_video`) and skipped; a middle frame other than the sidecar's is counted. `tally`
    (train) hears of every decode, and ends the stream once a full round decoded nothing."""
    for sample in samples:
        rng = sample_rng(seed, sample["epoch"], sample["key"], "frames") if cfg.mode == "train" else None
        try:
            clip = decode_clip(sample["mp4"], cfg.num_frames, rng, threads=cfg.decode_threads)
        except Exception as exc:  # decord raises bare RuntimeError/DECORDError with ffmpeg's text
            counts.skip("corrupt_video", "skipping clip %s of %s: cannot decode its mp4: %s", sample["key"],
                        sample["url"], str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__)
            if tally is not None:
                try:
                    tally.decode_failed(sample["epoch"])
                except NoUsableData:
                    counts.warnings.flush()
                    raise
            continue
        if tally is not None:
            tally.decode_ok()
        expected = sample.get("caption_frame_index")
        if expected is not None and expected != clip.middle_index:
            counts["frame_index_mismatch"] += 1
        yield ClipSample(sample["key"], resize_crop(clip.decoded, spec), clip.rows.tolist(), clip.middle_row,
                         sample["texts"])


def wire_dtype(cfg: TrainDataConfig) -> torch.dtype:
    """The pixel dtype of the batches `batch_samples` makes: uint8 when DataLoader workers hand
    them to the main process (TrainLoader normalises them there: see batch.finish_pixels),
    else the configured one, normalised in place."""
    return torch.uint8 if cfg.num_workers > 0 else _DTYPES[cfg.pixel_dtype]


def batch_samples(samples: Iterable[ClipSample], cfg: TrainDataConfig, tokenizer, spec: PixelSpec,
                  counts: SkipCounts) -> Iterator[Batch]:
    """Stage: full batches of cfg.batch_size; in eval mode the last one may be short."""
    eval_mode, dtype = cfg.mode == "eval", wire_dtype(cfg)
    wire_only = dtype != _DTYPES[cfg.pixel_dtype]  # uint8 only for the hand-over: its layout is free

    def make(pending: list[ClipSample]) -> Batch:
        return collate(pending, cfg.text_source, tokenizer, cfg.max_text_length, spec, dtype,
                       counts.take(), always_captions=eval_mode, channels_last=wire_only)

    pending: list[ClipSample] = []
    for sample in samples:
        pending.append(sample)
        if len(pending) == cfg.batch_size:
            yield make(pending)
            pending = []
    if pending and eval_mode:
        yield make(pending)


class ClipStream(torch.utils.data.IterableDataset):
    """The per-worker stream of batches of one rank (an IterableDataset for torch's DataLoader)."""

    def __init__(self, cfg: TrainDataConfig, urls: list[str], tokenizer, spec: PixelSpec, *,
                 rank: int, world_size: int, seed: int, start_batch: int) -> None:
        super().__init__()
        self.cfg, self.urls, self.tokenizer, self.spec = cfg, urls, tokenizer, spec
        self.rank, self.world_size, self.seed, self.start_batch = rank, world_size, seed, start_batch

    def slot(self) -> StreamSlot:
        """This process's stream. A DataLoader always takes its first batch from worker 0, but
        after `start_batch` batches the uninterrupted run's next batch comes from stream
        `start_batch % W`: so DataLoader worker j plays stream (j + start_batch) % W."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return StreamSlot(self.rank, self.world_size, (worker + self.start_batch) % workers, workers)

    def pipeline(self, slot: StreamSlot) -> wds.DataPipeline:
        cfg, seed = self.cfg, self.seed
        counts = SkipCounts(warnings=SkipWarnings(cfg.skip_warnings_in_full, cfg.skip_warnings_every_s))
        train = cfg.mode == "train"
        tally = RoundTally(len(self.urls), counts) if train else None
        return wds.DataPipeline(
            partial(train_shards, self.urls, seed, slot, tally, cfg.shard_shuffle) if train
            else partial(eval_shards, self.urls, slot),
            partial(read_samples, counts=counts),
            partial(join_captions, cfg=cfg, counts=counts) if cfg.text_source in CAPTION_SOURCES else None,
            partial(attach_texts, cfg=cfg, seed=seed, counts=counts),
            tally.count if train else None,
            partial(shuffle_samples, bufsize=cfg.sample_shuffle, initial=cfg.sample_shuffle_initial,
                    seed=seed, slot=slot, max_bytes=cfg.sample_shuffle_bytes) if train else None,
            partial(skip_samples, count=slot.batches_before(self.start_batch) * cfg.batch_size,
                    on_done=counts.clear),
            partial(decode_samples, cfg=cfg, spec=self.spec, seed=seed, counts=counts, tally=tally),
            partial(batch_samples, cfg=cfg, tokenizer=self.tokenizer, spec=self.spec, counts=counts),
        )

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.pipeline(self.slot()))


class TrainLoader:
    """A DataLoader over `ClipStream`, cut into epochs.

    train: one infinite stream; each `for batch in loader` pass yields the rest of the current
    epoch of `batches_per_epoch` batches (all of the stream when samples_per_epoch is 0), so
    epochs are windows of one stream, a resume at any batch is exact, and the first pass after
    a mid-epoch resume ends where the interrupted epoch would have. eval: each pass reads the
    rank's shards once, from the start.
    """

    def __init__(self, dataloader: torch.utils.data.DataLoader, cfg: TrainDataConfig, world_size: int,
                 start_batch: int = 0) -> None:
        self.dataloader, self.cfg = dataloader, cfg
        self.batches_per_epoch = (math.ceil(cfg.samples_per_epoch / (cfg.batch_size * world_size))
                                  if cfg.mode == "train" and cfg.samples_per_epoch else None)
        self.consumed = start_batch  # batches of this rank's stream handed out so far
        self._stream: Iterator[Batch] | None = None

    def __iter__(self) -> Iterator[Batch]:
        dtype = _DTYPES[self.cfg.pixel_dtype]
        if self.cfg.mode == "eval":
            for batch in self.dataloader:
                yield finish_pixels(batch, dtype)
            return
        if self._stream is None:
            self._stream = iter(self.dataloader)
        left = (None if self.batches_per_epoch is None
                else self.batches_per_epoch - self.consumed % self.batches_per_epoch)
        while left is None or left > 0:
            try:
                batch = next(self._stream)
            except NoUsableData as exc:  # from a worker: torch wrapped its traceback into the message
                raise NoUsableData.from_worker(exc) from None
            self.consumed += 1
            left = None if left is None else left - 1
            yield finish_pixels(batch, dtype)

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("this loader has no length: an infinite train stream or an eval pass "
                            "(set samples_per_epoch for train epochs)")
        return self.batches_per_epoch


def make_train_loader(cfg: TrainDataConfig, processor_dir: str, rank: int = 0, world_size: int = 1,
                      seed: int = 0, start_batch: int = 0) -> TrainLoader:
    """Batches for rank `rank` of `world_size` (passed in, not read from torch.distributed, so
    Ray Train and tests can give them), starting after the `start_batch` batches this rank has
    already consumed (the trainer passes step * accum_freq). Tokenizer and pixel preprocessing
    come from the checkpoint folder `processor_dir`.

    Raises ConfigError up front for a bad config, no finished shard, or an unknown captioner.
    """
    cfg.validate()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), found {rank}")
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, found {start_batch}")
    urls = resolve_shards(cfg.shards)
    if cfg.text_source in CAPTION_SOURCES:
        check_captions_root(urls[0], cfg.captioner_id, cfg.captions_root)
    if cfg.mode == "eval" and not urls[rank::world_size]:
        log.warning("eval mode: rank %d of %d gets none of the %d shards (eval splits by shard); it yields "
                    "no batch", rank, world_size, len(urls))
    if cfg.mode == "eval" and start_batch:
        log.warning("eval mode with start_batch=%d: workers that run out early shift the round-robin, "
                    "so the resumed batches are exact only while every worker still has data", start_batch)
    # The DataLoader workers are the parallelism; the Rust tokenizer's own threads would contend.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dataset = ClipStream(cfg, urls, load_tokenizer(processor_dir), PixelSpec.from_pretrained(processor_dir),
                         rank=rank, world_size=world_size, seed=seed, start_batch=start_batch)
    extra = {"prefetch_factor": cfg.prefetch_factor} if cfg.num_workers > 0 else {}
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=cfg.num_workers,
                                             pin_memory=cfg.pin_memory, **extra)
    log.info("loader rank %d/%d: %d shards, mode %s, text %s, %d workers, batch %d, starting after batch %d",
             rank, world_size, len(urls), cfg.mode, cfg.text_source, cfg.num_workers, cfg.batch_size, start_batch)
    return TrainLoader(dataloader, cfg, world_size, start_batch)
