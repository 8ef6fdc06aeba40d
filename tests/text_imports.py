"""Text DBs and a corpus with given spans for the import tests: real LMDBs written with the
`lmdb` package in the reference's layout (key = clip_id UTF-8, value = UTF-8 text), and a tiny
HD-VILA-form corpus (meta JSONL with clip spans, real ffmpeg videos) to build with --subtitle-db."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.media import make_video

#: A value that is not UTF-8 (0xff never occurs in UTF-8).
INVALID_UTF8 = b"caf\xff au lait"


def write_lmdb(path: Path, items: dict[str, bytes]) -> Path:
    """An LMDB folder (data.mdb + lock.mdb) as the reference's DBs: key = clip_id.encode()."""
    import lmdb

    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=64 * 1024 * 1024)
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key.encode("utf-8"), value)
    env.close()
    return path


@dataclass(frozen=True)
class SpansCorpus:
    meta_path: Path
    video_root: Path
    clip_ids: dict[str, list[str]]  # video_id -> its clip_ids, in meta order
    no_spans_video: str


#: video_id -> (seconds, clip spans). QMi8x8o55Ns is the HD-VILA README's example id. Spans of
#: different lengths give clips of 6, 9, 4/5 and 9 frames at 3 fps: different middle frames.
SPANS = {
    "QMi8x8o55Ns": (8.0, [["00:00:00.000", "00:00:02.000"], ["00:00:02.000", "00:00:05.000"],
                          ["00:00:05.000", "00:00:06.500"], [6.5, 8.0]]),
    "Bx2y3z4w5v6": (5.0, [[0.0, 3.0], [3.0, 5.0]]),
}
NO_SPANS_VIDEO = "Cnospans001"


def make_spans_corpus(folder: Path) -> SpansCorpus:
    """Videos + an HD-VILA meta JSONL whose clips come with spans; the first video also has a VTT
    (which --subtitle-db must ignore); one more video has no clip list."""
    video_root = folder / "videos"
    video_root.mkdir(parents=True, exist_ok=True)
    lines, clip_ids = [], {}
    for video_id, (seconds, spans) in SPANS.items():
        make_video(video_root / f"{video_id}.mp4", seconds=seconds, size="160x120", fps=10, audio=False)
        clip_ids[video_id] = [f"{video_id}.{k}.mp4" for k in range(1, len(spans) + 1)]
        lines.append({"video_id": video_id, "url": f"https://www.youtube.com/watch?v={video_id}",
                      "clip": [{"clip_id": c, "span": s} for c, s in zip(clip_ids[video_id], spans)]})
    (video_root / "QMi8x8o55Ns.en.vtt").write_text(
        "WEBVTT\n\n00:00:00.000 --> 00:00:08.000\nwords from the vtt file\n", encoding="utf-8")
    make_video(video_root / f"{NO_SPANS_VIDEO}.mp4", seconds=3.0, size="160x120", fps=10, audio=False)
    lines.append({"video_id": NO_SPANS_VIDEO, "url": "https://www.youtube.com/watch?v=" + NO_SPANS_VIDEO})
    meta_path = folder / "meta.jsonl"
    meta_path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return SpansCorpus(meta_path, video_root, clip_ids, NO_SPANS_VIDEO)
