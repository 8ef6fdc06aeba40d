"""Helpers of the loader tests: run a loader to the end (or N batches), read the build's truth."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from train.data import Batch, TrainDataConfig, make_train_loader
from vipstream.schema import CAPTIONS_DIRNAME, MANIFEST_FILENAME

#: Small and fast on a shared 2-core machine: few frames, small batches.
FAST = dict(num_frames=3, batch_size=4, num_workers=1, sample_shuffle=8, sample_shuffle_initial=4)


def data_config(shards: str | Path, **overrides) -> TrainDataConfig:
    return TrainDataConfig(**{"shards": str(shards), "captioner_id": "tiny-blip", **FAST, **overrides})


def batches(cfg: TrainDataConfig, processor_dir: Path, limit: int | None = None, **kwargs) -> list[Batch]:
    """Every batch of an eval pass, or the first `limit` of a train stream."""
    loader = make_train_loader(cfg, str(processor_dir), **kwargs)
    return list(itertools.islice(loader, limit))


def per_key(batch_list: list[Batch], field: str) -> dict[str, object]:
    """key -> row `field` of its batch (tensors row-sliced, lists indexed)."""
    rows = {}
    for batch in batch_list:
        values = getattr(batch, field)
        for i, key in enumerate(batch.keys):
            assert key not in rows, f"{key} arrived twice"
            rows[key] = values[i]
    return rows


def summed_counts(batch_list: list[Batch]) -> dict[str, int]:
    total: dict[str, int] = {}
    for batch in batch_list:
        for reason, n in batch.counts.items():
            total[reason] = total.get(reason, 0) + n
    return total


def manifest_subtitles(out_dir: Path) -> dict[str, str]:
    rows = pq.read_table(out_dir / MANIFEST_FILENAME, columns=["key", "subtitle"]).to_pylist()
    return {r["key"]: r["subtitle"] for r in rows}


def sidecar_rows(out_dir: Path, captioner_id: str) -> dict[str, dict]:
    rows = {}
    for path in sorted((out_dir / CAPTIONS_DIRNAME / captioner_id).glob("[0-9]*.parquet")):
        rows.update({r["key"]: r for r in pq.read_table(path).to_pylist()})
    return rows


def copy_output(out_dir: Path, dest: Path) -> Path:
    """A private copy of a build output a test may alter."""
    shutil.copytree(out_dir, dest)
    return dest
