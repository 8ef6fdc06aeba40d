"""The sandbox every ffmpeg/ffprobe call of the pipeline runs in (DESIGN.md section 6): local
files only, named so ffmpeg never parses them as another protocol or an option, demuxers limited
to media containers, and errors reported with a bounded tail of ffmpeg's stderr. Shared by the
builder's transcode and the transcriber's audio decoding (both probe through `ffprobe_report`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from pipeline.errors import StageError

PROTOCOL_WHITELIST = "file,pipe"
#: Demuxers a source may be opened with. Without this, a local file that is really an HLS or
#: other playlist is auto-detected and pulls in whatever local media it names (the protocol
#: whitelist alone allows that, since those are `file:` reads too).
DEMUXER_WHITELIST = ",".join((
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "flv", "mpeg",
    "mpegvideo", "asf", "ogg", "h264", "hevc", "m4v", "dv", "mxf", "nut", "rm", "yuv4mpegpipe",
))
# How much of ffmpeg's stderr goes into an error reason: enough for the real message, little
# enough for one cell of errors.parquet.
STDERR_TAIL_CHARS = 600


def local_source(path: str | os.PathLike, stage: str) -> Path:
    """The absolute path of an existing local regular file, or StageError(stage).

    URLs and other protocols are refused before ffmpeg sees them (DESIGN.md section 6).
    """
    text = os.fspath(path)
    if "://" in text:
        raise StageError(stage, f"only local files are read, found the URL {text!r}", source=text)
    resolved = Path(text).absolute()
    if not resolved.exists():
        raise StageError(stage, "video file not found", source=text)
    if not resolved.is_file():
        raise StageError(stage, "expected a regular video file, found a directory or special file",
                         source=text)
    return resolved


def ffmpeg_input_name(path: Path) -> str:
    """`file:` + absolute path: never parsed as another protocol or as an ffmpeg option."""
    return f"file:{path}"


def stderr_tail(stderr: bytes | str | None) -> str:
    """ffmpeg's stderr as one line, its last STDERR_TAIL_CHARS characters (where the error is)."""
    if not stderr:
        return "(no stderr)"
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    text = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= STDERR_TAIL_CHARS else "..." + text[-STDERR_TAIL_CHARS:]


def ffprobe_report(path: str | os.PathLike, timeout_s: float) -> dict[str, Any]:
    """ffprobe's `-show_format -show_streams` JSON of a local source, or StageError(stage="probe")
    saying why not: not a local file, empty, unreadable, too slow (ffprobe is killed at
    `timeout_s`; ffmpeg.probe has no timeout), or no JSON."""
    source = os.fspath(path)
    local = local_source(path, "probe")
    size_bytes = local.stat().st_size
    if size_bytes == 0:
        raise StageError("probe", "video file is empty (0 bytes)", source=source)
    cmd = ["ffprobe", "-v", "error", "-protocol_whitelist", PROTOCOL_WHITELIST, "-format_whitelist", DEMUXER_WHITELIST,
           "-show_format", "-show_streams", "-of", "json", ffmpeg_input_name(local)]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise StageError("probe", f"ffprobe timed out after {timeout_s:g} s", source=source) from None
    if done.returncode != 0:
        raise StageError("probe", f"ffprobe cannot read the file ({size_bytes} bytes): {stderr_tail(done.stderr)}",
                         source=source)
    try:
        return json.loads(done.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError as exc:
        raise StageError("probe", f"ffprobe printed no valid JSON: {exc.msg}", source=source) from None
