"""Splitting by rank and worker, resampled streams, exact resume (train/data/stream.py through the
loader, with real DataLoader worker processes)."""

from __future__ import annotations

import torch

from tests.train.loader_support import batches, data_config, manifest_subtitles


def test_two_ranks_of_two_workers_read_disjoint_samples_and_cover_every_key_once(captioned_corpus, stand_in_clip):
    out_dir, _ = captioned_corpus
    cfg = data_config(out_dir, mode="eval", text_source="subtitle", num_workers=2, batch_size=3)
    per_rank = [[k for b in batches(cfg, stand_in_clip, rank=rank, world_size=2) for k in b.keys]
                for rank in (0, 1)]
    assert per_rank[0] and per_rank[1]
    assert not set(per_rank[0]) & set(per_rank[1])
    everything = per_rank[0] + per_rank[1]
    assert sorted(everything) == sorted(manifest_subtitles(out_dir))  # every key exactly once


def test_with_fewer_shards_than_ranks_times_workers_every_rank_still_yields(captioned_corpus, stand_in_clip):
    """2 shards, 2 ranks x 2 workers: resampled mode gives every worker of every rank full batches."""
    out_dir, _ = captioned_corpus
    brace = str(out_dir / "shards" / "{000000..000001}.tar")  # the brace pattern form
    cfg = data_config(brace, mode="train", text_source="both", num_workers=2, batch_size=3)
    seen = []
    for rank in (0, 1):
        got = batches(cfg, stand_in_clip, limit=4, rank=rank, world_size=2)  # 2 batches from each worker
        assert len(got) == 4 and all(len(b) == 3 for b in got)
        seen.append([tuple(b.keys) for b in got])
    assert seen[0] != seen[1]  # the ranks' streams are seeded apart


def test_resume_at_batch_k_yields_the_batches_of_an_uninterrupted_loader(captioned_corpus, stand_in_clip):
    out_dir, _ = captioned_corpus
    cfg = data_config(out_dir, mode="train", text_source="both", num_workers=2, batch_size=3,
                      sample_shuffle=10, sample_shuffle_initial=5)
    k, more = 5, 4  # k odd: the workers have made unequal numbers of batches
    uninterrupted = batches(cfg, stand_in_clip, limit=k + more, rank=1, world_size=2, seed=7)
    resumed = batches(cfg, stand_in_clip, limit=more, rank=1, world_size=2, seed=7, start_batch=k)
    assert [b.keys for b in resumed] == [b.keys for b in uninterrupted[k:]]
    for old, new in zip(uninterrupted[k:], resumed):  # same frames drawn, same texts
        assert torch.equal(old.video, new.video) and torch.equal(old.caption_ids, new.caption_ids)
    # 22 clips, 9 batches of 3 from one worker pair: the stream crossed into a second shard round
    assert len({key for b in uninterrupted for key in b.keys}) < (k + more) * 3


def test_the_shuffle_buffer_holds_at_most_sample_shuffle_bytes_of_mp4_and_shuffles_as_before():
    """Issue 15.11: 1000 buffered ~560 KiB clips grew each worker's RSS by ~0.5 GiB."""
    from train.data.stream import StreamSlot, shuffle_samples

    clip_bytes, budget = 100_000, 1_000_000
    slot = StreamSlot(rank=0, world_size=1, worker=0, num_workers=1)
    pulled, held_max = {}, 0

    def stream(count: int):
        for index in range(count):
            pulled[index] = clip_bytes
            yield {"key": index, "mp4": b"\0" * clip_bytes}

    out = []
    for sample in shuffle_samples(stream(3000), bufsize=1000, initial=100, seed=1, slot=slot, max_bytes=budget):
        held_max = max(held_max, sum(pulled.values()))  # pulled, not yet handed on: in the buffer
        del pulled[sample["key"]]
        out.append(sample["key"])
    assert sorted(out) == list(range(3000))
    assert held_max <= budget + clip_bytes  # without the bound: 1000 clips, 100 MB

    def keys(max_bytes: int) -> list[int]:
        samples = ({"key": i, "mp4": b"\0" * 10} for i in range(500))
        return [s["key"] for s in shuffle_samples(samples, bufsize=64, initial=16, seed=3, slot=slot,
                                                  max_bytes=max_bytes)]

    assert keys(10 ** 9) == keys(0)  # a bound that never binds: webdataset's shuffle, draw for draw
