"""The yt-dlp options of one download, built from FetchConfig only (pure functions).

Two passes over one extraction (pipeline/fetch/download.py): the video pass writes
`{video_id}.mp4` and nothing else; the subtitle pass (`skip_download`) writes
`{video_id}.{lang}.vtt`, so a subtitle failure never costs the video. Both write into the
attempt's own folder, named by fields of the info dict (FOLDER_FIELD, ID_FIELD). What is fixed here, on
purpose, whatever the config says:
- format: mp4 at most `max_height` lines, best audio merged in by ffmpeg when separate
  (`merge_output_format: mp4`), falling back to other containers at that height (merged or
  remuxed into mp4);
  `<=?` lets formats of unknown height through (direct media URLs carry no height);
- subtitles as WebVTT (`vtt`, else converted by ffmpeg), uploaded ones before automatic captions;
- no thumbnails, comments, descriptions, info.json, shortcut files; no playlists;
- no hook a config can reach: the only postprocessors are the two ffmpeg conversions below, the
  only progress hook is ours, every protocol uses yt-dlp's native downloaders (never an external
  program), `file:` URLs stay disabled, no free-form yt-dlp option is read from the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pipeline.fetch.config import FetchConfig

#: Postprocessors this module may put in an options dict (tests check nothing else appears).
ALLOWED_POSTPROCESSORS = frozenset({"FFmpegVideoRemuxer", "FFmpegSubtitlesConvertor"})
#: yt-dlp protocols a chosen format may use: plain HTTP(S), HLS and DASH over HTTP(S).
ALLOWED_PROTOCOLS = frozenset({"http", "https", "m3u8", "m3u8_native", "http_dash_segments",
                               "http_dash_segments_generator"})


def format_selector(max_height: int) -> str:
    """yt-dlp format spec, all at most `max_height` lines: the best mp4 video + the best m4a
    audio, else the best video of any container + the best audio (merged into mp4: the height
    matters more than the codec, the builder transcodes anyway), else the best single file."""
    h = int(max_height)
    return f"bv*[height<=?{h}][ext=mp4]+ba[ext=m4a]/bv*[height<=?{h}]+ba/b[height<=?{h}]"


#: Fields the caller adds to each info dict before a pass: the attempt's folder under the task's
#: working folder, and the file stem. The options stay the same for every video of a task, so
#: one YoutubeDL serves them all (building one loads every extractor, ~0.1 s).
FOLDER_FIELD = "vipstream_folder"
ID_FIELD = "vipstream_id"
OUTPUT_TEMPLATE = f"%({FOLDER_FIELD})s/%({ID_FIELD})s.%(ext)s"


def _base_options(cfg: FetchConfig, work_dir: Path, logger: Any, cookie_file: str | None) -> dict[str, Any]:
    template = str(Path(work_dir) / OUTPUT_TEMPLATE)
    return {
        "outtmpl": {"default": template, "subtitle": template},
        "logger": logger,
        "quiet": True,
        "noprogress": True,
        "no_color": True,
        "noplaylist": True,
        "extract_flat": "in_playlist",  # a playlist URL is reported, never expanded
        "socket_timeout": cfg.socket_timeout_s,
        "retries": cfg.ytdlp_retries,
        "fragment_retries": cfg.ytdlp_retries,
        "extractor_retries": 1,
        "overwrites": True,
        "continuedl": True,
        "updatetime": False,
        "writethumbnail": False,
        "writeinfojson": False,
        "writedescription": False,
        "getcomments": False,
        "writelink": False,
        "enable_file_urls": False,
        "allow_unplayable_formats": False,
        "external_downloader": {"default": "native"},
        "js_runtimes": {cfg.js_runtime: {}},
        "proxy": cfg.proxy or None,
        "cookiefile": cookie_file,
    }


def video_options(cfg: FetchConfig, work_dir: Path, *, logger: Any,
                  progress_hook: Callable[[dict[str, Any]], None],
                  cookie_file: str | None = None) -> dict[str, Any]:
    """Options of the extraction and of the video pass (files under `work_dir`/OUTPUT_TEMPLATE)."""
    max_bytes = cfg.max_filesize_bytes
    return {
        **_base_options(cfg, work_dir, logger, cookie_file),
        "format": format_selector(cfg.max_height),
        "merge_output_format": "mp4",
        "postprocessors": [{"key": "FFmpegVideoRemuxer", "preferedformat": "mp4"}],
        "max_filesize": max_bytes or None,
        "progress_hooks": [progress_hook],
        "writesubtitles": False,
        "writeautomaticsub": False,
    }


def subtitle_options(cfg: FetchConfig, work_dir: Path, *, logger: Any,
                     cookie_file: str | None = None) -> dict[str, Any]:
    """Options of the subtitle pass: the asked languages as WebVTT, no video."""
    return {
        **_base_options(cfg, work_dir, logger, cookie_file),
        "format": format_selector(cfg.max_height),
        "skip_download": True,
        "writesubtitles": bool(cfg.subtitles),
        "writeautomaticsub": bool(cfg.subtitles) and cfg.auto_subtitles,
        "subtitleslangs": list(cfg.subtitles),
        "subtitlesformat": "vtt/best",
        "postprocessors": [{"key": "FFmpegSubtitlesConvertor", "format": "vtt", "when": "before_dl"}],
    }
