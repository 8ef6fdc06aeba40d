"""In-memory batches for trainer tests that do not need the streaming loader.

`MemoryBatch` has the fields of `train.data.Batch` the trainer reads; `memory_loader` has the
signature of `make_train_loader` and is deterministic in (seed, rank, start_batch), like the real
loader, so resume tests can run without shards. Texts are tokenised by the checkpoint's real CLIP
tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import torch

WORDS = "red green blue yellow square circle moves left right up down across the a".split()


@dataclass
class MemoryBatch:
    video: torch.Tensor  # [B, T, 3, S, S]
    frame: torch.Tensor  # [B, 3, S, S]
    subtitle_ids: torch.Tensor | None
    subtitle_mask: torch.Tensor | None
    caption_ids: torch.Tensor | None
    caption_mask: torch.Tensor | None
    text_ids: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    keys: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def to(self, device: Any) -> "MemoryBatch":
        return replace(self, **{k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)})

    def __len__(self) -> int:
        return self.video.shape[0]


def _texts(generator: torch.Generator, count: int) -> list[str]:
    picks = torch.randint(len(WORDS), (count, 4), generator=generator).tolist()
    return [" ".join(WORDS[i] for i in row) for row in picks]


def make_pool(processor_dir: str | Path, size: int, num_frames: int = 4, image_size: int = 32,
              max_length: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """`size` samples: videos, middle frames, tokenised subtitles and captions."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(processor_dir))
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(size, num_frames, 3, image_size, image_size, generator=generator)
    pool = {"video": video, "frame": video[:, num_frames // 2].clone()}
    for name in ("subtitle", "caption"):
        tokens = tokenizer(_texts(generator, size), padding="max_length", truncation=True, max_length=max_length,
                           return_tensors="pt")
        pool[f"{name}_ids"], pool[f"{name}_mask"] = tokens["input_ids"], tokens["attention_mask"]
    return pool


def batch_of(pool: dict[str, torch.Tensor], index: torch.Tensor, text_source: str = "both",
             counts: dict[str, int] | None = None) -> MemoryBatch:
    taken = {k: v[index] for k, v in pool.items()}
    batch = MemoryBatch(video=taken["video"], frame=taken["frame"],
                        subtitle_ids=taken["subtitle_ids"], subtitle_mask=taken["subtitle_mask"],
                        caption_ids=taken["caption_ids"], caption_mask=taken["caption_mask"],
                        keys=[f"clip_{i:04d}" for i in index.tolist()], counts=dict(counts or {}))
    if text_source == "subtitle":
        batch.caption_ids = batch.caption_mask = None
    elif text_source == "caption":
        batch.subtitle_ids = batch.subtitle_mask = None
    elif text_source in ("mixed", "annotation"):
        batch.text_ids, batch.text_mask = batch.caption_ids, batch.caption_mask
        batch.subtitle_ids = batch.subtitle_mask = batch.caption_ids = batch.caption_mask = None
    return batch


def memory_loader(pool_size: int = 8, image_size: int = 32):
    """A `make_train_loader` stand-in: an endless stream over a fixed pool of random samples,
    shuffled by (seed, rank, batch number), each batch reporting one skipped sample."""

    def make(data_cfg: Any, *, processor_dir: str | Path, rank: int, world_size: int, seed: int,
             start_batch: int) -> Iterator[MemoryBatch]:
        pool = make_pool(processor_dir, pool_size, data_cfg.num_frames, image_size, data_cfg.max_text_length)
        number = start_batch
        while True:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + rank * 10_007 + number)
            index = torch.randperm(pool_size, generator=generator)[: data_cfg.batch_size]
            yield batch_of(pool, index, data_cfg.text_source, counts={"no_caption": 1})
            number += 1

    return make
