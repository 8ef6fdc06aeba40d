"""Broken caption sidecars, one per way a file can be broken (issue 15.3), written over a real
sidecar so everything but the damage is what `vipstream caption` wrote."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: Every damage `damage_sidecar` knows, and the words the reader's reason must contain.
DAMAGES = {
    "random_bytes": "not a readable parquet file",
    "zero_bytes": "not a readable parquet file",
    "frame_index_string": "'frame_index': expected an integer column",
    "frame_index_null": "null 'frame_index'",
    "frame_index_missing": "no 'frame_index' column",
    "invalid_utf8": "Invalid UTF8",
}


def damage_sidecar(path: Path, damage: str) -> None:
    """Overwrite the sidecar at `path` with a damaged copy of itself."""
    if damage == "random_bytes":
        path.write_bytes(os.urandom(4096))
        return
    if damage == "zero_bytes":
        path.write_bytes(b"")
        return
    table = pq.read_table(path)
    position = table.column_names.index("frame_index")
    if damage == "frame_index_string":
        table = table.set_column(position, "frame_index", pa.array([str(v) for v in table.column("frame_index").to_pylist()]))
    elif damage == "frame_index_null":
        values = table.column("frame_index").to_pylist()
        table = table.set_column(position, "frame_index", pa.array([None] + values[1:], pa.int32()))
    elif damage == "frame_index_missing":
        table = table.drop(["frame_index"])
    elif damage == "invalid_utf8":  # the bytes of a string column, one caption not UTF-8
        captions = [c.encode() for c in table.column("caption").to_pylist()]
        captions[0] = b"\xff\xfe" + captions[0]
        broken = pa.array(captions, pa.binary()).view(pa.string())  # no validation on view
        table = table.set_column(table.column_names.index("caption"), "caption", broken)
    else:
        raise ValueError(f"unknown damage {damage!r}; known: {sorted(DAMAGES)}")
    pq.write_table(table, path)
