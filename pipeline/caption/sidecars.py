"""Caption sidecars: the driver buffers the job's rows per shard and publishes each shard's
`captions/{id}/{shard}.parquet` (and its rows of `errors.parquet`) once all its rows are in."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import write_parquet_atomic
from pipeline.caption.stages import SAMPLE, SHARD_ERROR
from pipeline.errors import ERROR_TABLE_SCHEMA, ErrorRow
from vipstream.schema import (CAPTION_COLUMNS, ERRORS_FILENAME, SHARDS_DIRNAME,
                              caption_sidecar_path, captions_dir, shard_stem)
from vipstream.text_bounds import cut_text

log = logging.getLogger(__name__)

CAPTION_SCHEMA = pa.schema([
    ("key", pa.string()), ("caption", pa.string()), ("frame_index", pa.int32()),
    ("frame_time_s", pa.float64()), ("captioner", pa.string()),
    ("created", pa.timestamp("us", tz="UTC")),
])
assert tuple(CAPTION_SCHEMA.names) == CAPTION_COLUMNS


# ---------------------------------------------------------------------------------------------
# Driver: buffer rows per shard, publish each shard's sidecar when all its rows are in


def _shard_source(shard: int) -> str:
    return f"{SHARDS_DIRNAME}/{shard_stem(shard)}.tar"


class SidecarWriter:
    """Collects the job's output rows and writes each shard's sidecar once all its rows are in."""

    def __init__(self, out_dir: Path, captioner_id: str, max_caption_chars: int | None = None):
        self.out_dir = out_dir
        self.captioner_id = captioner_id
        self.max_caption_chars = max_caption_chars
        self.captions_cut = 0  # captions longer than max_caption_chars, written cut
        self.errors_path = captions_dir(out_dir, captioner_id) / ERRORS_FILENAME
        # shard -> sample_index -> row: keyed, so a sample re-emitted by a retried Ray task is
        # counted once and a shard is complete only when every index 0..total-1 is in.
        self.pending: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.totals: dict[int, int] = {}
        self.done: set[int] = set()
        self.failed: set[int] = set()
        self.captions = 0
        self.errors: list[dict[str, Any]] = []  # this run's
        self._all_errors: list[dict[str, Any]] | None = None  # errors.parquet's

    def add(self, rows: list[dict[str, Any]]) -> int:
        """Buffer rows; write every shard they complete. Returns captions in `rows`."""
        new_captions = 0
        for row in rows:
            shard = int(row["shard"])
            index = int(row["sample_index"])
            if shard in self.done or shard in self.failed or index in self.pending[shard]:
                log.warning("shard %s: sample %d arrived twice (a retried task); kept once",
                            shard_stem(shard), index)
                continue
            self.totals[shard] = int(row["shard_total"])
            self.pending[shard][index] = row
            new_captions += row["kind"] == SAMPLE and not row["error_stage"]
            if len(self.pending[shard]) == self.totals[shard]:
                self._finish(shard, list(self.pending.pop(shard).values()))
        return new_captions

    def incomplete(self) -> dict[int, tuple[int, int]]:
        return {s: (len(r), self.totals[s]) for s, r in self.pending.items()}

    def _finish(self, shard: int, rows: list[dict[str, Any]]) -> None:
        rows.sort(key=lambda r: int(r["sample_index"]))
        errors = [self._error_row(shard, r) for r in rows if r["error_stage"]]
        # Errors first: a kill before the sidecar lands only means this shard is redone.
        self._replace_shard_errors(shard, errors)
        self.errors.extend(errors)
        if any(r["kind"] == SHARD_ERROR for r in rows):
            self.failed.add(shard)
            log.error("shard %s could not be read: %s", shard_stem(shard), errors[0]["reason"])
            return
        ok = [r for r in rows if r["kind"] == SAMPLE and not r["error_stage"]]
        created = datetime.now(timezone.utc)
        table = pa.Table.from_pylist([
            {"key": r["key"], "caption": self._bounded(r["caption"]), "frame_index": int(r["frame_index"]),
             "frame_time_s": float(r["frame_time_s"]), "captioner": self.captioner_id, "created": created}
            for r in ok], schema=CAPTION_SCHEMA)
        write_parquet_atomic(table, caption_sidecar_path(self.out_dir, self.captioner_id, shard))
        self.done.add(shard)
        self.captions += len(ok)
        log.debug("shard %s: %d captions, %d errors", shard_stem(shard), len(ok), len(errors))

    def _bounded(self, caption: str) -> str:
        if self.max_caption_chars is None or len(caption) <= self.max_caption_chars:
            return caption
        self.captions_cut += 1
        return cut_text(caption, self.max_caption_chars)

    @staticmethod
    def _error_row(shard: int, row: dict[str, Any]) -> dict[str, Any]:
        source = _shard_source(shard) + (f"#{row['key']}" if row["key"] else "")
        return ErrorRow(video_id=row["video_id"] or None, clip_id=row["key"] or None,
                        stage=row["error_stage"], reason=row["error_reason"], source=source).as_dict()

    def _replace_shard_errors(self, shard: int, errors: list[dict[str, Any]]) -> None:
        """errors.parquet := its rows of other shards + this shard's new rows (idempotent).

        Rows of earlier runs are read once and kept in memory; the file is rewritten whole (it
        is small) only when this shard's rows change it."""
        if self._all_errors is None:
            self._all_errors = read_error_rows(self.errors_path)
        prefix = _shard_source(shard)
        kept = [e for e in self._all_errors
                if not ((e.get("source") or "") == prefix or (e.get("source") or "").startswith(prefix + "#"))]
        if not errors and len(kept) == len(self._all_errors) and self.errors_path.exists():
            return
        self._all_errors = kept + errors
        write_parquet_atomic(pa.Table.from_pylist(self._all_errors, schema=ERROR_TABLE_SCHEMA), self.errors_path)


def read_error_rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist() if path.exists() else []
