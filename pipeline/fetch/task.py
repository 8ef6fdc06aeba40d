"""The body of one Ray task: fetch a group of videos one after another, logging and yielding
each video's status row as soon as it is known (a Ray streaming generator: the driver's progress
bar moves per video, not per task).

A task retried by Ray after its worker died appends to the same log, and skips (re-yields) the
videos the dead attempt already logged, so no video is fetched twice by one run.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any, Iterator

from pipeline.fetch import classify as c
from pipeline.fetch.config import FetchConfig, scrub, secrets_of
from pipeline.fetch.download import fetch_video, private_cookie_copy
from pipeline.fetch.inputs import FetchEntry
from pipeline.fetch.ratelimit import HostRateLimiter
from pipeline.fetch.state import FetchLayout, append_row, read_log
from pipeline.fetch.ytdl_session import YtdlSession

log = logging.getLogger(__name__)


def fetch_group(entries: list[dict[str, Any]], cfg: FetchConfig, out_dir: str, label: str,
                previous_attempts: dict[str, int]) -> Iterator[dict[str, Any]]:
    """Fetch `entries` (FetchEntry dicts) into `out_dir`; yields one status row per video."""
    layout = FetchLayout(Path(out_dir))
    log_path = layout.logs / f"{label}.jsonl"
    already = {row["video_id"]: row for row in read_log(log_path)}
    limiter = HostRateLimiter(cfg.rate_per_host_per_s, cfg.rate_burst, cfg.rate_limit_dir or None)
    secrets = secrets_of(cfg)
    rng = random.Random()
    with private_cookie_copy(cfg.cookies) as cookie_file, contextlib.closing(
            YtdlSession(cfg, layout.tmp, cookie_file)) as session:
        session.video()  # loads yt-dlp's extractors now, before any download's deadline starts
        for data in entries:
            entry = FetchEntry(**data)
            if entry.video_id in already:
                yield already[entry.video_id]
                continue
            try:
                row = fetch_video(entry, cfg, layout, limiter, session=session, secrets=secrets, rng=rng,
                                  previous_attempts=previous_attempts.get(entry.video_id, 0))
            except Exception as exc:  # our bug or a full disk: this video's row says so, the group goes on
                log.exception("unexpected failure fetching %s", entry.video_id)
                row = {"video_id": entry.video_id, "url": entry.url, "status": c.ERROR,
                       "reason": scrub(f"internal: {type(exc).__name__}: {exc}", secrets),
                       "attempts": previous_attempts.get(entry.video_id, 0) + 1, "bytes": 0, "seconds": 0.0,
                       "http_status": None, "retryable": False, "clips": entry.clips, "line": entry.line,
                       "subtitles": {}, "subtitle_langs": [], "info": {}, "path": None,
                       "finished_at": time.time()}
            append_row(log_path, row)
            yield row


def fetch_group_task(entries: list[dict[str, Any]], cfg: FetchConfig, out_dir: str, label: str,
                     previous_attempts: dict[str, int]) -> Iterator[dict[str, Any]]:
    """The Ray task (a generator, so Ray streams its rows to the driver)."""
    yield from fetch_group(entries, cfg, out_dir, label, previous_attempts)
