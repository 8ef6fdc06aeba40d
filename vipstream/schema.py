"""The shard contract shared by `pipeline/` (which writes shards) and `train/` (which reads them).

Everything both sides must agree on lives here and nowhere else: sample keys, file names, the
per-clip JSON fields, the manifest/error/caption columns. DESIGN.md section 2 is the prose form.
This module imports nothing from the project, so either side may import it.
"""

from __future__ import annotations

import re
from pathlib import Path

SHARDS_DIRNAME = "shards"
CAPTIONS_DIRNAME = "captions"
MANIFEST_FILENAME = "manifest.parquet"
ERRORS_FILENAME = "errors.parquet"
SUMMARY_FILENAME = "summary.json"

#: WebDataset members of one sample (the key is `__key__`).
VIDEO_EXT = "mp4"
META_EXT = "json"
#: Member extensions a reader must refuse: they would be unpickled by naive decoders.
FORBIDDEN_EXTS = frozenset({"pyd", "pth", "pickle", "pkl"})
#: Largest `json` member a reader parses. A clip's json is ~300 bytes plus its subtitle (cut by
#: the builder at `max_subtitle_chars`, 2,000 by default: <= ~12 KB JSON-escaped) or a retrieval
#: set's sentences (MSR-VTT: 20 of them, ~2 KB); 1 MiB is ~100x that. A larger member is not one
#: of ours: it is skipped unread, as a 40 MB subtitle once cost 54 s and 4.7 GB to tokenise.
MAX_META_JSON_BYTES = 1 << 20

#: WebDataset's key rule (webdataset.tariterators.base_plus_ext): a tar member's sample key is
#: its path up to the first dot of its basename, directories kept; the rest is the extension.
_MEMBER_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def split_member_name(name: str) -> tuple[str | None, str | None]:
    """'a/b/KEY.mp4' -> ('a/b/KEY', 'mp4'), 'KEY.x.JSON' -> ('KEY', 'x.json'); (None, None) for a
    name that is no sample member. The one key rule of every shard reader (the trainer's
    webdataset grouping and the caption job's), so a caption row always finds its clip. The
    extension is lower-cased, as webdataset's grouping does."""
    match = _MEMBER_KEY_EXT.match(name)
    if not match:
        return None, None
    return match.group(1), match.group(2).lower()

#: Fields of the per-clip `json` member, in order.
CLIP_META_FIELDS = (
    "clip_id", "video_id", "span", "subtitle", "duration", "fps",
    "width", "height", "num_frames", "source",
)

#: Columns of OUT/manifest.parquet (one row per written clip).
MANIFEST_COLUMNS = (
    "key", "shard", "video_id", "clip_id", "clip_index", "start_s", "end_s", "subtitle",
    "duration", "fps", "width", "height", "num_frames", "bytes",
)

#: Columns of OUT/errors.parquet and of captions/{id}/errors.parquet (one row per failure).
ERROR_COLUMNS = ("video_id", "clip_id", "stage", "reason", "source", "line")

#: Columns of a caption sidecar OUT/captions/{captioner_id}/{shard:06d}.parquet.
CAPTION_COLUMNS = ("key", "caption", "frame_index", "frame_time_s", "captioner", "created")

#: Field of a retrieval set's clip `json`: its reference sentences, a list of strings.
CLIP_CAPTIONS_FIELD = "captions"
#: Optional fields of the per-clip `json`, after CLIP_META_FIELDS: present only in retrieval sets
#: (built from annotations), absent from corpus clips.
CLIP_META_OPTIONAL_FIELDS = (CLIP_CAPTIONS_FIELD,)

#: `vipstream transcribe --output ASR/` writes ASR/subtitles/{video_id}.vtt, ASR/manifest.jsonl (a
#: vipstream manifest for `vipstream build --input`), ASR/asr.json (model and settings),
#: ASR/failed.jsonl (one error row per video that failed, so reruns skip it), errors.parquet and
#: summary.json; `vipstream build --asr MODEL --output OUT` uses OUT/asr/.
ASR_DIRNAME = "asr"
ASR_SUBTITLES_DIRNAME = "subtitles"
ASR_MANIFEST_FILENAME = "manifest.jsonl"
ASR_RECORD_FILENAME = "asr.json"
ASR_FAILED_FILENAME = "failed.jsonl"
#: Field of a corpus clip's `json`, after CLIP_META_FIELDS, present only when its `subtitle` came
#: from speech recognition: {"kind": "asr", "model", "revision", "language"} (`source` stays
#: the video's path). Also the manifest key that carries it from `vipstream transcribe` to build.
CLIP_SUBTITLE_SOURCE_FIELD = "subtitle_source"

#: File names in OUT/shards/: `{shard:06d}.tar` and its commit marker `{shard:06d}.stats.json`.
SHARD_TAR_NAME = re.compile(r"^(\d{6})\.tar$")
SHARD_STATS_SUFFIX = ".stats.json"
CAPTION_SIDECAR_SUFFIX = ".parquet"

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_id(text: str) -> str:
    """Map arbitrary manifest text onto `[A-Za-z0-9_-]`, so it is safe as a tar key or file stem.

    WebDataset splits keys at the first dot, and ids from the web contain dots, slashes and
    spaces; runs of unsafe characters become one underscore. Never empty.
    """
    cleaned = _UNSAFE_KEY_CHARS.sub("_", str(text)).strip("_")
    return cleaned or "_"


def clip_key(video_id: str, clip_index: int) -> str:
    """Sample key of a clip: `{video_id}_{clip_index:04d}`, sanitised."""
    return f"{sanitize_id(video_id)}_{clip_index:04d}"


def shard_stem(shard_index: int) -> str:
    return f"{shard_index:06d}"


def shard_tar_path(out_dir: str | Path, shard_index: int) -> Path:
    return Path(out_dir) / SHARDS_DIRNAME / f"{shard_stem(shard_index)}.tar"


def shard_stats_path(out_dir: str | Path, shard_index: int) -> Path:
    """The commit marker of a shard: a tar without this file is unfinished and is redone."""
    return Path(out_dir) / SHARDS_DIRNAME / f"{shard_stem(shard_index)}{SHARD_STATS_SUFFIX}"


def captions_dir(out_dir: str | Path, captioner_id: str) -> Path:
    return Path(out_dir) / CAPTIONS_DIRNAME / sanitize_id(captioner_id)


def caption_sidecar_path(out_dir: str | Path, captioner_id: str, shard_index: int) -> Path:
    return captions_dir(out_dir, captioner_id) / f"{shard_stem(shard_index)}{CAPTION_SIDECAR_SUFFIX}"


def asr_subtitle_path(asr_dir: str | Path, video_id: str) -> Path:
    """ASR/subtitles/{video_id}.vtt, the id sanitised (ids come from manifests)."""
    return Path(asr_dir) / ASR_SUBTITLES_DIRNAME / f"{sanitize_id(video_id)}.vtt"


def middle_frame_index(num_frames: int) -> int:
    """The frame captioned and used for the F<->C loss: index n//2 of the decoded clip."""
    if num_frames <= 0:
        raise ValueError(f"a clip needs at least one frame, found {num_frames}")
    return num_frames // 2
