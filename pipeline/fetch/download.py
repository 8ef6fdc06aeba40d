"""One video: yt-dlp attempts with back-off, each under a wall-clock deadline, published atomically.

Two phases, so that a task can overlap them (pipeline/fetch/task.py): `download_video` makes the
attempts and leaves the bytes in the attempt's folder (`Downloaded`); `finish_video` probes them
with ffprobe, checks the duration, publishes and removes the folder. `fetch_video` is the two in
a row. The probe is a process start (~70 ms, nearly all of it loading ffprobe's libraries): run
in line it cost about a fifth of the job's MB/s against a local server (benchmarks/bench_fetch.py).

An attempt (extract -> checks -> video pass -> subtitle pass, pipeline/fetch/options.py)
runs in a worker thread inside its own hidden folder under VIDEOS/.fetch/tmp/. Two guards bound
it in time: the progress hook, called by yt-dlp on every block received, aborts a slow drip once
the deadline has passed; a connection that stalls without a byte is left behind by the caller's
`join(deadline)`, which cancels it (the hook then aborts it on its next block, the socket
timeout at the latest) and removes its folder. Nothing reaches VIDEOS/ before the attempt has
succeeded: the subtitles are moved in first and the mp4 last (a rename), so an mp4 in VIDEOS/
is always whole.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pipeline.builder.transcode import ProbeInfo, probe_video
from pipeline.errors import StageError
from pipeline.fetch import classify as c
from pipeline.fetch.classify import Failure, backoff_delay, classify, parse_retry_after
from pipeline.fetch.config import FetchConfig, scrub
from pipeline.fetch.inputs import FetchEntry
from pipeline.fetch.options import ALLOWED_PROTOCOLS, FOLDER_FIELD, ID_FIELD
from pipeline.fetch.ratelimit import HostRateLimiter
from pipeline.fetch.state import INFO_FIELDS, FetchLayout
from pipeline.fetch.urls import BadUrl, check_http_url, url_host
from pipeline.fetch.ytdl_session import YtdlSession
from vipstream.atomic import fsync_and_replace

log = logging.getLogger(__name__)


class _Abort(Exception):
    """Raised from the progress hook to stop a transfer; carries the failure to record."""

    def __init__(self, failure: Failure):
        super().__init__(failure.reason)
        self.failure = failure


def describe(exc: BaseException) -> Failure:
    """A yt-dlp (or network) exception -> Failure: its message, the HTTP status and Retry-After
    of the HTTPError behind it (DownloadError.exc_info, ExtractorError.cause, __cause__)."""
    if isinstance(exc, _Abort):
        return exc.failure
    http_status = retry_after = None
    kinds = []
    seen, current = 0, exc
    while current is not None and seen < 8:
        kinds.append(type(current).__name__)
        status = getattr(current, "status", None)
        if http_status is None and isinstance(status, int) and 100 <= status < 600:
            http_status = status
            headers = getattr(getattr(current, "response", None), "headers", None)
            retry_after = parse_retry_after(headers.get("Retry-After")) if headers is not None else None
        inner = (getattr(current, "exc_info", None) or (None, None))[1]
        current = inner or getattr(current, "cause", None) or current.__cause__ or current.__context__
        seen += 1
    kind = next((k for k in kinds if k not in ("DownloadError", "ExtractorError")), kinds[0])
    failure = classify(str(exc) or kind, http_status, kind)
    if retry_after is not None:
        failure = Failure(failure.status, failure.reason, failure.http_status, failure.backoff, retry_after)
    return failure


def extracted_problem(info: dict[str, Any] | None, cfg: FetchConfig) -> Failure | None:
    """What rules a video out before its bytes are fetched (pure): a playlist, a live stream, a
    format on a protocol we do not fetch, a known duration or size over the limits."""
    if not info:
        return Failure(c.ERROR, "yt-dlp returned no information for this URL")
    if info.get("_type") in ("playlist", "multi_video"):
        return Failure(c.NOT_VIDEO, f"the URL is a playlist ({len(info.get('entries') or [])} entries), not a video")
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        return Failure(c.UNAVAILABLE, f"a live or upcoming stream ({info.get('live_status') or 'is_live'}), "
                                      f"not a recorded video")
    for fmt in info.get("requested_formats") or [info]:
        protocol = str(fmt.get("protocol") or "")
        if protocol not in ALLOWED_PROTOCOLS:
            return Failure(c.BAD_URL, f"format {fmt.get('format_id')} uses protocol {protocol!r}; only "
                                      f"{', '.join(sorted(ALLOWED_PROTOCOLS))} are fetched")
        try:
            check_http_url(fmt.get("url"))
        except BadUrl as exc:
            return Failure(c.BAD_URL, f"format {fmt.get('format_id')}: {exc}")
    duration = info.get("duration")
    if cfg.max_duration and isinstance(duration, (int, float)) and duration > cfg.max_duration:
        return Failure(c.TOO_LARGE, f"video is {duration:g} s long, longer than max_duration={cfg.max_duration:g} s")
    max_bytes = cfg.max_filesize_bytes
    size = sum(f.get("filesize") or f.get("filesize_approx") or 0 for f in info.get("requested_formats") or [info])
    if max_bytes and size > max_bytes:
        return Failure(c.TOO_LARGE, f"video is about {size} bytes, larger than max_filesize={cfg.max_filesize}")
    return None


@dataclass
class _Outcome:
    failure: Failure | None = None
    video: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    subtitles: dict[str, Path] = field(default_factory=dict)
    subtitle_status: str = "not_asked"
    subtitle_reason: str = ""
    abandoned: bool = False  # the attempt's thread was left running: its YoutubeDL must not be reused


class _Attempt:
    """One attempt at one video in `folder` (under the session's working folder); `run` is the
    body of the worker thread."""

    def __init__(self, entry: FetchEntry, cfg: FetchConfig, folder: Path, limiter: HostRateLimiter,
                 session: YtdlSession, deadline: float, rng: random.Random):
        self.entry, self.cfg, self.folder, self.limiter = entry, cfg, folder, limiter
        self.session, self.deadline, self.rng = session, deadline, rng
        self.cancel = threading.Event()

    def _hook(self, progress: dict[str, Any]) -> None:
        if self.cancel.is_set() or time.monotonic() > self.deadline:
            raise _Abort(Failure(c.TIMEOUT, f"the download did not finish within download_timeout_s="
                                            f"{self.cfg.download_timeout_s:g} s", backoff=True))
        max_bytes = self.cfg.max_filesize_bytes
        if max_bytes and (progress.get("downloaded_bytes") or 0) > max_bytes:
            raise _Abort(Failure(c.TOO_LARGE, f"the transfer passed max_filesize={self.cfg.max_filesize}"))

    def _named(self, info: dict[str, Any]) -> dict[str, Any]:
        """`info` with the fields the output template names this attempt's files by."""
        return {**info, FOLDER_FIELD: self.folder.name, ID_FIELD: self.entry.video_id}

    def run(self) -> _Outcome:
        video_id, session = self.entry.video_id, self.session
        session.messages.clear()
        ydl = session.video()
        info = ydl.extract_info(self.entry.url, download=False)
        problem = extracted_problem(info, self.cfg)
        if problem is not None:
            return _Outcome(failure=problem)
        kept = ydl.sanitize_info(info)
        ydl.process_ie_result(self._named(info), download=True)
        video = self.folder / f"{video_id}.mp4"
        if not video.is_file():
            messages = session.messages
            if messages.find(r"larger than max-filesize"):
                return _Outcome(failure=Failure(c.TOO_LARGE, f"video is larger than max_filesize={self.cfg.max_filesize}"))
            last = messages.find(r"error|abort|unable|skipping") or (messages.lines[-1] if messages.lines else "")
            return _Outcome(failure=classify(f"yt-dlp wrote no mp4 file ({last})"))
        outcome = _Outcome(video=video, info={k: kept.get(k) for k in INFO_FIELDS})
        self._subtitles(kept, outcome)  # the probe comes after, in finish_video
        return outcome

    def _offered(self, info: dict[str, Any]) -> list[str]:
        offered = set(info.get("subtitles") or {})
        if self.cfg.auto_subtitles:
            offered |= set(info.get("automatic_captions") or {})
        return [lang for lang in self.cfg.subtitles if lang in offered]

    def _subtitles(self, info: dict[str, Any], outcome: _Outcome) -> None:
        """The subtitle pass, retried on transient failures; a failure here is recorded in the
        outcome's subtitle fields and never fails the video."""
        cfg, video_id = self.cfg, self.entry.video_id
        if not cfg.subtitles or self.cancel.is_set():
            return
        offered = self._offered(info)
        if not offered:
            outcome.subtitle_status = "none"
            outcome.subtitle_reason = f"no subtitles in {','.join(cfg.subtitles)} for this video"
            return
        failure = None
        for attempt in range(1, cfg.max_attempts + 1):
            self.limiter.acquire(url_host(self.entry.url))
            try:
                self.session.subtitles().process_ie_result(self._named(copy.deepcopy(info)), download=True)
                failure = None
            except Exception as exc:  # yt-dlp's DownloadError, a network error
                failure = describe(exc)
            if failure is None or not failure.backoff or attempt == cfg.max_attempts:
                break
            delay = backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s, self.rng, failure.retry_after_s)
            if time.monotonic() + delay > self.deadline or self.cancel.wait(delay):
                break
        outcome.subtitles = {lang: self.folder / f"{video_id}.{lang}.vtt" for lang in cfg.subtitles
                             if (self.folder / f"{video_id}.{lang}.vtt").is_file()}
        missing = [lang for lang in offered if lang not in outcome.subtitles]
        if failure is not None or missing:
            outcome.subtitle_status = "failed"
            outcome.subtitle_reason = failure.reason if failure else f"yt-dlp wrote no subtitle file for {missing}"
        else:
            outcome.subtitle_status = "ok"


def _run_with_deadline(attempt: _Attempt, timeout_s: float, grace_s: float) -> _Outcome:
    """`attempt.run()` in a daemon thread. At `timeout_s` its progress hook aborts a transfer
    that still receives bytes; one that receives none is cancelled and left behind `grace_s`
    later (it ends at its next block, or at its socket timeout)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["outcome"] = attempt.run()
        except BaseException as exc:  # handed to the caller as a Failure
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"fetch {attempt.entry.video_id}", daemon=True)
    worker.start()
    worker.join(timeout_s + grace_s)
    if worker.is_alive():
        attempt.cancel.set()
        log.debug("abandoning the stalled download of %s", attempt.entry.video_id)
        return _Outcome(failure=Failure(c.TIMEOUT, f"no result within download_timeout_s="
                                                   f"{attempt.cfg.download_timeout_s:g} s (a stalled or too "
                                                   f"slow connection)", backoff=True), abandoned=True)
    if "error" in box:
        return _Outcome(failure=describe(box["error"]))
    return box["outcome"]


def _publish(outcome: _Outcome, layout: FetchLayout, video_id: str, asked: tuple[str, ...]) -> tuple[dict[str, str], int]:
    """Move the attempt's files into VIDEOS/: subtitles first (fsynced), the mp4 last (the commit).

    The mp4 is renamed, not fsynced: forcing every video through the disk before the next one
    starts cost ~30 % of the job's MB/s (benchmarks/bench_fetch.py), and a rename is atomic
    whatever kills the process. What a power cut could lose is caught on resume instead: a
    video is done only while its size is the one logged (`video_bytes`, state.is_done)."""
    subtitles: dict[str, str] = {}
    total = 0
    for lang in asked:
        target = layout.subtitle(video_id, lang)
        source = outcome.subtitles.get(lang)
        if source is None:
            target.unlink(missing_ok=True)  # a previous fetch's file would not match this one
            continue
        total += source.stat().st_size
        fsync_and_replace(source, target)
        subtitles[lang] = target.name
    video_bytes = outcome.video.stat().st_size
    os.replace(outcome.video, layout.video(video_id))
    return subtitles, total + video_bytes


@contextlib.contextmanager
def private_cookie_copy(cookies: str) -> Iterator[str | None]:
    """A copy of the user's cookies file, readable by this user only, in the node's temp folder,
    for the time of one task: yt-dlp writes cookies back on exit, and tasks must neither race on
    the user's file nor leave a copy in the (shared) output folder."""
    if not cookies:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="vipstream-cookies-", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as handle, open(cookies, "rb") as source:
            shutil.copyfileobj(source, handle)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def status_row(entry: FetchEntry, status: str, reason: str, *, attempts: int, started: float,
               http_status: int | None = None, secrets: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    """One video's row of the log and of status.parquet (every status has every column)."""
    row = {
        "video_id": entry.video_id, "url": entry.url, "status": status, "reason": scrub(reason, secrets),
        "attempts": attempts, "bytes": 0, "seconds": round(time.monotonic() - started, 3),
        "http_status": http_status, "retryable": status in c.RETRYABLE_STATUSES,
        "subtitle_status": None, "subtitle_reason": None, "subtitle_langs": [], "subtitles": {},
        "path": None, "clips": entry.clips, "line": entry.line, "info": {}, "finished_at": time.time(),
    }
    row.update(extra)
    return row


@dataclass
class Downloaded:
    """A video whose attempt succeeded: its files are in `folder` (the attempt's own, under the
    task's working folder), not yet probed nor published. `finish_video` takes it from here and
    removes `folder` whatever happens."""

    entry: FetchEntry
    folder: Path
    outcome: _Outcome
    attempts: int  # all attempts at this video, earlier runs' included
    started: float  # time.monotonic() when this run's first attempt began


def download_video(entry: FetchEntry, cfg: FetchConfig, layout: FetchLayout, limiter: HostRateLimiter, *,
                   session: YtdlSession, previous_attempts: int = 0, secrets: tuple[str, ...] = (),
                   rng: random.Random | None = None) -> Downloaded | dict[str, Any]:
    """The attempts at one video (`session`: the task's YoutubeDL instances, working under
    `layout.tmp`): a `Downloaded`, or the status row of its failure (never raises for a bad video)."""
    started = time.monotonic()
    rng = rng or random.Random()
    if entry.url_error:
        return status_row(entry, c.BAD_URL, entry.url_error, attempts=previous_attempts, started=started)
    attempts, failure = 0, Failure(c.ERROR, "not attempted")
    for number in range(1, cfg.max_attempts + 1):
        limiter.acquire(url_host(entry.url))
        attempts += 1
        folder = session.work_dir / f"{entry.video_id}.{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        attempt = _Attempt(entry, cfg, folder, limiter, session, time.monotonic() + cfg.download_timeout_s, rng)
        session.register(folder.name, attempt._hook)
        outcome = None
        try:
            outcome = _run_with_deadline(attempt, cfg.download_timeout_s, grace_s=min(cfg.socket_timeout_s, 1.0))
            if outcome.abandoned:
                session.drop()
            if outcome.failure is None:
                return Downloaded(entry, folder, outcome, previous_attempts + attempts, started)
            failure = outcome.failure
        finally:
            if outcome is None or not outcome.abandoned:  # an abandoned one keeps its (cancelled) hook
                session.unregister(folder.name)
            if outcome is None or outcome.failure is not None:
                shutil.rmtree(folder, ignore_errors=True)
        if not failure.backoff or number == cfg.max_attempts:
            break
        time.sleep(backoff_delay(number, cfg.backoff_base_s, cfg.backoff_max_s, rng, failure.retry_after_s))
    return status_row(entry, failure.status, failure.reason, attempts=previous_attempts + attempts, started=started,
                http_status=failure.http_status, secrets=secrets)


def finish_video(done: Downloaded, cfg: FetchConfig, layout: FetchLayout,
                 secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """Probe the downloaded file, check its duration, publish it: its status row. Safe to run in
    another thread while the task downloads its next video (it touches only `done.folder` and
    this video's names in VIDEOS/)."""
    entry, outcome = done.entry, done.outcome
    try:
        try:
            probe = probe_video(outcome.video, timeout_s=cfg.probe_timeout_s)
        except StageError as exc:
            return status_row(entry, c.NOT_VIDEO, f"the downloaded file is not a readable video: {exc.reason}",
                        attempts=done.attempts, started=done.started, secrets=secrets)
        if cfg.max_duration and probe.duration_s > cfg.max_duration:
            return status_row(entry, c.TOO_LARGE, f"video is {probe.duration_s:.1f} s long, longer than "
                                            f"max_duration={cfg.max_duration:g} s",
                        attempts=done.attempts, started=done.started, secrets=secrets)
        info = _with_probe(outcome.info, probe)
        subtitles, size = _publish(outcome, layout, entry.video_id, cfg.subtitles)
        return status_row(entry, c.OK, "", attempts=done.attempts, started=done.started, secrets=secrets, bytes=size,
                    path=layout.video(entry.video_id).name, video_bytes=layout.video(entry.video_id).stat().st_size,
                    subtitles=subtitles, subtitle_langs=list(subtitles), subtitle_status=outcome.subtitle_status,
                    subtitle_reason=scrub(outcome.subtitle_reason, secrets), info=info)
    finally:
        shutil.rmtree(done.folder, ignore_errors=True)


def _with_probe(info: dict[str, Any], probe: ProbeInfo) -> dict[str, Any]:
    """The kept info.json fields, with the probe's frame size and rate (and its duration where
    yt-dlp gave none)."""
    info = dict(info)
    if info.get("duration") is None:
        info["duration"] = round(probe.duration_s, 3)
    info.update(width=probe.width, height=probe.height, fps=probe.fps)
    return info


def fetch_video(entry: FetchEntry, cfg: FetchConfig, layout: FetchLayout, limiter: HostRateLimiter, *,
                session: YtdlSession | None = None, previous_attempts: int = 0, secrets: tuple[str, ...] = (),
                rng: random.Random | None = None) -> dict[str, Any]:
    """Fetch one video into `layout`, download then finish in line; returns its status row
    (never raises for a bad video). Without a `session`, one is made (and closed) for this video."""
    own_session = session is None
    session = session or YtdlSession(cfg, layout.tmp)
    try:
        result = download_video(entry, cfg, layout, limiter, session=session, previous_attempts=previous_attempts,
                                secrets=secrets, rng=rng)
    finally:
        if own_session:
            session.close()
    return finish_video(result, cfg, layout, secrets) if isinstance(result, Downloaded) else result
