"""`vipstream build` as a Ray job: one task per shard, resumable, with progress and a summary.

Shard assignment is a pure function of the manifest order (`videos_per_shard` videos each), so
the same input always yields the same keys in the same shards. A shard is finished when its stats
file exists; a rerun submits only unfinished shards, then rebuilds the run-level tables
(`manifest.parquet`, `errors.parquet`, `summary.json`) from every shard's stats, so a job killed
at any point and rerun ends with exactly the output of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from pipeline.atomic import write_json_atomic, write_parquet_atomic
from pipeline.builder.annotations import AnnotationFormatError, AnnotationOptions, read_annotations
from pipeline.builder.build_shard import build_shard
from pipeline.builder.config import PipelineConfig
from pipeline.builder.manifest import ManifestReadResult, VideoEntry, read_manifest
from pipeline.builder.subtitle_db import SubtitleDbTexts, read_subtitle_db
from pipeline.errors import ERROR_TABLE_SCHEMA, failure_counts
from vipstream.output_lock import BUILD_LOCK_FILENAME, CAPTION_LOCK_FILENAME, output_lock
from pipeline.ray_session import ray_session
from pipeline.shards import read_stats, remove_stale_temporaries
from vipstream.config import ConfigError, config_to_dict, save_config
from vipstream.errors import JobError
from vipstream.schema import (CAPTIONS_DIRNAME, ERRORS_FILENAME, MANIFEST_COLUMNS, MANIFEST_FILENAME,
                              SHARDS_DIRNAME, SUMMARY_FILENAME)

log = logging.getLogger(__name__)
PLAN_FILENAME = "build_plan.json"
CONFIG_FILENAME = "build_config.yaml"
#: Config keys that change shard contents; a resume with other values would mix two builds.
_CONTENT_KEYS = ("videos_per_shard", "min_clip_s", "max_clip_s", "span_tolerance_s", "fps",
                 "short_side_px", "crf", "preset", "keep_audio", "max_subtitle_chars")


def assign_shards(entries: list[VideoEntry], videos_per_shard: int) -> list[list[VideoEntry]]:
    """Consecutive groups of `videos_per_shard` entries, in manifest order."""
    return [entries[i:i + videos_per_shard] for i in range(0, len(entries), videos_per_shard)]


def _plan_fingerprint(entries: list[VideoEntry], cfg: PipelineConfig,
                      subtitle_db: SubtitleDbTexts | None = None) -> str:
    content = {"entries": [e.as_dict() for e in entries],
               "config": {k: getattr(cfg, k) for k in _CONTENT_KEYS}}
    if subtitle_db is not None:  # texts from a DB: resuming with another (or none) would mix texts
        content["subtitle_db"] = subtitle_db.source
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _check_or_write_plan(out_dir: Path, fingerprint: str, num_shards: int, overwrite: bool) -> None:
    """Refuse to resume into an output built from another input or config (it would mix keys)."""
    plan_path = out_dir / PLAN_FILENAME
    if plan_path.exists() and not overwrite:
        previous = json.loads(plan_path.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise ConfigError(
                f"{out_dir} holds a build of another input or config (plan {previous.get('fingerprint', '?')[:12]}"
                f" != {fingerprint[:12]}); use a new --output or pass --overwrite to rebuild it")
        return
    if overwrite:
        _remove_previous_build(out_dir)
    write_json_atomic(plan_path, {"fingerprint": fingerprint, "num_shards": num_shards})


def _remove_previous_build(out_dir: Path) -> None:
    """Everything a previous build (and captioning of it) left: keys would name other clips now.

    Stats go first, so a run killed half-way through this still never sees a finished shard of
    the old build, and the old plan stays until the new one replaces it, so such a run is
    refused again until --overwrite finishes. Caption sidecars go too: they join clips by key;
    a caption run still writing them is refused first (its lock), before anything is removed.
    """
    captions_root = out_dir / CAPTIONS_DIRNAME
    with contextlib.ExitStack() as held:
        if captions_root.is_dir():
            for folder in sorted(p for p in captions_root.iterdir() if p.is_dir()):
                held.enter_context(output_lock(folder / CAPTION_LOCK_FILENAME, "vipstream build --overwrite"))
        shards_dir = out_dir / SHARDS_DIRNAME
        for pattern in ("*.stats.json", "*.tar"):
            for path in shards_dir.glob(pattern):
                path.unlink()
        for name in (MANIFEST_FILENAME, ERRORS_FILENAME, SUMMARY_FILENAME):
            (out_dir / name).unlink(missing_ok=True)
        if captions_root.is_dir():
            log.warning("--overwrite: removing caption sidecars of the previous build in %s", captions_root)
            shutil.rmtree(captions_root)


def _build_shard_task(entries: list[dict[str, Any]], shard: int, out_dir: str,
                      cfg: PipelineConfig, clip_texts: dict | None = None) -> dict[str, Any]:
    import ray  # imported in the worker, where the task runs

    return build_shard([VideoEntry.from_dict(e) for e in entries], shard, out_dir, cfg,
                       node_id=ray.get_runtime_context().get_node_id(), clip_texts=clip_texts)


def _source_bytes(group: list[VideoEntry]) -> int:
    total = 0
    for entry in group:
        try:
            total += os.stat(entry.path).st_size if entry.path else 0
        except OSError:
            pass
    return total


def _run_pending(pending: list[tuple[int, list[VideoEntry]]], out_dir: Path, cfg: PipelineConfig,
                 progress: bool, subtitle_db: SubtitleDbTexts | None = None) -> dict[int, str]:
    """Run the shard tasks; returns {shard: reason} for tasks that crashed outright (their
    per-video failures are already error rows; this is a dead worker, a full disk, a bug)."""
    import ray

    task = ray.remote(_build_shard_task).options(num_cpus=cfg.cpus_per_task,
                                                 max_retries=cfg.max_task_retries)
    # Largest shards first (by source bytes, a proxy for work): the run's tail is then short
    # shards, not one long one on a single CPU. Output does not depend on this order.
    ordered = sorted(pending, key=lambda item: -_source_bytes(item[1]))
    futures = {task.remote([e.as_dict() for e in group], shard, str(out_dir), cfg,
                           subtitle_db.for_entries(group) if subtitle_db is not None else None): shard
               for shard, group in ordered}
    started = time.perf_counter()
    clips = failures = 0
    crashed: dict[int, str] = {}
    with tqdm(total=len(futures), desc="shards", unit="shard", disable=not progress) as bar:
        remaining = list(futures)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            for ref in done:
                try:
                    stats = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the task itself died (after Ray's retries)
                    lines = str(exc).strip().splitlines() or [""]
                    crashed[futures[ref]] = f"{type(exc).__name__}: {lines[-1]}"
                    log.error("shard %06d failed: %s", futures[ref], crashed[futures[ref]])
                    bar.update(1)
                    continue
                clips += stats["clips"]
                failures += len(stats["errors"])
                bar.update(1)
                bar.set_postfix(clips=clips, failures=failures,
                                clips_per_s=f"{clips / max(time.perf_counter() - started, 1e-9):.2f}")
    return crashed


_MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("video_id", pa.string()), ("clip_id", pa.string()),
    ("clip_index", pa.int32()), ("start_s", pa.float64()), ("end_s", pa.float64()),
    ("subtitle", pa.string()), ("duration", pa.float64()), ("fps", pa.float64()),
    ("width", pa.int32()), ("height", pa.int32()), ("num_frames", pa.int32()), ("bytes", pa.int64()),
])
assert tuple(_MANIFEST_SCHEMA.names) == MANIFEST_COLUMNS


def _write_table(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)
    write_parquet_atomic(table, path)


def _summarise(all_stats: list[dict[str, Any]], errors: list[dict[str, Any]], num_entries: int,
               skipped: int, wall_s: float, out_dir: Path) -> dict[str, Any]:
    by_stage, by_reason = failure_counts(errors)
    return {
        "output": str(out_dir),
        "videos": num_entries,
        "videos_failed": sum(s["videos_failed"] for s in all_stats) + sum(
            1 for e in errors if e["stage"] == "manifest" and e.get("video_id")),
        "manifest_errors": by_stage.get("manifest", 0),
        "clips": sum(s["clips"] for s in all_stats),
        "clips_failed": sum(s["clips_failed"] for s in all_stats),
        "clips_without_text": sum(s["clips_without_text"] for s in all_stats),
        "subtitles_cut": sum(s.get("subtitles_cut", 0) for s in all_stats),
        "video_hours": round(sum(s["video_seconds"] for s in all_stats) / 3600, 4),
        "clip_hours": round(sum(s["clip_seconds"] for s in all_stats) / 3600, 4),
        "bytes": sum(s["bytes"] for s in all_stats),
        "shards": len(all_stats),
        "shards_skipped_as_finished": skipped,
        "failures_by_stage": by_stage,
        "failures_by_reason": by_reason,
        "wall_s": round(wall_s, 2),
    }


def run_build(input_path: str | Path, out_dir: str | Path, cfg: PipelineConfig, *,
              video_root: str | Path | None = None, ray_address: str | None = None,
              overwrite: bool = False, progress: bool = True,
              annotations: AnnotationOptions | None = None,
              subtitle_db: str | Path | None = None) -> dict[str, Any]:
    """Build (or resume) the corpus at `out_dir`; returns the summary also saved as summary.json.

    annotations: `input_path` is a retrieval set's annotation file, read with these options
    (pipeline/builder/annotations.py): one clip per video carrying its captions.
    subtitle_db: clip texts by clip_id (pipeline/builder/subtitle_db.py) instead of subtitle files."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if subtitle_db is not None and annotations is not None:
        raise ConfigError("--subtitle-db gives corpus clips their texts: a retrieval set (--annotations) "
                          "has its captions; use it with --input")
    try:
        if annotations is not None:
            listing = read_annotations(input_path, video_root, annotations)
        else:
            listing = read_manifest(input_path, video_root)
    except (FileNotFoundError, AnnotationFormatError) as exc:
        raise ConfigError(str(exc)) from None
    log.info("read %d videos (%s form), %d manifest errors", len(listing.entries), listing.form,
             len(listing.errors))
    texts = read_subtitle_db(subtitle_db, listing.entries) if subtitle_db is not None else None
    groups = assign_shards(listing.entries, cfg.videos_per_shard)
    (out_dir / SHARDS_DIRNAME).mkdir(parents=True, exist_ok=True)
    # One build per OUT: taken before anything is cleaned up or removed, held to the end.
    with output_lock(out_dir / BUILD_LOCK_FILENAME, "vipstream build"):
        return _build_locked(listing, groups, out_dir, cfg, ray_address, overwrite, progress, started, texts)


def _build_locked(listing: ManifestReadResult, groups: list[list[VideoEntry]], out_dir: Path,
                  cfg: PipelineConfig, ray_address: str | None, overwrite: bool, progress: bool,
                  started: float, texts: SubtitleDbTexts | None = None) -> dict[str, Any]:
    _check_or_write_plan(out_dir, _plan_fingerprint(listing.entries, cfg, texts), len(groups), overwrite)
    save_config(cfg, out_dir / CONFIG_FILENAME)  # only once the output is known to be this build's
    removed = remove_stale_temporaries(out_dir)
    if removed:
        log.info("removed %d temporaries of an interrupted run", removed)
    pending = [(i, g) for i, g in enumerate(groups) if read_stats(out_dir, i) is None]
    skipped = len(groups) - len(pending)
    if skipped:
        log.info("resuming: %d of %d shards already finished", skipped, len(groups))
    crashed: dict[int, str] = {}
    if pending:
        with ray_session(ray_address, num_cpus=cfg.num_cpus or None):
            crashed = _run_pending(pending, out_dir, cfg, progress, texts)
    all_stats = [read_stats(out_dir, i) for i in range(len(groups))]
    unfinished = {i: crashed.get(i, "no stats file") for i, s in enumerate(all_stats) if s is None}
    if unfinished:
        raise JobError(f"{len(unfinished)} of {len(groups)} shards did not finish "
                       f"({'; '.join(f'{i:06d}: {r}' for i, r in sorted(unfinished.items())[:5])}); "
                       f"the others are kept: rerun the same command to retry only these")
    rows = [row for stats in all_stats for row in stats["rows"]]
    errors = [e.as_dict() for e in listing.errors] + [e for s in all_stats for e in s["errors"]]
    _write_table(rows, _MANIFEST_SCHEMA, out_dir / MANIFEST_FILENAME)
    _write_table(errors, ERROR_TABLE_SCHEMA, out_dir / ERRORS_FILENAME)
    summary = _summarise(all_stats, errors, len(listing.entries) + sum(
        1 for e in listing.errors if e.video_id), skipped, time.perf_counter() - started, out_dir)
    if texts is not None:
        summary["subtitle_db"] = texts.summary()
    summary["config"] = config_to_dict(cfg)
    write_json_atomic(out_dir / SUMMARY_FILENAME, summary)
    return summary
