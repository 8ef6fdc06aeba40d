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
