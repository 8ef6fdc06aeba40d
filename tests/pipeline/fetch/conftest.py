"""Fixtures of the fetch tests: real media made by ffmpeg, a real HTTP server on 127.0.0.1 serving
them (tests/fetch_server.py), and the set of misbehaving URLs the job must classify."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fetch_server import FetchTestServer
from tests.media import make_video

VTT = """WEBVTT

00:00:00.000 --> 00:00:01.500
a red square moves to the left

00:00:01.500 --> 00:00:03.000
and then it turns around again
"""

#: The size cap of the test configs: the small video is under it, the big one over it.
MAX_FILESIZE = "200K"


@dataclass(frozen=True)
class FetchMedia:
    small: bytes  # a real 3 s mp4 (H.264 + AAC), well under MAX_FILESIZE
    big: bytes  # a real 6 s mp4, over MAX_FILESIZE
    vtt: bytes


@pytest.fixture(scope="session")
def fetch_media(tmp_path_factory) -> FetchMedia:
    folder = tmp_path_factory.mktemp("fetch_media")
    small = make_video(folder / "small.mp4", seconds=3.0, size="160x120", fps=10)
    big = make_video(folder / "big.mp4", seconds=6.0, size="320x240", fps=10)
    media = FetchMedia(small.read_bytes(), big.read_bytes(), VTT.encode())
    assert len(media.small) < 200 * 1024 < len(media.big), (len(media.small), len(media.big))
    return media


@pytest.fixture(scope="session")
def fetch_server():
    server = FetchTestServer().start()
    yield server
    server.close()


def page_html(video_src: str, track_src: str | None, title: str = "a test page") -> bytes:
    """An HTML5 page with a <video> and a subtitle <track>: yt-dlp's generic extractor parses both."""
    track = f'<track kind="subtitles" srclang="en" label="English" src="{track_src}">' if track_src else ""
    return (f'<!DOCTYPE html><html><head><title>{title}</title></head><body>'
            f'<video controls><source src="{video_src}" type="video/mp4">{track}</video></body></html>').encode()


#: case -> expected status after one run (max_attempts=2).
EXPECTED = {
    "direct": "ok", "page": "ok", "page_subtitle_404": "ok", "r429_once": "ok", "r429_twice": "blocked",
    "r403": "blocked", "r404": "unavailable", "r500": "transient", "html": "not_video", "garbage": "not_video",
    "stall": "timeout", "big": "too_large", "big_no_length": "too_large",
    "to_file": "bad_url", "file_scheme": "bad_url",
}


def register_cases(server: FetchTestServer, media: FetchMedia, prefix: str) -> dict[str, str]:
    """Every case of EXPECTED under `/{prefix}/...` (fresh request counts): case -> URL."""
    p = f"/{prefix}"
    server.add(f"{p}/media/small.mp4", body=media.small)
    server.add(f"{p}/media/en.vtt", body=media.vtt, content_type="text/vtt")
    return {
        "direct": server.add(f"{p}/direct.mp4", body=media.small),
        "page": server.add(f"{p}/page.html", body=page_html(f"{p}/media/small.mp4", f"{p}/media/en.vtt"),
                           content_type="text/html"),
        "page_subtitle_404": server.add(f"{p}/nosub.html", body=page_html(f"{p}/media/small.mp4", f"{p}/media/gone.vtt"),
                                        content_type="text/html"),
        "r429_once": server.add(f"{p}/r429_once.mp4", kind="status", status=429, first_n=1, body=media.small,
                                headers=(("Retry-After", "0"),)),
        "r429_twice": server.add(f"{p}/r429_twice.mp4", kind="status", status=429, first_n=2, body=media.small),
        "r403": server.add(f"{p}/r403.mp4", kind="status", status=403),
        "r404": server.add(f"{p}/r404.mp4", kind="status", status=404),
        "r500": server.add(f"{p}/r500.mp4", kind="status", status=500),
        "html": server.add(f"{p}/html.mp4", body=b"<html><body><p>no video here</p></body></html>",
                           content_type="text/html"),
        "garbage": server.add(f"{p}/garbage.mp4", body=bytes(range(256)) * 64),
        "stall": server.add(f"{p}/stall.mp4", kind="stall", body=media.small),
        "big": server.add(f"{p}/big.mp4", body=media.big),
        "big_no_length": server.add(f"{p}/big_no_length.mp4", kind="nolength", body=media.big),
        "to_file": server.add(f"{p}/to_file.mp4", kind="redirect", location="file:///etc/passwd"),
        "file_scheme": "file:///etc/passwd",
    }


def fast_config(tmp_path: Path, **overrides):
    """FetchConfig with fractions of a second of back-off (tests only). The deadline stays generous
    (a loaded CI machine); the stall is cut by the 1 s socket timeout, and the deadline itself is
    tested on a slow drip in test_download.py."""
    from pipeline.fetch.config import FetchConfig

    values = dict(max_attempts=2, backoff_base_s=0.05, backoff_max_s=0.2, download_timeout_s=30.0,
                  socket_timeout_s=1.0, ytdlp_retries=0, rate_per_host="0", max_filesize=MAX_FILESIZE,
                  concurrency=4, videos_per_task=2, rate_limit_dir=str(tmp_path / "rate"))
    values.update(overrides)
    return FetchConfig(**values)
