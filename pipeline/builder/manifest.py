"""Read the raw corpus description, in any of its three accepted forms, into `VideoEntry`s.

Forms (DESIGN.md section 2, issue 2):
1. HD-VILA-100M metadata JSONL: `{"video_id", "url", "clip": [{"clip_id", "span": [a, b]}]}`,
   the video found under `video_root` by its id (any extension), subtitles beside it;
2. our own manifest, JSONL or parquet: `video_id, path, subtitles, clips`;
3. a plain folder of videos, each with an optional subtitle file of the same stem.
Retrieval sets (pipeline/builder/annotations.py) come through `entries_from_records` with
`retrieval=True`: records `{video_id, captions, path?, span?}`, one whole-video clip each.

Nothing here touches a video: structure is checked, media are probed later in the shard task, so
one unreadable file never stops the listing. A malformed line or a duplicate id becomes an error
row carrying its line number; the rest of the manifest is read.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow.parquet as pq

from pipeline.builder.staging import uri_protocol
from pipeline.errors import ErrorRow, StageError
from vipstream.schema import CLIP_SUBTITLE_SOURCE_FIELD, sanitize_id

VIDEO_SUFFIXES = frozenset({
    ".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".ts", ".mts", ".flv", ".mpg", ".mpeg",
    ".3gp", ".ogv", ".wmv",
})
SUBTITLE_SUFFIXES = (".vtt", ".srt", ".json3", ".json")
#: Files beside a video that are never the video itself (partial downloads, sidecars).
_NOT_VIDEO_SUFFIXES = frozenset({".vtt", ".srt", ".json", ".json3", ".part", ".ytdl", ".txt", ".jpg",
                                 ".png", ".webp", ".description", ".info", ".xml", ".md"})
#: The part between a video's stem and a subtitle suffix must look like a language tag
#: (`en`, `en-US`, `pt_BR`, `zh-Hans`); anything else may be another video's stem (`talk.2`).
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class GivenClip:
    """A clip span as the manifest wrote it; times stay raw until the shard task parses them
    against the probed duration, so one bad span costs that clip only."""

    clip_id: str
    start: Any
    end: Any


@dataclass(frozen=True)
class VideoEntry:
    video_id: str
    path: str | None  # None: the file could not be found; the shard task records why
    subtitles: str | None = None
    clips: tuple[GivenClip, ...] | None = None  # None: plan spans from the subtitles
    line: int | None = None  # 1-based line (JSONL) or row (parquet) in the manifest
    missing_reason: str | None = None
    # Retrieval sets: the video's reference captions (no subtitles needed; one clip, the given
    # span or the whole video). None: a corpus video.
    captions: tuple[str, ...] | None = None
    # Where the subtitles came from when not a file of the corpus: `vipstream transcribe`'s
    # {"kind": "asr", "model", "revision", "language"}, copied into each clip's json.
    subtitle_source: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["clips"] = None if self.clips is None else [c.__dict__ for c in self.clips]
        data["captions"] = None if self.captions is None else list(self.captions)
        if data["subtitle_source"] is None:  # absent, so plans of builds without ASR keep their fingerprint
            del data["subtitle_source"]
        return data

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "VideoEntry":
        clips, captions = data.get("clips"), data.get("captions")
        return VideoEntry(**{**data, "clips": None if clips is None else tuple(GivenClip(**c) for c in clips),
                             "captions": None if captions is None else tuple(captions)})


@dataclass
class ManifestReadResult:
    entries: list[VideoEntry] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    form: str = ""


def _subtitle_beside(video: Path) -> str | None:
    """`x.vtt`, `x.en.vtt`, `x.srt`, ... beside `x.mp4`; English and exact stems preferred."""
    stem = video.name[: -len(video.suffix)] if video.suffix else video.name
    try:
        siblings = sorted(p.name for p in video.parent.iterdir() if p.name.startswith(stem + "."))
    except OSError:
        return None
    other_videos = {name.rsplit(".", 1)[0] for name in siblings
                    if Path(name).suffix.lower() in VIDEO_SUFFIXES and name != video.name}
    candidates = []
    for name in siblings:
        middle = name[len(stem):]  # ".vtt", ".en.vtt", ".en-US.srt"
        for rank, suffix in enumerate(SUBTITLE_SUFFIXES):
            if middle.endswith(suffix):
                lang = middle[: -len(suffix)]
                if lang and not (lang.startswith(".") and _LANGUAGE_TAG.match(lang[1:])):
                    break  # "x.2.en.vtt" belongs to video "x.2", not to "x"
                if lang and stem + lang in other_videos:
                    break  # "x.en.vtt" beside "x.en.mp4" is that video's
                lang = lang[1:]
                if suffix == ".json" and not lang:
                    break  # x.json is more often metadata than subtitles
                lang_rank = 0 if lang in ("", "en") else 1 if lang.startswith("en") else 2
                candidates.append((lang_rank, rank, name))
                break
    return str(video.parent / min(candidates)[2]) if candidates else None


class _VideoIndex:
    """Video files under a root, by stem: built once so lookups never build paths from ids.

    Listed on the first lookup only: a manifest of our own form (with paths) never pays for
    listing (and stat-ing) a folder that may hold a whole corpus.
    """

    def __init__(self, root: Path):
        self.root = root

    @functools.cached_property
    def by_stem(self) -> dict[str, list[Path]]:
        root = self.root
        by_stem: dict[str, list[Path]] = {}
        try:
            names = sorted(os.listdir(root))
        except OSError:
            names = []
        for name in names:
            path = root / name
            suffix = path.suffix.lower()
            if suffix in _NOT_VIDEO_SUFFIXES or not path.is_file():
                continue
            by_stem.setdefault(name[: -len(path.suffix)] if path.suffix else name, []).append(path)
        return by_stem

    def find(self, video_id: str) -> Path | None:
        matches = self.by_stem.get(video_id, [])
        known = [p for p in matches if p.suffix.lower() in VIDEO_SUFFIXES]
        return (known or matches or [None])[0]


def _resolve(path: str, base_dir: Path) -> str:
    """A manifest path: URIs (s3://...) as they are, fetched later by the shard task (their
    protocol checked against `remote_protocols`); local paths relative to the manifest."""
    if uri_protocol(path) is not None or os.path.isabs(path):
        return path
    return str(base_dir / path)


def _parse_clips(raw: Any, video_id: str) -> tuple[GivenClip, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise StageError("manifest", f"'clip(s)' must be a list, found {type(raw).__name__}")
    clips = []
    for k, item in enumerate(raw):
        if not isinstance(item, dict):
            raise StageError("manifest", f"clip {k} must be an object, found {type(item).__name__}")
        span = item.get("span")
        if span is None and "start" in item and "end" in item:
            span = [item["start"], item["end"]]
        if not isinstance(span, (list, tuple)) or len(span) != 2:
            raise StageError("manifest", f"clip {k} needs 'span': [start, end], found {span!r}")
        clip_id = str(item.get("clip_id") or f"{video_id}.{k}")
        clips.append(GivenClip(clip_id=clip_id, start=span[0], end=span[1]))
    return tuple(clips)


def parse_given_clips(raw: Any, video_id: str) -> tuple[GivenClip, ...] | None:
    """The `clip(s)` list of a record checked as a build would read it (StageError if malformed):
    `vipstream fetch` checks spans once at input time and hands them on to its manifest."""
    return _parse_clips(raw, video_id)


def _parse_subtitle_source(raw: Any, subtitles: str | None) -> dict[str, Any] | None:
    """A manifest row's `subtitle_source` (written by `vipstream transcribe`): an object, beside
    the subtitles it describes, or carrying the `error` that left the video without any."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise StageError("manifest", f"'{CLIP_SUBTITLE_SOURCE_FIELD}' must be an object, found {type(raw).__name__}")
    if not subtitles and not raw.get("error"):
        raise StageError("manifest", f"'{CLIP_SUBTITLE_SOURCE_FIELD}' is given but 'subtitles' is not")
    return dict(raw)


def _parse_retrieval(record: dict[str, Any], video_id: str) -> tuple[tuple[str, ...], tuple[GivenClip, ...] | None]:
    """A retrieval record's captions (non-empty strings) and its one clip: the `span` when
    given, else None (the whole video, known once probed)."""
    captions = record.get("captions")
    if not isinstance(captions, list) or not captions:
        raise StageError("manifest", f"expected 'captions': a non-empty list of strings, found {captions!r:.80}")
    cleaned = tuple(c.strip() for c in captions if isinstance(c, str) and c.strip())
    if len(cleaned) != len(captions):
        raise StageError("manifest", f"expected every caption to be a non-empty string, found {captions!r:.80}")
    if record.get("clips") is not None or record.get("clip") is not None:
        raise StageError("manifest", "a retrieval video is one clip: give 'span': [start, end], not 'clips'")
    span = record.get("span")
    if span is None:
        return cleaned, None
    return cleaned, _parse_clips([{"clip_id": video_id, "span": span}], video_id)


def _entry_from_record(record: Any, line: int, base_dir: Path, video_index: _VideoIndex,
                       retrieval: bool = False) -> VideoEntry:
    """One manifest record (HD-VILA or ours; with `retrieval`, a retrieval-set record) ->
    VideoEntry; StageError(stage="manifest") if malformed."""
    if not isinstance(record, dict):
        raise StageError("manifest", f"expected a JSON object, found {type(record).__name__}")
    video_id = record.get("video_id")
    if not isinstance(video_id, str) or not video_id.strip():
        raise StageError("manifest", f"missing or empty 'video_id' (found {video_id!r})")
    video_id = video_id.strip()
    if retrieval:
        captions, clips = _parse_retrieval(record, video_id)
        raw_path = record.get("path")
        if raw_path:
            return VideoEntry(video_id, _resolve(str(raw_path), base_dir), None, clips, line, captions=captions)
        found = video_index.find(video_id)
        reason = None if found else f"no video file named {video_id}.* under {video_index.root}"
        return VideoEntry(video_id, str(found) if found else None, None, clips, line, reason, captions)
    if record.get("captions") is not None:
        raise StageError("manifest", "this row carries 'captions', a retrieval-set row: build retrieval sets "
                                     "with `vipstream build --annotations FILE`, not --input")
    clips = _parse_clips(record.get("clips", record.get("clip")), video_id)
    raw_path = record.get("path")
    if raw_path:  # our manifest form
        path = _resolve(str(raw_path), base_dir)
        subtitles = record.get("subtitles")
        if subtitles:
            subtitles = _resolve(str(subtitles), base_dir)
        elif uri_protocol(path) is None:
            subtitles = _subtitle_beside(Path(path))
        return VideoEntry(video_id, path, subtitles, clips, line,
                          subtitle_source=_parse_subtitle_source(record.get(CLIP_SUBTITLE_SOURCE_FIELD), subtitles))
    # HD-VILA form: find the file by id under the video root.
    found = video_index.find(video_id)
    if found is None:
        return VideoEntry(video_id, None, None, clips, line,
                          missing_reason=f"no video file named {video_id}.* under {video_index.root}")
    return VideoEntry(video_id, str(found), _subtitle_beside(found), clips, line)


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any | StageError]]:
    """(line number, parsed record) per non-blank line; a line that is not JSON gives a StageError."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, StageError("manifest", f"line is not valid JSON: {exc.msg} at column {exc.colno}")


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
        yield number, row


def read_folder(folder: Path) -> ManifestReadResult:
    """A plain folder: every video file (sorted by name) with its same-stem subtitles."""
    result = ManifestReadResult(form="folder")
    seen: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        video_id = sanitize_id(path.stem)
        if video_id in seen:
            result.errors.append(ErrorRow(video_id, None, "manifest",
                                          f"duplicate video_id {video_id!r}: {path.name} and {seen[video_id]}",
                                          source=str(path)))
            continue
        seen[video_id] = path.name
        result.entries.append(VideoEntry(video_id, str(path), _subtitle_beside(path)))
    return result


def read_manifest(input_path: str | Path, video_root: str | Path | None = None) -> ManifestReadResult:
    """Read any accepted input form. Raises FileNotFoundError only when the input itself is missing."""
    input_path = Path(input_path)
    if input_path.is_dir():
        return read_folder(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input {input_path} is neither a manifest file nor a folder of videos")
    suffix = input_path.suffix.lower()
    records = _iter_parquet(input_path) if suffix == ".parquet" else iter_jsonl(input_path)
    return entries_from_records(records, input_path, video_root,
                                form="parquet" if suffix == ".parquet" else "jsonl")


def entries_from_records(records: Iterable[tuple[int, Any]], input_path: Path,
                         video_root: str | Path | None = None, *, form: str,
                         retrieval: bool = False) -> ManifestReadResult:
    """(line, record) pairs of `input_path` -> entries; a malformed record or a duplicate id is
    an error row. Relative paths resolve against the file's folder; videos without a path are
    found by id under `video_root` (default: that folder)."""
    base_dir = input_path.parent
    video_index = _VideoIndex(Path(video_root)) if video_root else _VideoIndex(base_dir)
    result = ManifestReadResult(form=form)
    first_line: dict[str, int] = {}
    for line, record in records:
        try:
            if isinstance(record, StageError):
                raise record
            entry = _entry_from_record(record, line, base_dir, video_index, retrieval)
        except StageError as exc:
            vid = record.get("video_id") if isinstance(record, dict) else None
            result.errors.append(exc.to_row(video_id=vid if isinstance(vid, str) else None,
                                            source=str(input_path), line=line))
            continue
        # Ids are compared as sanitised keys: "a.b" and "a_b" would share sample keys.
        key_id = sanitize_id(entry.video_id)
        if key_id in first_line:
            result.errors.append(ErrorRow(entry.video_id, None, "manifest",
                                          f"duplicate video_id {entry.video_id!r} (same key as line "
                                          f"{first_line[key_id]}); this line is skipped",
                                          source=str(input_path), line=line))
            continue
        first_line[key_id] = line
        result.entries.append(entry)
    return result
