"""`vipstream fetch` as a Ray job: pending videos -> groups -> streaming Ray tasks -> tables.

    input (4 forms) -> skip done videos (and earlier failures, unless --retry-failed and retryable)
                    -> groups of <= videos_per_task, at most `concurrency` tasks in flight
                    -> each task fetches its videos one by one (pipeline/fetch/task.py), logging
                       and yielding one row per video (the progress bar: videos/s, MB/s)
                    -> status.parquet, manifest.jsonl, errors.parquet, summary.json, rebuilt
                       from the logs (pipeline/fetch/state.py), then the logs compacted

One run per VIDEOS/ at a time (the output lock of build and caption, taken before anything is
cleaned up). A run killed at any point and rerun ends with the same files and tables as an
uninterrupted one: published files are whole, and the record says which are done.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from tqdm import tqdm

from pipeline.atomic import write_json_atomic, write_parquet_atomic
from pipeline.errors import ERROR_TABLE_SCHEMA
from pipeline.fetch import classify as c
from pipeline.fetch.config import FetchConfig, redacted_config
from pipeline.fetch.inputs import FetchEntry, FetchInput, read_fetch_input
from pipeline.fetch.state import (FETCH_CONFIG_FILENAME, FETCH_MANIFEST_FILENAME, STATUS_FILENAME, FetchLayout,
                                  compact_logs, is_done, read_state, write_manifest, write_status_table)
from pipeline.fetch.task import fetch_group_task
from pipeline.ray_session import ray_session
from vipstream.atomic import write_text_atomic
from vipstream.config import ConfigError
from vipstream.errors import JobError
from vipstream.output_lock import BUILD_LOCK_FILENAME, output_lock
from vipstream.schema import ERRORS_FILENAME, SUMMARY_FILENAME

log = logging.getLogger(__name__)

#: The output lock of `vipstream build`, in VIDEOS/: one writing job per folder, whichever it is.
FETCH_LOCK_FILENAME = BUILD_LOCK_FILENAME
PLAN_FILENAME = "plan.json"
#: Config keys that change what a fetched file is; a resume with other values would mix two corpora.
CONTENT_KEYS = ("max_height", "subtitles", "auto_subtitles")


def plan_pending(entries: list[FetchEntry], state: dict[str, dict[str, Any]], layout: FetchLayout,
                 retry_failed: bool) -> tuple[list[FetchEntry], dict[str, int], Counter]:
    """(entries to fetch now, their earlier attempts, why the others are skipped) — pure of Ray.

    Fetched: never attempted, URL changed, `ok` but its mp4 is gone, and with `retry_failed` the
    retryable failures (RETRYABLE_STATUSES). Skipped: done, and every other earlier failure.
    """
    pending, attempts, skipped = [], {}, Counter()
    for entry in entries:
        row = state.get(entry.video_id)
        if row is None or row.get("url") != entry.url:
            pending.append(entry)
            continue
        if is_done(row, layout):
            skipped["done"] += 1
            continue
        if row.get("status") != c.OK and not (retry_failed and row.get("status") in c.RETRYABLE_STATUSES):
            skipped["failed_before"] += 1
            continue
        pending.append(entry)
        attempts[entry.video_id] = int(row.get("attempts") or 0)
    return pending, attempts, skipped


def group_entries(entries: list[FetchEntry], videos_per_task: int, concurrency: int) -> list[list[FetchEntry]]:
    """Consecutive groups, at most `videos_per_task` each, and small enough that a short list
    still fills `concurrency` tasks."""
    if not entries:
        return []
    size = max(1, min(videos_per_task, math.ceil(len(entries) / concurrency)))
    return [entries[i:i + size] for i in range(0, len(entries), size)]


def _check_or_write_plan(layout: FetchLayout, cfg: FetchConfig) -> None:
    """Refuse to resume into a folder fetched with other content settings (it would mix them)."""
    path = layout.work / PLAN_FILENAME
    content = {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(cfg, k)) for k in CONTENT_KEYS)}
    if path.exists():
        previous = json.loads(path.read_text()).get("content")
        if previous != content:
            raise ConfigError(f"{layout.out_dir} holds videos fetched with {previous}, not {content}; "
                              f"use another --output (or the same settings)")
        return
    layout.work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"content": content})


def _run_tasks(groups: list[list[FetchEntry]], attempts: dict[str, int], layout: FetchLayout,
               cfg: FetchConfig, progress: bool) -> tuple[dict[str, str], int, float]:
    """Run the group tasks, at most `concurrency` at once; returns ({label: reason} of tasks
    that died, bytes fetched, seconds)."""
    import ray

    task = ray.remote(fetch_group_task).options(num_cpus=cfg.cpus_per_task, max_retries=cfg.max_task_retries)
    run_id = uuid.uuid4().hex[:8]
    queue = [(f"run-{run_id}-{i:06d}", group) for i, group in enumerate(groups)]
    queue.reverse()
    active: dict[Any, str] = {}
    crashed: dict[str, str] = {}
    seen: set[str] = set()
    counts: Counter = Counter()
    fetched_bytes = 0
    started = time.perf_counter()
    total = sum(len(g) for g in groups)
    with tqdm(total=total, desc="fetch", unit="video", disable=not progress, smoothing=0.05) as bar:
        while queue or active:
            while queue and len(active) < cfg.concurrency:
                label, group = queue.pop()
                generator = task.remote([e.as_dict() for e in group], cfg, str(layout.out_dir), label,
                                        {e.video_id: attempts.get(e.video_id, 0) for e in group})
                active[generator] = label
            ready, _ = ray.wait(list(active), num_returns=1)
            for generator in ready:
                try:
                    row = ray.get(next(generator))
                except StopIteration:
                    del active[generator]
                    continue
                except ray.exceptions.RayError as exc:  # the task died (after Ray's retries)
                    lines = str(exc).strip().splitlines() or [""]
                    crashed[active.pop(generator)] = f"{type(exc).__name__}: {lines[-1]}"
                    log.error("fetch task failed: %s", lines[-1])
                    continue
                if row["video_id"] in seen:
                    continue
                seen.add(row["video_id"])
                counts[row["status"]] += 1
                fetched_bytes += int(row.get("bytes") or 0)
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.update(1)
                bar.set_postfix(ok=counts[c.OK], failed=sum(counts.values()) - counts[c.OK],
                                MB_per_s=f"{fetched_bytes / elapsed / 1e6:.2f}")
    return crashed, fetched_bytes, time.perf_counter() - started


def _pending_row(entry: FetchEntry) -> dict[str, Any]:
    return {"video_id": entry.video_id, "url": entry.url, "status": c.PENDING,
            "reason": "not attempted yet (the job did not finish): rerun the same command",
            "attempts": 0, "bytes": 0, "seconds": 0.0, "retryable": False, "line": entry.line,
            "clips": entry.clips}


def _final_rows(entries: list[FetchEntry], state: dict[str, dict[str, Any]], layout: FetchLayout) -> list[dict[str, Any]]:
    """One row per video: the input's, in input order (its clips as the input gives them), then
    videos an earlier input brought into this folder, by id."""
    rows = []
    for entry in entries:
        row = state.get(entry.video_id)
        if row is None or row.get("url") != entry.url:
            rows.append(_pending_row(entry))
            continue
        row = dict(row, clips=entry.clips, line=entry.line)
        if row["status"] == c.OK and not is_done(row, layout):
            row = _pending_row(entry)
        rows.append(row)
    in_input = {e.video_id for e in entries}
    rows += [state[k] for k in sorted(state) if k not in in_input]
    return rows


def _summary(rows: list[dict[str, Any]], listing: FetchInput, skipped: Counter, pending: int,
             fetched_bytes: int, job_s: float, wall_s: float, out_dir: Path, cfg: FetchConfig) -> dict[str, Any]:
    by_status = Counter(r["status"] for r in rows)
    subtitles = Counter(r.get("subtitle_status") for r in rows if r["status"] == c.OK)
    reasons = Counter(f"{r['status']}: {str(r.get('reason'))[:80]}" for r in rows
                      if r["status"] not in (c.OK, c.PENDING))
    return {
        "output": str(out_dir),
        "input_form": listing.form,
        "videos": len(rows),
        "input_errors": len(listing.errors),
        "by_status": dict(by_status),
        "subtitles_by_status": {str(k): v for k, v in subtitles.items()},
        "failures_by_reason": dict(reasons.most_common(10)),
        "fetched_this_run": pending,
        "skipped_as_done": skipped["done"],
        "skipped_as_failed_before": skipped["failed_before"],
        "bytes": sum(int(r.get("bytes") or 0) for r in rows if r["status"] == c.OK),
        "bytes_this_run": fetched_bytes,
        "bytes_per_s": round(fetched_bytes / job_s, 1) if job_s > 0 else None,
        "videos_per_s": round(pending / job_s, 3) if job_s > 0 else None,
        "job_s": round(job_s, 3),
        "wall_s": round(wall_s, 3),
        "config": redacted_config(cfg),
    }


def run_fetch(input_path: str | Path, out_dir: str | Path, cfg: FetchConfig, *, ray_address: str | None = None,
              retry_failed: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fetch (or resume fetching) the videos of `input_path` into `out_dir`; returns the summary
    also saved as summary.json. ConfigError for a missing/unreadable input or cookies file, JobError
    (after writing the tables) when some videos could not even be attempted."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    try:
        listing = read_fetch_input(input_path)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if cfg.cookies and not os.access(cfg.cookies, os.R_OK):
        raise ConfigError("the cookies file given (path not shown) does not exist or cannot be read")
    log.info("read %d videos (%s form), %d input errors", len(listing.entries), listing.form, len(listing.errors))
    out_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir / FETCH_LOCK_FILENAME, "vipstream fetch"):
        return _fetch_locked(listing, out_dir, cfg, ray_address, retry_failed, progress, started)


def _fetch_locked(listing: FetchInput, out_dir: Path, cfg: FetchConfig, ray_address: str | None,
                  retry_failed: bool, progress: bool, started: float) -> dict[str, Any]:
    layout = FetchLayout(out_dir)
    _check_or_write_plan(layout, cfg)
    removed = layout.prepare()
    if removed:
        log.info("removed %d temporaries of an interrupted run", removed)
    write_text_atomic(out_dir / FETCH_CONFIG_FILENAME, yaml.safe_dump(redacted_config(cfg), sort_keys=False))
    state, _ = read_state(layout)
    pending, attempts, skipped = plan_pending(listing.entries, state, layout, retry_failed)
    log.info("%d videos to fetch, %d already done, %d failed before%s", len(pending), skipped["done"],
             skipped["failed_before"], "" if retry_failed else " (--retry-failed retries the retryable ones)")
    crashed: dict[str, str] = {}
    fetched_bytes, job_s = 0, 0.0
    if pending:
        with ray_session(ray_address, num_cpus=cfg.num_cpus or None):
            crashed, fetched_bytes, job_s = _run_tasks(group_entries(pending, cfg.videos_per_task, cfg.concurrency),
                                                       attempts, layout, cfg, progress)
    state, logs = read_state(layout)
    rows = _final_rows(listing.entries, state, layout)
    write_status_table(rows, out_dir / STATUS_FILENAME)
    write_manifest([r for r in rows if r["status"] == c.OK], out_dir / FETCH_MANIFEST_FILENAME)
    errors = [e.as_dict() for e in listing.errors]
    write_parquet_atomic(pa.Table.from_pylist([{k: e.get(k) for k in ERROR_TABLE_SCHEMA.names} for e in errors],
                                              schema=ERROR_TABLE_SCHEMA), out_dir / ERRORS_FILENAME)
    summary = _summary(rows, listing, skipped, len(pending), fetched_bytes, job_s,
                       time.perf_counter() - started, out_dir, cfg)
    write_json_atomic(out_dir / SUMMARY_FILENAME, summary)
    compact_logs(layout, state.values(), logs)
    unfinished = summary["by_status"].get(c.PENDING, 0)
    if unfinished:
        raise JobError(f"{unfinished} videos were not attempted ({'; '.join(sorted(crashed.values())[:3]) or 'tasks ended early'}); "
                       f"the fetched ones are kept: rerun the same command to fetch only these")
    return summary
