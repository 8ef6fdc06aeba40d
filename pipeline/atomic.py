"""Atomic file publication: write a hidden temporary beside the target, fsync, `os.replace`.

Readers (and a resumed job) see either the old file or the whole new one. Temporaries are
hidden and end in `.tmp`, so no `*.tar` / `*.json` / `*.parquet` pattern (ours, a user's glob,
pathlib's, which also matches dot files) ever picks up a half-written file.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TMP_GLOB = ".*.tmp"


def temporary_path_for(final: Path) -> Path:
    """A hidden sibling of `final` to write into, then `os.replace` onto `final`."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")


def _fsync_and_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = temporary_path_for(path)
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    _fsync_and_replace(tmp, path)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = temporary_path_for(path)
    pq.write_table(table, tmp)
    _fsync_and_replace(tmp, path)


def remove_temporaries(*folders: Path) -> int:
    """Delete temporaries a killed run left in `folders`; returns how many."""
    removed = 0
    for folder in folders:
        if folder.is_dir():
            for path in folder.glob(TMP_GLOB):
                path.unlink(missing_ok=True)
                removed += 1
    return removed
