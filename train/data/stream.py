"""Which shards a worker reads, in which order, and how a resumed stream fast-forwards.

Each DataLoader worker of each rank is one independent, deterministic stream, identified by
`StreamSlot(rank, world_size, worker, num_workers)`:

- **train** (resampled, infinite): round r = 0, 1, ... visits *every* shard once, in an order
  seeded from (seed, r, rank, worker). No split by rank or worker: every worker always has data,
  however few shards there are (no end-of-epoch hang with uneven shards), and the streams differ
  by their seeds. webdataset's `ResampledShards` seeds from pid and time, hence our own sampler.
- **eval** (finite, ordered): the shard list split by rank, then by worker
  (`shards[rank::world][worker::workers]`), in order: every sample of the rank's shards once.

Exact resume. torch's DataLoader takes batches from its workers round-robin (batch i from
worker i % W), so when a rank has consumed `start_batch` batches, worker w made
`len(range(w, start_batch, W))` of them, and the next batch is due from stream start_batch % W;
a fresh DataLoader starts at its worker 0, so its worker j runs stream (j + start_batch) % W
(loader.py). Each worker replays its stream up to the sample
shuffle and drops that many batches' worth of samples *before decoding* (reading costs, decoding
does not). Per-clip randomness is seeded by (seed, epoch, key), so the clips that follow get the
same frames and texts as in the uninterrupted run.
What is reproduced: the same batches for the same seed, world size, num_workers and batch size.
What is not: a clip whose mp4 fails to decode inside the skipped range was skipped by the
uninterrupted run but is counted as consumed here (decoding is what we avoid), so the resumed
stream shifts by one sample per such clip; and with another world size or worker count the
streams themselves differ (a different but equally valid shuffle; no sample is lost, since
train mode resamples every shard).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from webdataset.filters import _shuffle

from train.data.seeding import python_rng


@dataclass(frozen=True)
class StreamSlot:
    """One stream: DataLoader worker `worker` of `num_workers` on rank `rank` of `world_size`."""

    rank: int
    world_size: int
    worker: int
    num_workers: int

    def batches_before(self, start_batch: int) -> int:
        """How many of the rank's first `start_batch` batches came from this worker (round-robin)."""
        return len(range(self.worker, start_batch, self.num_workers))


class UsableSamples:
    """Counts samples that survived reading and text choice, so the shard sampler can tell a
    corpus where nothing is usable (it would loop forever) from a slow one. The stages before
    the shuffle stream one sample at a time, so when the sampler starts round r, every sample
    of round r-1 has been counted."""

    def __init__(self) -> None:
        self.seen = 0

    def count(self, samples: Iterable[Any]) -> Iterator[Any]:
        for sample in samples:
            self.seen += 1
            yield sample


def train_shards(urls: list[str], seed: int, slot: StreamSlot, usable: UsableSamples,
                 shuffle: bool = True) -> Iterator[dict[str, Any]]:
    """Infinite {url, epoch}: round after round over every shard, each round in a seeded order."""
    for epoch in itertools.count():
        if epoch > 0 and usable.seen == 0:
            raise RuntimeError(f"a full round over all {len(urls)} shards gave no usable sample "
                               f"(see the skip counts and warnings above)")
        order = list(urls)
        if shuffle:
            python_rng(seed, "shards", epoch, slot.rank, slot.worker).shuffle(order)
        for url in order:
            yield {"url": url, "epoch": epoch}


def eval_shards(urls: list[str], slot: StreamSlot) -> Iterator[dict[str, Any]]:
    """Finite {url, epoch=0}: this rank's share of the shards, then this worker's share of it."""
    mine = urls[slot.rank::slot.world_size][slot.worker::slot.num_workers]
    for url in mine:
        yield {"url": url, "epoch": 0}


def shuffle_samples(samples: Iterable[Any], bufsize: int, initial: int, seed: int, slot: StreamSlot) -> Iterator[Any]:
    """webdataset's buffer shuffle with a generator seeded from (seed, rank, worker)."""
    if bufsize <= 1:
        return iter(samples)
    rng = python_rng(seed, "samples", slot.rank, slot.worker)
    return _shuffle(iter(samples), bufsize=bufsize, initial=initial, rng=rng)


def skip_samples(samples: Iterable[Any], count: int, on_done=None) -> Iterator[Any]:
    """Drop the first `count` samples (already consumed before a resume), then pass the rest.

    `on_done` runs once the skipping is over (the loader clears the skip counts there: they
    belong to batches the trainer logged before it stopped).
    """
    iterator = iter(samples)
    if count > 0:
        for _ in itertools.islice(iterator, count):
            pass
    if on_done is not None:
        on_done()
    yield from iterator
