"""What a fetch output holds, and the per-video record that makes it resumable.

    VIDEOS/{video_id}.mp4, VIDEOS/{video_id}.{lang}.vtt   published atomically, the mp4 last
    VIDEOS/manifest.jsonl     one row per fetched video: `path`, `subtitles`, `clips` (build's input)
    VIDEOS/status.parquet     one row per video: STATUS_COLUMNS
    VIDEOS/errors.parquet     input lines that could not be read (build's error-table schema)
    VIDEOS/summary.json, VIDEOS/fetch_config.yaml (secrets redacted), VIDEOS/.vipstream.lock
    VIDEOS/.fetch/logs/*.jsonl  the record: one line per finished video, appended by the task
                                that fetched it (flushed and fsynced before the next video)
    VIDEOS/.fetch/tmp/          yt-dlp's working folders (.part, .ytdl, unmerged formats):
                                wiped when a run starts, so a killed run leaves nothing behind

The state of a video is its latest line over all logs (by `finished_at`). A video is done when
that line says `ok` and its mp4 is there with the logged size; a run killed between publishing
an mp4 and logging its line refetches that one video. At the end of a run the logs are
compacted into one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from pipeline.atomic import remove_temporaries, write_parquet_atomic
from vipstream.atomic import fsync_and_replace, temporary_path_for

FETCH_DIRNAME = ".fetch"
STATUS_FILENAME = "status.parquet"
FETCH_MANIFEST_FILENAME = "manifest.jsonl"
FETCH_CONFIG_FILENAME = "fetch_config.yaml"
#: The fields of yt-dlp's info dict worth keeping in the manifest (plus width/height/fps probed).
INFO_FIELDS = ("title", "duration", "uploader", "upload_date", "license", "language")

STATUS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("url", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("attempts", pa.int32()), ("bytes", pa.int64()), ("seconds", pa.float64()), ("http_status", pa.int32()),
    ("retryable", pa.bool_()), ("subtitle_status", pa.string()), ("subtitle_reason", pa.string()),
    ("subtitle_langs", pa.list_(pa.string())), ("path", pa.string()), ("line", pa.int64()),
    ("finished_at", pa.float64()),
])
STATUS_COLUMNS = tuple(STATUS_SCHEMA.names)


@dataclass(frozen=True)
class FetchLayout:
    out_dir: Path

    @property
    def work(self) -> Path:
        return self.out_dir / FETCH_DIRNAME

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @property
    def tmp(self) -> Path:
        return self.work / "tmp"

    def video(self, video_id: str) -> Path:
        return self.out_dir / f"{video_id}.mp4"

    def subtitle(self, video_id: str, lang: str) -> Path:
        return self.out_dir / f"{video_id}.{lang}.vtt"

    def new_log(self, label: str) -> Path:
        return self.logs / f"{label}-{uuid.uuid4().hex[:12]}.jsonl"

    def prepare(self) -> int:
        """Create the folders and remove what a killed run left (its yt-dlp working folders and
        hidden `.*.tmp` files); returns how many entries were removed. Call under the lock."""
        self.logs.mkdir(parents=True, exist_ok=True)
        removed = 0
        if self.tmp.is_dir():
            removed += sum(1 for _ in self.tmp.iterdir())
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        return removed + remove_temporaries(self.out_dir, self.logs)


def append_row(log_path: Path, row: dict[str, Any]) -> None:
    """Append one finished video's row to a task's log, durable before the next video starts."""
    line = json.dumps(row, default=str) + "\n"
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_log(path: Path) -> Iterable[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for raw in text.splitlines():
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a line torn by a kill: that video is fetched again
        if isinstance(row, dict) and isinstance(row.get("video_id"), str):
            yield row


def read_state(layout: FetchLayout) -> tuple[dict[str, dict[str, Any]], list[Path]]:
    """({video_id: latest row}, the log files read)."""
    logs = sorted(layout.logs.glob("*.jsonl")) if layout.logs.is_dir() else []
    latest: dict[str, dict[str, Any]] = {}
    for path in logs:
        for row in read_log(path):
            previous = latest.get(row["video_id"])
            if previous is None or row.get("finished_at", 0) >= previous.get("finished_at", 0):
                latest[row["video_id"]] = row
    return latest, logs


def is_done(row: dict[str, Any] | None, layout: FetchLayout) -> bool:
    """An `ok` row whose mp4 is there with the size it was logged with (a file a power cut
    truncated or emptied is fetched again)."""
    if not row or row.get("status") != "ok":
        return False
    try:
        size = layout.video(row["video_id"]).stat().st_size
    except OSError:
        return False
    return row.get("video_bytes") is None or size == row["video_bytes"]


def compact_logs(layout: FetchLayout, rows: Iterable[dict[str, Any]], read: list[Path]) -> None:
    """Replace the logs read by one holding `rows` (each video's latest). Kill-safe: the new log
    is published before the old ones go, and reading both gives the same latest rows."""
    target = layout.new_log("compact")
    tmp = temporary_path_for(target)
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, default=str) + "\n")
    fsync_and_replace(tmp, target)
    for path in read:
        if path != target:
            path.unlink(missing_ok=True)


def write_status_table(rows: list[dict[str, Any]], path: Path) -> None:
    table = pa.Table.from_pylist([{c: r.get(c) for c in STATUS_COLUMNS} for r in rows], schema=STATUS_SCHEMA)
    write_parquet_atomic(table, path)


def manifest_row(row: dict[str, Any]) -> dict[str, Any]:
    """A fetched video as `vipstream build` reads it (our manifest form): paths relative to
    the manifest's folder, `subtitles` the first asked language fetched, spans as given."""
    subtitles = row.get("subtitles") or {}
    record: dict[str, Any] = {
        "video_id": row["video_id"], "url": row["url"], "path": row["path"],
        "subtitles": next(iter(subtitles.values()), None), "subtitle_files": subtitles,
    }
    if row.get("clips") is not None:
        record["clips"] = row["clips"]
    record.update(row.get("info") or {})
    return record


def write_manifest(rows: list[dict[str, Any]], path: Path) -> None:
    tmp = temporary_path_for(path)
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(manifest_row(row), ensure_ascii=False, default=str) + "\n")
    fsync_and_replace(tmp, path)
