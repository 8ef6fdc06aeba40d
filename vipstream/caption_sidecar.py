"""Reading a caption sidecar (`OUT/captions/{captioner_id}/{shard:06d}.parquet`) and deciding
whether it is one: the single check that the trainer, `vipstream caption` and `vipstream inspect`
share (issue 15.3), so a file the caption job would redo is the file training skips and inspect
reports.

A sidecar is valid when it is a readable parquet file whose `key` and `caption` columns are
strings (valid UTF-8) and whose `frame_index` column is integer, with no null key or frame index
and no negative frame index. A null or empty caption is allowed: that clip has no caption.
Anything else (random bytes, a 0-byte file, a string or missing `frame_index`, invalid UTF-8)
raises `SidecarError` naming the file and what was wrong. A missing file raises
FileNotFoundError: not captioned yet, which callers treat apart from a broken one.

Lives in vipstream/ because pipeline/ writes sidecars and train/ reads them, and train/ never
imports pipeline/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: The columns a reader needs, and the type test each must pass.
_READ_COLUMNS = {
    "key": (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "a string column"),
    "caption": (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "a string column"),
    "frame_index": (pa.types.is_integer, "an integer column"),
}


class SidecarError(ValueError):
    """A caption sidecar that is not one (unreadable, or not the sidecar schema)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"caption sidecar {path}: {reason}")
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class SidecarRows:
    """A valid sidecar's rows, as readers use them."""

    captions: dict[str, tuple[str, int]]  # key -> (caption, frame_index); null/empty captions left out
    rows: int                             # rows in the file
    cut: int                              # captions longer than max_caption_chars, cut to it


def _open(path: str):
    if "://" in path:
        import fsspec

        return fsspec.open(path, "rb").open()
    return path


def read_sidecar(path: str | Path, max_caption_chars: int | None = None) -> SidecarRows:
    """The rows of a valid sidecar at `path` (local path or fsspec URL), each caption cut to
    `max_caption_chars` characters (None: kept whole) before it becomes a Python string.

    Raises FileNotFoundError when there is no such file, SidecarError when it is not a sidecar."""
    path = str(path)
    source = _open(path)
    try:
        try:
            parquet = pq.ParquetFile(source)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise SidecarError(path, f"not a readable parquet file ({type(exc).__name__}: {exc})") from None
        schema = parquet.schema_arrow
        for name, (accepts, expected) in _READ_COLUMNS.items():
            if name not in schema.names:
                raise SidecarError(path, f"no {name!r} column (found columns {schema.names})")
            if not accepts(schema.field(name).type):
                raise SidecarError(path, f"column {name!r}: expected {expected}, found {schema.field(name).type}")
        try:
            table = parquet.read(columns=list(_READ_COLUMNS))
            table.validate(full=True)  # invalid UTF-8 in a string column fails here, not in to_pylist
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise SidecarError(path, f"unreadable rows ({type(exc).__name__}: {exc})") from None
    finally:
        if source is not path:
            source.close()
    for name in ("key", "frame_index"):
        if table.column(name).null_count:
            raise SidecarError(path, f"{table.column(name).null_count} rows have a null {name!r}")
    frame_index = table.column("frame_index")
    if len(table) and pc.min(frame_index).as_py() < 0:
        raise SidecarError(path, f"negative frame_index {pc.min(frame_index).as_py()}")
    captions = table.column("caption")
    cut = 0
    if max_caption_chars is not None and len(table):
        too_long = pc.greater(pc.utf8_length(captions), max_caption_chars)
        cut = int(pc.sum(too_long).as_py() or 0)
        if cut:
            captions = pc.utf8_slice_codeunits(captions, 0, max_caption_chars)
    rows = {key: (caption, int(index)) for key, caption, index
            in zip(table.column("key").to_pylist(), captions.to_pylist(), frame_index.to_pylist())
            if isinstance(caption, str) and caption.strip()}
    return SidecarRows(rows, len(table), cut)


def sidecar_problem(path: str | Path) -> str | None:
    """Why `path` is not a usable sidecar ("missing" when there is no file), or None when it is."""
    try:
        read_sidecar(path)
    except FileNotFoundError:
        return "missing"
    except SidecarError as exc:
        return exc.reason
    return None
