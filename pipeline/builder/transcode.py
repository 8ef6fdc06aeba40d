"""ffmpeg: probe a source once, cut and transcode one clip to mp4 bytes.

    probe_video(path, timeout_s) -> ProbeInfo                     one ffprobe per source video
    TranscodeSpec.from_config(cfg)                                fps, short side, x264 settings
    transcode_clip(src_path, start_s, end_s, spec, probe) -> TranscodedClip   one ffmpeg per clip

Pure functions: no Ray, no shards, no logging of progress; `pipeline/builder/build_shard.py` maps them
over a shard and turns their `StageError`s into error rows.

Why the shape of `transcode_clip` is what it is (DESIGN.md sections 2, 5, 6):
- exactly one ffmpeg process per clip and nothing else, because the build job must keep
  >= 0.85x the clips/s of a bare ffmpeg loop. The output size is computed here from the probe
  and forced with an explicit `scale=W:H`, so it is known without probing the result; the frame
  count is read from ffmpeg's own `-progress` report of the same process.
- `-ss`/`-t` before `-i` with a re-encode: ffmpeg seeks to the keyframe before `start_s` and
  decodes-and-discards up to it, which is frame accurate and much faster than output seeking.
  `-ss` counts from the file's own start time (non-zero in MPEG-TS), as a player shows it.
  Index-less containers (MPEG-TS/PS, raw streams) get a hybrid seek, see INDEXLESS_FORMATS.
- the source is opened as `file:<absolute path>` under `-protocol_whitelist file,pipe`, so no
  manifest can make ffmpeg open a URL, a device or a concat list, nor pass an option as a name.
- a per-process timeout (the process is killed) so one pathological file cannot hang a shard.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from pipeline.builder.config import PipelineConfig
from pipeline.errors import StageError
from pipeline.ffmpeg_sandbox import (DEMUXER_WHITELIST, PROTOCOL_WHITELIST, ffmpeg_input_name, ffprobe_report,
                                     local_source, stderr_tail)

# Containers without a seek index (ffprobe format names). Their demuxers seek by a timestamp
# search and decoding resumes at the first keyframe *after* the landing point, so a plain input
# seek can start a clip up to one GOP late (measured: 2 s late in an MPEG-TS with 3 s GOPs). They
# are cut with a hybrid seek: input-seek this much earlier, then drop frames exactly on output.
# 10 s covers the GOPs of broadcast and web encodes (<= 2-5 s) with room to spare.
INDEXLESS_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo", "h264", "hevc"})
HYBRID_SEEK_MARGIN_S = 10.0
# swscale flags of the resize. ffmpeg's default (plain bicubic) picks SIMD code paths by the CPU,
# and they round differently: the same source gave other clip pixels with `-cpuflags 0` than with
# AVX2/AVX-512 (measured on a 1280x720 -> 398x224 cut), so one corpus built on two machines would
# differ. `accurate_rnd+bitexact` makes every path give the C reference's bytes; it cost ~1% of a
# cut's CPU time here (decoding dominates).
SCALE_FLAGS = "bicubic+accurate_rnd+bitexact"


@dataclass(frozen=True)
class ProbeInfo:
    """What one ffprobe of a source tells the rest of the pipeline.

    `width`/`height` are the *displayed* size: rotation metadata applied (ffmpeg auto-rotates when
    decoding) and a non-square sample aspect ratio folded into the width. `fps` is the average
    frame rate (VFR sources included). `duration_s` counts from the file's start time.
    """

    duration_s: float
    width: int
    height: int
    fps: float
    video_codec: str
    has_audio: bool
    format_name: str


@dataclass(frozen=True)
class TranscodeSpec:
    """How every clip is encoded (DESIGN.md section 2: 3 fps, short side 224, H.264 yuv420p)."""

    fps: float = 3.0
    short_side_px: int = 224
    crf: int = 23
    preset: str = "veryfast"
    keep_audio: bool = False
    threads: int = 1
    timeout_s: float = 120.0

    @classmethod
    def from_config(cls, cfg: PipelineConfig) -> "TranscodeSpec":
        return cls(fps=cfg.fps, short_side_px=cfg.short_side_px, crf=cfg.crf, preset=cfg.preset,
                   keep_audio=cfg.keep_audio, threads=cfg.ffmpeg_threads, timeout_s=cfg.clip_timeout_s)


@dataclass(frozen=True)
class TranscodedClip:
    """One encoded clip: mp4 bytes (H.264, faststart) and facts about them, exact, not estimated.

    `duration_s` = num_frames / fps: the length of the video stream at the constant output rate.
    """

    data: bytes
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float


# --------------------------------------------------------------------------------------------
# probe


def probe_video(path: str | os.PathLike, timeout_s: float = 30.0) -> ProbeInfo:
    """One ffprobe of a local source -> ProbeInfo, or StageError(stage="probe") saying why not."""
    report = ffprobe_report(path, timeout_s)
    return _probe_info(report, os.fspath(path))


def _probe_info(report: dict[str, Any], source: str) -> ProbeInfo:
    streams = report.get("streams") or []
    fmt = report.get("format") or {}
    videos = [s for s in streams if s.get("codec_type") == "video"
              and not (s.get("disposition") or {}).get("attached_pic")]
    if not videos:
        kinds = sorted({str(s.get("codec_type")) for s in streams}) or ["none"]
        raise StageError("probe", f"no video stream (found streams: {', '.join(kinds)})", source=source)
    video = videos[0]
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width <= 0 or height <= 0:
        raise StageError("probe", f"video stream has no frame size (found {width}x{height})", source=source)
    duration_s = _first_positive(fmt.get("duration"), video.get("duration"))
    if duration_s is None:
        raise StageError("probe", "video has zero or unknown duration (format duration "
                                  f"{fmt.get('duration')!r}, stream duration {video.get('duration')!r})",
                         source=source)
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    if not fps:
        frames = _first_positive(video.get("nb_frames"))
        fps = frames / duration_s if frames else 0.0
    if not fps:
        raise StageError("probe", "video stream has no frame rate", source=source)
    display_w, display_h = _display_size(video, width, height)
    return ProbeInfo(
        duration_s=duration_s, width=display_w, height=display_h, fps=fps,
        video_codec=str(video.get("codec_name") or "unknown"),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
        format_name=str(fmt.get("format_name") or "unknown"),
    )


def _first_positive(*values: Any) -> float | None:
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number) and number > 0:
            return number
    return None


def _rate(text: Any) -> float:
    """'30000/1001' -> 29.97, '128:117' -> 1.094; '0/0', None, garbage -> 0.0."""
    try:
        value = Fraction(str(text).replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(value) if value > 0 else 0.0


def _rotation_deg(video: dict[str, Any]) -> int:
    """Rotation from display-matrix side data (ffprobe >= 5) or the legacy `rotate` tag."""
    for side in video.get("side_data_list") or []:
        if "rotation" in side:
            try:
                return int(round(float(side["rotation"])))
            except (TypeError, ValueError):
                pass
    try:
        return int((video.get("tags") or {}).get("rotate", 0))
    except (TypeError, ValueError):
        return 0


def _display_size(video: dict[str, Any], width: int, height: int) -> tuple[int, int]:
    sar = _rate(video.get("sample_aspect_ratio"))
    if sar and abs(sar - 1.0) > 1e-3:
        width = max(1, round(width * sar))
    if _rotation_deg(video) % 180 != 0:  # 90 / 270 / -90: ffmpeg's autorotate swaps the axes
        width, height = height, width
    return width, height


# --------------------------------------------------------------------------------------------
# transcode


def output_size(width: int, height: int, short_side_px: int) -> tuple[int, int]:
    """(width, height) of a clip: short side = `short_side_px`, long side keeps the aspect, even.

    Always scales, also up: training reads 224-pixel frames whatever the source, and a fixed short
    side keeps every clip's size predictable from the probe alone.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"need a positive frame size, found {width}x{height}")
    short, long_ = min(width, height), max(width, height)
    long_px = max(2, 2 * round(short_side_px * long_ / short / 2))
    return (long_px, short_side_px) if width >= height else (short_side_px, long_px)


def _ffmpeg_args(src: Path, start_s: float, end_s: float, spec: TranscodeSpec, probe: ProbeInfo,
                 out_path: Path, seek: str = "input") -> list[str]:
    """The one ffmpeg command of a clip.

    seek="input": `-ss`/`-t` before `-i` (fast and accurate with a seek index); "hybrid": input
    seek to HYBRID_SEEK_MARGIN_S before `start_s`, the rest on output (index-less containers);
    "output": everything on output, decoding from the file start (the last-resort fallback).
    """
    out_w, out_h = output_size(probe.width, probe.height, spec.short_side_px)
    input_ss_s = {"input": start_s, "hybrid": max(0.0, start_s - HYBRID_SEEK_MARGIN_S), "output": 0.0}[seek]
    input_span = {"ss": f"{input_ss_s:.3f}"} if input_ss_s > 0 else {}
    output_span = {"t": f"{end_s - start_s:.3f}"}
    if seek == "input":
        input_span, output_span = {**input_span, **output_span}, {}
    elif start_s - input_ss_s > 0:
        output_span["ss"] = f"{start_s - input_ss_s:.3f}"
    stream = ffmpeg.input(ffmpeg_input_name(src), threads=spec.threads, protocol_whitelist=PROTOCOL_WHITELIST,
                          format_whitelist=DEMUXER_WHITELIST,
                          **input_span)
    video = stream["V:0"].filter("fps", fps=spec.fps).filter("scale", out_w, out_h, flags=SCALE_FLAGS).filter("setsar", 1)
    outputs = [video]
    audio_args: dict[str, Any] = {"an": None}
    if spec.keep_audio and probe.has_audio:
        outputs.append(stream["a:0"])
        audio_args = {"c:a": "aac", "b:a": "128k"}
    out = ffmpeg.output(*outputs, str(out_path), vcodec="libx264", preset=spec.preset, crf=spec.crf,
                        pix_fmt="yuv420p", movflags="+faststart", threads=spec.threads,
                        format="mp4", **audio_args, **output_span)
    args = ffmpeg.compile(out, cmd="ffmpeg", overwrite_output=True)
    # Global options go right after the binary: quiet, no stdin, machine-readable progress.
    return [args[0], "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
            "-progress", "pipe:1", *args[1:]]


def _frames_from_progress(progress: bytes) -> int | None:
    """The final `frame=N` of ffmpeg's `-progress` report: frames written to the output."""
    frames = None
    for line in progress.decode("ascii", "replace").splitlines():
        if line.startswith("frame="):
            try:
                frames = int(line[6:].strip())
            except ValueError:
                continue
    return frames


def transcode_clip(src_path: str | os.PathLike, start_s: float, end_s: float, spec: TranscodeSpec,
                   probe: ProbeInfo) -> TranscodedClip:
    """Cut [start_s, end_s) of `src_path` and encode it by `spec` -> mp4 bytes and exact facts.

    One ffmpeg process with input seeking (hybrid seeking for index-less containers). Only when that yields no frame although the span starts
    inside the video (streams without a seek index and with one keyframe, e.g. an MPEG-TS of a
    long-GOP encode: the demuxer lands after the only keyframe) is the cut redone once with
    output seeking, which decodes from the start and cannot miss.

    Raises StageError(stage="transcode") on a bad span, an ffmpeg failure (with the stderr tail),
    a timeout (ffmpeg is killed) or an empty result.
    """
    source = os.fspath(src_path)
    src = local_source(src_path, "transcode")
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or start_s < 0 or end_s <= start_s:
        raise StageError("transcode", f"span {start_s:.3f}-{end_s:.3f} s is empty, reversed or negative",
                         source=source)
    out_w, out_h = output_size(probe.width, probe.height, spec.short_side_px)
    with tempfile.TemporaryDirectory(prefix="vipstream_clip_") as tmp:
        out_path = Path(tmp) / "clip.mp4"
        seek = "hybrid" if set(probe.format_name.split(",")) & INDEXLESS_FORMATS else "input"
        num_frames, stderr = _run_ffmpeg(_ffmpeg_args(src, start_s, end_s, spec, probe, out_path, seek),
                                         spec, start_s, end_s, source)
        if not num_frames and start_s < probe.duration_s:
            num_frames, stderr = _run_ffmpeg(_ffmpeg_args(src, start_s, end_s, spec, probe, out_path, "output"),
                                             spec, start_s, end_s, source)
        data = out_path.read_bytes() if num_frames and out_path.exists() else b""
    if not num_frames or not data:
        raise StageError("transcode", f"ffmpeg wrote no video frames for {start_s:.3f}-{end_s:.3f} s "
                                      f"(source duration {probe.duration_s:.3f} s): {stderr_tail(stderr)}",
                         source=source)
    return TranscodedClip(data=data, width=out_w, height=out_h, fps=spec.fps, num_frames=num_frames,
                          duration_s=num_frames / spec.fps)


def _run_ffmpeg(cmd: list[str], spec: TranscodeSpec, start_s: float, end_s: float,
                source: str) -> tuple[int | None, bytes]:
    """Run one ffmpeg under the spec's timeout -> (frames written, stderr); StageError on failure."""
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=spec.timeout_s)
    except subprocess.TimeoutExpired:  # subprocess.run has killed ffmpeg already
        raise StageError("transcode", f"ffmpeg timed out after {spec.timeout_s:g} s cutting "
                                      f"{start_s:.3f}-{end_s:.3f} s (killed)", source=source) from None
    if done.returncode != 0:
        raise StageError("transcode", f"ffmpeg failed (exit {done.returncode}) cutting "
                                      f"{start_s:.3f}-{end_s:.3f} s: {stderr_tail(done.stderr)}", source=source)
    return _frames_from_progress(done.stdout), done.stderr
