"""The body of one Ray task: fetch a group of videos one after another, logging and yielding
each video's status row as soon as it is known (a Ray streaming generator: the driver's progress
bar moves per video, not per task).

Video k's finish (ffprobe, publication: pipeline/fetch/download.py) and its log line run in a
finisher thread while video k+1 downloads: the probe is a process start that a task would
otherwise wait for once per video. At most one finish is pending; rows are yielded in input
order, a video's row once the next video's download has ended. A task killed in between loses
at most the pending video, which is not logged and so is fetched again on resume.

A task retried by Ray after its worker died appends to the same log, and skips (re-yields) the
videos the dead attempt already logged, so no video is fetched twice by one run.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline.fetch import classify as c
from pipeline.fetch.config import FetchConfig, secrets_of
from pipeline.fetch.download import Downloaded, download_video, finish_video, private_cookie_copy, status_row
from pipeline.fetch.inputs import FetchEntry
from pipeline.fetch.ratelimit import HostRateLimiter
from pipeline.fetch.state import FetchLayout, append_row, read_log
from pipeline.fetch.ytdl_session import YtdlSession

log = logging.getLogger(__name__)


def _internal_error_row(entry: FetchEntry, exc: Exception, attempts: int, secrets: tuple[str, ...]) -> dict[str, Any]:
    """Our bug or a full disk: this video's row says so, and the group goes on."""
    log.error("unexpected failure fetching %s", entry.video_id, exc_info=exc)
    return status_row(entry, c.ERROR, f"internal: {type(exc).__name__}: {exc}", attempts=attempts,
                      started=time.monotonic(), secrets=secrets)


def _guarded(entry: FetchEntry, attempts: int, secrets: tuple[str, ...], work: Callable[[], Any]) -> Any:
    try:
        return work()
    except Exception as exc:
        return _internal_error_row(entry, exc, attempts, secrets)


def fetch_group(entries: list[dict[str, Any]], cfg: FetchConfig, out_dir: str, label: str,
                previous_attempts: dict[str, int]) -> Iterator[dict[str, Any]]:
    """Fetch `entries` (FetchEntry dicts) into `out_dir`; yields one status row per video, in order."""
    layout = FetchLayout(Path(out_dir))
    log_path = layout.logs / f"{label}.jsonl"
    already = {row["video_id"]: row for row in read_log(log_path)}
    limiter = HostRateLimiter(cfg.rate_per_host_per_s, cfg.rate_burst, cfg.rate_limit_dir or None)
    secrets = secrets_of(cfg)
    rng = random.Random()
    pending: Future | None = None  # the finish (and log line) of the last downloaded video
    log_lock = threading.Lock()  # the finisher and this thread both append to the log

    def record(row: dict[str, Any]) -> dict[str, Any]:
        with log_lock:
            append_row(log_path, row)
        return row

    def finish(done: Downloaded) -> dict[str, Any]:
        return record(_guarded(done.entry, done.attempts, secrets, lambda: finish_video(done, cfg, layout, secrets)))

    def settle() -> Iterator[dict[str, Any]]:
        nonlocal pending
        if pending is not None:
            row, pending = pending.result(), None
            yield row

    with private_cookie_copy(cfg.cookies) as cookie_file, contextlib.closing(
            YtdlSession(cfg, layout.tmp, cookie_file)) as session, ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="fetch-finish") as finisher:
        session.video()  # loads yt-dlp's extractors now, before any download's deadline starts
        for data in entries:
            entry = FetchEntry(**data)
            attempts = previous_attempts.get(entry.video_id, 0)
            if entry.video_id in already:
                yield from settle()
                yield already[entry.video_id]
                continue
            result = _guarded(entry, attempts + 1, secrets, lambda: download_video(
                entry, cfg, layout, limiter, session=session, secrets=secrets, rng=rng, previous_attempts=attempts))
            yield from settle()
            if isinstance(result, Downloaded):
                pending = finisher.submit(finish, result)
                continue
            yield record(result)
        yield from settle()


def fetch_group_task(entries: list[dict[str, Any]], cfg: FetchConfig, out_dir: str, label: str,
                     previous_attempts: dict[str, int]) -> Iterator[dict[str, Any]]:
    """The Ray task (a generator, so Ray streams its rows to the driver)."""
    yield from fetch_group(entries, cfg, out_dir, label, previous_attempts)
