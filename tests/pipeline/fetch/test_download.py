"""pipeline/fetch/download.py, one video at a time (real yt-dlp, real server, no Ray): the wall-clock
deadline holds on a slow drip and on a stall the socket timeout would not end, nothing of a failed
attempt reaches the output, and the HTTP status and Retry-After of yt-dlp's errors are read."""

from __future__ import annotations

import random
import threading
import time

import pytest
import yt_dlp

from pipeline.fetch.download import describe, fetch_video
from pipeline.fetch.inputs import FetchEntry
from pipeline.fetch.ratelimit import HostRateLimiter
from pipeline.fetch.state import FetchLayout
from tests.pipeline.fetch.conftest import fast_config


@pytest.fixture()
def layout(tmp_path) -> FetchLayout:
    layout = FetchLayout(tmp_path / "VIDEOS")
    layout.prepare()
    return layout


def _fetch(url: str, layout: FetchLayout, tmp_path, video_id: str = "vid", **overrides):
    cfg = fast_config(tmp_path, **overrides)
    return fetch_video(FetchEntry(video_id, url), cfg, layout, HostRateLimiter(0, 1), rng=random.Random(0))


def test_a_slow_drip_is_cut_at_the_deadline_though_bytes_keep_arriving(fetch_server, fetch_media, layout, tmp_path):
    url = fetch_server.add("/dl/drip.mp4", kind="drip", body=fetch_media.small, chunk=512, interval_s=0.1)
    started = time.monotonic()
    row = _fetch(url, layout, tmp_path, video_id="drip", download_timeout_s=2.0, max_attempts=1, socket_timeout_s=1.0)
    elapsed = time.monotonic() - started
    # Cut by the progress hook inside the transfer (not just given up on): its thread is gone.
    assert row["status"] == "timeout" and "the download did not finish within download_timeout_s=2" in row["reason"], row
    assert elapsed < 2.0 + 4.0  # the drip alone would take ~17 s
    assert not [t for t in threading.enumerate() if t.name == "fetch drip"]
    assert list(layout.out_dir.glob("*.mp4")) == [] and list(layout.tmp.iterdir()) == []


def test_a_stall_longer_than_the_socket_timeout_allows_still_ends_at_the_deadline(fetch_server, fetch_media,
                                                                                 layout, tmp_path):
    url = fetch_server.add("/dl/stall.mp4", kind="stall", body=fetch_media.small)
    started = time.monotonic()
    row = _fetch(url, layout, tmp_path, download_timeout_s=2.0, max_attempts=1, socket_timeout_s=60.0)
    elapsed = time.monotonic() - started
    assert row["status"] == "timeout" and "no result within download_timeout_s=2" in row["reason"], row
    assert elapsed < 2.0 + 4.0  # not the 60 s socket timeout
    assert list(layout.out_dir.glob("*.mp4")) == [] and list(layout.tmp.iterdir()) == []


def test_a_refetch_without_subtitles_removes_the_stale_subtitle_file(fetch_server, fetch_media, layout, tmp_path):
    url = fetch_server.add("/dl/plain.mp4", body=fetch_media.small)
    stale = layout.subtitle("vid", "en")
    stale.write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nfrom another video\n")
    row = _fetch(url, layout, tmp_path)
    assert row["status"] == "ok" and row["subtitle_status"] == "none" and row["bytes"] == len(fetch_media.small)
    assert not stale.exists() and layout.video("vid").read_bytes() == fetch_media.small


def test_describe_reads_the_http_status_and_retry_after_behind_a_download_error(fetch_server):
    url = fetch_server.add("/dl/429.mp4", kind="status", status=429, headers=(("Retry-After", "7"),))
    with pytest.raises(yt_dlp.utils.DownloadError) as raised:
        with yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True}) as ydl:
            ydl.extract_info(url, download=False)
    failure = describe(raised.value)
    assert (failure.status, failure.http_status, failure.retry_after_s, failure.backoff) == ("blocked", 429, 7.0, True)
