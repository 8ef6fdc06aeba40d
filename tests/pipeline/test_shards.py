"""pipeline/shards.py: a shard is visible only once complete, and stats come last."""

from __future__ import annotations

import json

import pytest
import webdataset as wds

from pipeline.shards import ShardWriter, read_stats, remove_stale_temporaries
from vipstream.schema import shard_stats_path, shard_tar_path


def test_committed_shard_is_a_readable_webdataset_with_stats(tmp_path):
    with ShardWriter(tmp_path, 3) as writer:
        writer.write("vid_0000", b"\x00video", {"clip_id": "c0"})
        writer.write("vid_0001", b"\x00video2", {"clip_id": "c1"})
        writer.commit({"clips": 2})
    samples = list(wds.WebDataset(str(shard_tar_path(tmp_path, 3)), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["vid_0000", "vid_0001"]
    assert samples[1]["mp4"] == b"\x00video2" and json.loads(samples[0]["json"]) == {"clip_id": "c0"}
    assert read_stats(tmp_path, 3) == {"clips": 2}
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["000003.stats.json", "000003.tar"]
    assert not list((tmp_path / "shards").glob(".*.tmp"))


def test_same_samples_give_byte_identical_tars(tmp_path):
    for name in ("a", "b"):
        with ShardWriter(tmp_path / name, 0) as writer:
            writer.write("k_0000", b"bytes", {"x": 1})
            writer.commit({})
    assert shard_tar_path(tmp_path / "a", 0).read_bytes() == shard_tar_path(tmp_path / "b", 0).read_bytes()


def test_a_failure_before_commit_leaves_no_tar_and_no_stats(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, 0) as writer:
            writer.write("k_0000", b"bytes", {})
            raise RuntimeError("killed")
    assert not shard_tar_path(tmp_path, 0).exists()
    assert read_stats(tmp_path, 0) is None
    assert not list((tmp_path / "shards").iterdir())


def test_rewriting_a_shard_removes_its_old_stats_first(tmp_path):
    with ShardWriter(tmp_path, 0) as writer:
        writer.commit({"clips": 0})
    writer = ShardWriter(tmp_path, 0).__enter__()
    assert not shard_stats_path(tmp_path, 0).exists()  # unfinished while rewritten
    writer.__exit__(None, None, None)


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / ".000000.tar.1234abcd.tmp").write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not list((tmp_path / "shards").iterdir())
