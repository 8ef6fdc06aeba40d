"""Atomic file publication of the pipeline's JSON and parquet outputs, and the sweep of
temporaries a killed run left. The mechanism (hidden `.NAME.UUID.tmp` sibling, fsync,
`os.replace`) is `vipstream/atomic.py`, shared with the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vipstream.atomic import TMP_GLOB, fsync_and_replace, temporary_path_for, write_text_atomic

__all__ = ["TMP_GLOB", "temporary_path_for", "write_json_atomic", "write_parquet_atomic", "remove_temporaries"]


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = temporary_path_for(path)
    pq.write_table(table, tmp)
    fsync_and_replace(tmp, path)


def remove_temporaries(*folders: Path) -> int:
    """Delete temporaries a killed run left in `folders`; returns how many."""
    removed = 0
    for folder in folders:
        if folder.is_dir():
            for path in folder.glob(TMP_GLOB):
                path.unlink(missing_ok=True)
                removed += 1
    return removed
