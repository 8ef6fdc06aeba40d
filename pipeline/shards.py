"""Writing one shard: a WebDataset tar plus its stats file, committed atomically in that order.

A shard is finished exactly when `{shard}.stats.json` exists (vipstream.schema). The tar is
written under a hidden temporary name and renamed into place, then the stats file likewise, so a
job killed at any instant leaves either a finished shard or nothing a reader would pick up
(`{shard}.tar` without stats is redone by the next run, and no reader lists `.tmp` files).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import webdataset as wds

from pipeline.atomic import remove_temporaries, temporary_path_for, write_json_atomic
from vipstream.schema import SHARDS_DIRNAME, VIDEO_EXT, META_EXT, shard_stats_path, shard_tar_path


class ShardWriter:
    """Context manager writing `{shard}.tar`; `commit(stats)` publishes tar then stats.

    Leaving the block without commit (an exception, a kill) deletes the temporary tar.
    Member timestamps are fixed (mtime=0) so the same clips give the same tar bytes.
    """

    def __init__(self, out_dir: str | Path, shard_index: int):
        self.shard_index = shard_index
        self.tar_path = shard_tar_path(out_dir, shard_index)
        self.stats_path = shard_stats_path(out_dir, shard_index)
        self.tar_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_path_for(self.tar_path)
        self._handle = None
        self._writer: wds.TarWriter | None = None

    def __enter__(self) -> "ShardWriter":
        # A stale stats file would mark this shard finished while it is being rewritten.
        self.stats_path.unlink(missing_ok=True)
        self._handle = open(self._tmp, "wb")
        self._writer = wds.TarWriter(self._handle, mtime=0.0, user="vipstream", group="vipstream")
        return self

    def write(self, key: str, video: bytes, meta: dict[str, Any]) -> None:
        assert self._writer is not None, "use ShardWriter as a context manager"
        self._writer.write({"__key__": key, VIDEO_EXT: video,
                            META_EXT: json.dumps(meta, sort_keys=True).encode("utf-8")})

    def commit(self, stats: dict[str, Any]) -> None:
        assert self._writer is not None and self._handle is not None
        self._writer.close()  # closes the tar stream; the file handle stays ours
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._tmp, self.tar_path)
        write_json_atomic(self.stats_path, stats)
        self._writer = None

    def __exit__(self, *exc_info) -> None:
        if self._writer is not None:  # not committed: discard the partial tar
            try:
                self._writer.close()
                self._handle.close()
            finally:
                self._writer = None
                self._tmp.unlink(missing_ok=True)


def remove_stale_temporaries(out_dir: str | Path) -> int:
    """Delete temporaries a killed run left in OUT/ and OUT/shards/; returns how many."""
    return remove_temporaries(Path(out_dir), Path(out_dir) / SHARDS_DIRNAME)


def read_stats(out_dir: str | Path, shard_index: int) -> dict[str, Any] | None:
    """The committed stats of a shard, or None when the shard is unfinished."""
    path = shard_stats_path(out_dir, shard_index)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return None  # cannot happen with atomic writes, but a hand-edited file is redone
