"""A tiny retrieval set for tests: solid-colour videos made by ffmpeg and MSR-VTT-form annotations.

Each video is one colour filling the frame, and its captions name the colour, so a model can
learn to match them in a few steps (the fine-tuning test) and a random model cannot (yet).
Captions use words of the stand-in CLIP tokenizer's vocabulary (tools/stand_in_models.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

COLOURS = ("red", "green", "blue", "yellow", "white", "magenta")
CAPTION_TEMPLATES = ("a {c} background", "the background is {c}", "it is {c}")


def make_colour_video(path: str | Path, colour: str, seconds: float = 2.0, size: str = "64x48",
                      fps: int = 6) -> Path:
    """A `seconds`-long H.264 video of one solid ffmpeg colour (a name like "red")."""
    path = Path(path)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c={colour}:size={size}:rate={fps}:duration={seconds}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def colour_captions(colour: str) -> list[str]:
    return [template.format(c=colour) for template in CAPTION_TEMPLATES]


def write_msrvtt_set(folder: str | Path, colours: tuple[str, ...] = COLOURS,
                     extra_sentences: list[dict] | None = None) -> Path:
    """`folder/videos/video{k}.mp4` (one per colour) and `folder/MSRVTT_data.json` in MSR-VTT's form:
    `{"videos": [{"video_id", ...}], "sentences": [{"video_id", "caption", "sen_id"}]}`."""
    folder = Path(folder)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    videos, sentences = [], []
    for k, colour in enumerate(colours):
        video_id = f"video{k}"
        make_colour_video(folder / "videos" / f"{video_id}.mp4", colour)
        videos.append({"category": 0, "url": f"https://example.invalid/{video_id}", "video_id": video_id,
                       "start time": 0.0, "end time": 2.0, "split": "test", "id": k})
        for caption in colour_captions(colour):
            sentences.append({"caption": caption, "video_id": video_id, "sen_id": len(sentences)})
    sentences += list(extra_sentences or [])
    path = folder / "MSRVTT_data.json"
    path.write_text(json.dumps({"info": {"year": 2016}, "videos": videos, "sentences": sentences}))
    return path
