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

import collections
import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from webdataset.filters import _shuffle, pick

from train.data.seeding import python_rng
from vipstream.errors import JobError


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


class NoUsableData(JobError):
    """A full round over every shard gave nothing to train on: training would wait forever.

    Raised in a DataLoader worker; `TrainLoader` re-raises it in the main process with just this
    message (`from_worker`), so `vipstream train` ends with exit 1 and one clear line."""

    @classmethod
    def from_worker(cls, exc: BaseException) -> "NoUsableData":
        """The worker's message out of torch's re-raised "Caught ... Original Traceback ..." text."""
        return cls(str(exc).strip().rsplit(f"{cls.__name__}: ", 1)[-1].strip())


class RoundTally:
    """Per shard round, the samples that survived reading and text choice (`count`, before the
    shuffle) and how many of them failed to decode (`decode_failed`), so the stream can tell a
    corpus where nothing is usable, or nothing decodes, from a slow one (issue 15.2).

    The stages before the shuffle stream one sample at a time, so when the sampler starts round
    r (`start_round`) every sample of round r-1 has been counted. Each round reads the same
    samples, so once every sample of one complete round has failed to decode and none has ever
    decoded, no clip of the corpus decodes; the shuffle buffer only delays that verdict until the
    round's last sample has left it. Samples dropped unread by a resume's fast-forward are never
    decoded, so their round cannot give the verdict: the next one does."""

    def __init__(self, num_shards: int, counts: dict[str, int]) -> None:
        self.num_shards, self.counts = num_shards, counts
        self.read: collections.Counter[int] = collections.Counter()
        self.failed: collections.Counter[int] = collections.Counter()
        self.decoded = 0
        self.round = 0  # the round the sampler is in; rounds before it are complete

    def count(self, samples: Iterable[Any]) -> Iterator[Any]:
        for sample in samples:
            if not self.decoded:  # the verdict needs counting only until the first clip decodes
                self.read[sample["epoch"]] += 1
            yield sample

    def start_round(self, epoch: int) -> None:
        self.round = epoch
        if epoch > 0 and not self.decoded and self.read[epoch - 1] == 0:
            raise NoUsableData(f"no clip to train on: a full round over all {self.num_shards} shards gave no "
                               f"usable sample (skipped: {self._skips()}); see the warnings above, and "
                               f"`vipstream inspect` the build")

    def decode_ok(self) -> None:
        if not self.decoded:
            self.read.clear()
            self.failed.clear()
        self.decoded += 1

    def decode_failed(self, epoch: int) -> None:
        if self.decoded:
            return
        self.failed[epoch] += 1
        for done in range(self.round):
            if self.read[done] and self.failed[done] >= self.read[done]:
                raise NoUsableData(
                    f"no clip to train on: a full round over all {self.num_shards} shards read "
                    f"{self.read[done]} samples and not one of them decodes (skipped: {self._skips()}); "
                    f"see the warnings above, and `vipstream inspect` the build")

    def _skips(self) -> str:
        shown = {k: int(v) for k, v in sorted(self.counts.items()) if v}
        return ", ".join(f"{k} {v}" for k, v in shown.items()) or "nothing counted"


def train_shards(urls: list[str], seed: int, slot: StreamSlot, tally: RoundTally,
                 shuffle: bool = True) -> Iterator[dict[str, Any]]:
    """Infinite {url, epoch}: round after round over every shard, each round in a seeded order."""
    for epoch in itertools.count():
        tally.start_round(epoch)
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


def shuffle_samples(samples: Iterable[Any], bufsize: int, initial: int, seed: int, slot: StreamSlot,
                    max_bytes: int = 0) -> Iterator[Any]:
    """webdataset's buffer shuffle with a generator seeded from (seed, rank, worker), holding at
    most `bufsize` samples and, with `max_bytes` > 0, about `max_bytes` of their mp4 bytes."""
    if bufsize <= 1:
        return iter(samples)
    rng = python_rng(seed, "samples", slot.rank, slot.worker)
    if max_bytes <= 0:
        return _shuffle(iter(samples), bufsize=bufsize, initial=initial, rng=rng)
    return _bounded_shuffle(iter(samples), bufsize, initial, max_bytes, rng)


def _mp4_bytes(sample: Any) -> int:
    return len(sample.get("mp4") or b"") if isinstance(sample, dict) else 0


def _bounded_shuffle(data: Iterator[Any], bufsize: int, initial: int, max_bytes: int, rng) -> Iterator[Any]:
    """webdataset.filters._shuffle, step for step (the same draws, so the same order while the
    byte bound does not bind), except that the buffer stops growing once its samples hold
    `max_bytes` of mp4 (issue 15.11: 1000 buffered textured clips of ~560 KiB made each worker's
    RSS grow by ~0.5 GiB over the first rounds); it then swaps one sample in for one out."""
    initial = min(initial, bufsize)
    buf: list[Any] = []
    held = 0
    for sample in data:
        buf.append(sample)
        held += _mp4_bytes(sample)
        if len(buf) < bufsize and held < max_bytes:
            try:
                extra = next(data)
            except StopIteration:
                pass
            else:
                buf.append(extra)
                held += _mp4_bytes(extra)
        if len(buf) >= initial or held >= max_bytes:
            chosen = pick(buf, rng)
            held -= _mp4_bytes(chosen)
            yield chosen
    while buf:
        yield pick(buf, rng)


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
