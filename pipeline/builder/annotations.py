"""Read retrieval-set annotations (captions per video) into manifest records for the builder.

A retrieval set (DESIGN.md section 2) is built by the same builder as the corpus: one clip per
video (the given span, else the whole video), its `json` carrying `captions` (a list) and no
subtitle. This module only turns each annotation form into records of our manifest form,
`{"video_id", "captions": [...], "path"?, "span"?}`, with the line each came from; finding the
videos (under `--video-root`, by id, any extension) is `pipeline/builder/manifest.py`'s job.

Forms, detected from the file (`detect_form`):
- `msrvtt-json`: MSR-VTT's `MSRVTT_data.json`, `{"videos": [{"video_id", ...}], "sentences":
  [{"video_id", "caption", "sen_id"?}]}` (20 sentences per video). A sentence naming a video that
  is not in "videos" is an error row; so is a video without any sentence.
- `csv`: a CSV with a header holding at least `video_id` and `sentence` (or `caption`), e.g.
  the JSFusion MSR-VTT 1k-A test list (`key,vid_key,video_id,sentence`); several rows of one
  video are several captions.
- `activitynet`: ActivityNet-Captions style `{video_id: {"sentences": [...], "timestamps"?,
  "duration"?}}`; a video's sentences are joined into one paragraph (paragraph-to-video retrieval,
  as for DiDeMo and ActivityNet).
- `jsonl`: one `{"video_id", "path"?, "captions": [...], "span"?: [start, end]}` per line.
With `paragraph=True` any form joins each video's captions into one paragraph. A video list
(`read_video_list`: MSR-VTT's `MSRVTT_train.9k.csv`, or one id per line) keeps or excludes videos,
so one annotation file yields the train, validation and test sets.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.builder.manifest import ManifestReadResult, entries_from_records, iter_jsonl
from pipeline.errors import ErrorRow, StageError

FORMS = ("msrvtt-json", "csv", "activitynet", "jsonl")
STAGE = "annotations"
#: Column names of a caption in the CSV form (JSFusion's list says "sentence").
CSV_TEXT_COLUMNS = ("sentence", "caption")


class AnnotationFormatError(ValueError):
    """The annotation file as a whole is not one of the accepted forms."""


@dataclass(frozen=True)
class AnnotationOptions:
    """How an annotation file becomes a retrieval set (all optional)."""

    form: str | None = None  # one of FORMS; None: detected from the file
    paragraph: bool = False  # join each video's captions into one paragraph
    videos: frozenset[str] | None = None  # keep only these video ids (None: all)
    exclude_videos: frozenset[str] = frozenset()  # drop these video ids (e.g. a validation split)


def read_video_list(path: str | Path) -> frozenset[str]:
    """Video ids of a list file: a CSV whose header has a `video_id` column (MSR-VTT's
    MSRVTT_train.9k.csv), else one id per line (the first comma-separated field)."""
    path = Path(path)
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not lines:
        raise AnnotationFormatError(f"{path}: expected video ids, found an empty file")
    header = [name.strip() for name in lines[0].split(",")]
    if "video_id" in header:
        rows = csv.DictReader(lines[1:], fieldnames=header)
        return frozenset(row["video_id"].strip() for row in rows if (row.get("video_id") or "").strip())
    return frozenset(line.split(",")[0].strip() for line in lines)


def join_paragraph(sentences: list[str]) -> str:
    """A video's sentences as one paragraph (DiDeMo / ActivityNet paragraph-to-video retrieval)."""
    return " ".join(sentence.strip() for sentence in sentences if sentence.strip())


def detect_form(path: Path) -> str:
    """The annotation form of `path`, from its suffix and, for .json, its top-level keys."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        data = _load_json(path)
        if isinstance(data, dict) and "videos" in data and "sentences" in data:
            return "msrvtt-json"
        if isinstance(data, dict) and data and all(
                isinstance(v, dict) and "sentences" in v for v in data.values()):
            return "activitynet"
        keys = sorted(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise AnnotationFormatError(
            f"{path}: expected MSR-VTT JSON ('videos' and 'sentences') or ActivityNet-style JSON "
            f"({{video_id: {{'sentences': [...]}}}}), found {keys}")
    raise AnnotationFormatError(f"{path}: expected an annotation file ending in .json, .csv or .jsonl, "
                                f"found {path.name!r}")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise AnnotationFormatError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None


def _text_or_none(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


class _Grouper:
    """Captions grouped by video in first-appearance order, with the line of each video's first caption."""

    def __init__(self) -> None:
        self.captions: dict[str, list[str]] = {}
        self.first_line: dict[str, int] = {}

    def add(self, video_id: str, caption: str, line: int) -> None:
        self.captions.setdefault(video_id, []).append(caption)
        self.first_line.setdefault(video_id, line)


def _msrvtt_records(path: Path) -> tuple[list[tuple[int, Any]], list[ErrorRow]]:
    """Lines are 1-based positions in the "sentences" list (videos: in the "videos" list)."""
    data = _load_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("videos", "sentences")):
        raise AnnotationFormatError(f"{path}: expected MSR-VTT JSON with 'videos' and 'sentences' lists")
    errors: list[ErrorRow] = []
    videos: list[str] = []
    for index, video in enumerate(data["videos"], start=1):
        video_id = _text_or_none(video.get("video_id")) if isinstance(video, dict) else None
        if video_id is None:
            errors.append(ErrorRow(None, None, STAGE, f"videos[{index - 1}]: expected an object with a "
                                                      f"'video_id', found {video!r:.80}", str(path), index))
        elif video_id not in videos:
            videos.append(video_id)
    known = set(videos)
    grouper = _Grouper()
    for index, sentence in enumerate(data["sentences"], start=1):
        record = sentence if isinstance(sentence, dict) else {}
        video_id, caption = _text_or_none(record.get("video_id")), _text_or_none(record.get("caption"))
        if video_id is None or caption is None:
            errors.append(ErrorRow(video_id, None, STAGE, f"sentences[{index - 1}]: expected 'video_id' and a "
                                                          f"non-empty 'caption', found {sentence!r:.80}",
                                   str(path), index))
        elif video_id not in known:
            errors.append(ErrorRow(video_id, None, STAGE, f"sentences[{index - 1}] is a caption for video "
                                                          f"{video_id!r}, which is not in 'videos'",
                                   str(path), index))
        else:
            grouper.add(video_id, caption, index)
    records = []
    for video_id in videos:
        if video_id not in grouper.captions:
            errors.append(ErrorRow(video_id, None, STAGE, "no caption in 'sentences' for this video "
                                                          "(a retrieval video needs at least one)", str(path)))
            continue
        records.append((grouper.first_line[video_id],
                        {"video_id": video_id, "captions": grouper.captions[video_id]}))
    return records, errors


def _csv_records(path: Path) -> tuple[list[tuple[int, Any]], list[ErrorRow]]:
    """Lines are the CSV's physical line numbers (header = 1)."""
    errors: list[ErrorRow] = []
    grouper = _Grouper()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        text_column = next((c for c in CSV_TEXT_COLUMNS if c in header), None)
        if "video_id" not in header or text_column is None:
            raise AnnotationFormatError(f"{path}: expected a CSV header with 'video_id' and 'sentence' (or "
                                        f"'caption'), found {header}")
        for row in reader:
            line = reader.line_num
            video_id, caption = _text_or_none(row.get("video_id")), _text_or_none(row.get(text_column))
            if video_id is None or caption is None:
                errors.append(ErrorRow(video_id, None, STAGE, f"expected a video_id and a non-empty "
                                                              f"{text_column!r}, found {row!r:.80}",
                                       str(path), line))
                continue
            grouper.add(video_id, caption, line)
    records = [(grouper.first_line[v], {"video_id": v, "captions": c}) for v, c in grouper.captions.items()]
    return records, errors


def _activitynet_records(path: Path) -> tuple[list[tuple[int, Any]], list[ErrorRow]]:
    """Lines are 1-based positions among the file's videos. Always paragraphs."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise AnnotationFormatError(f"{path}: expected ActivityNet-style JSON {{video_id: {{'sentences': [...]}}}}")
    errors: list[ErrorRow] = []
    records = []
    for index, (video_id, entry) in enumerate(data.items(), start=1):
        sentences = entry.get("sentences") if isinstance(entry, dict) else None
        captions = [s for s in sentences if _text_or_none(s)] if isinstance(sentences, list) else []
        if not captions:
            errors.append(ErrorRow(video_id, None, STAGE, f"expected a non-empty 'sentences' list, found "
                                                          f"{sentences!r:.80}", str(path), index))
            continue
        records.append((index, {"video_id": video_id, "captions": [join_paragraph(captions)]}))
    return records, errors


def _jsonl_records(path: Path) -> tuple[list[tuple[int, Any]], list[ErrorRow]]:
    """Records as they are (checked by the manifest reader); unparsable lines are error rows."""
    records: list[tuple[int, Any]] = []
    errors: list[ErrorRow] = []
    for line, record in iter_jsonl(path):
        if isinstance(record, StageError):
            errors.append(ErrorRow(None, None, STAGE, record.reason, str(path), line))
        else:
            records.append((line, record))
    return records, errors


_READERS = {"msrvtt-json": _msrvtt_records, "csv": _csv_records,
            "activitynet": _activitynet_records, "jsonl": _jsonl_records}


def read_annotations(path: str | Path, video_root: str | Path | None = None,
                     options: AnnotationOptions = AnnotationOptions()) -> ManifestReadResult:
    """The retrieval videos of an annotation file, as manifest entries carrying their captions.

    Videos are found by id under `video_root` (default: the file's folder) unless a JSONL
    record gives a `path`. Videos outside `options.videos` or in `options.exclude_videos` are
    left out with their error rows. Raises FileNotFoundError / AnnotationFormatError for an
    unusable file; a bad row is an error row, the rest is read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    form = options.form or detect_form(path)
    if form not in _READERS:
        raise AnnotationFormatError(f"expected an annotation form in {FORMS}, found {form!r}")
    records, errors = _READERS[form](path)

    def wanted(video_id: object) -> bool:
        if not isinstance(video_id, str):
            return True  # a malformed record: its error row is kept
        video_id = video_id.strip()
        return (options.videos is None or video_id in options.videos) and video_id not in options.exclude_videos

    records = [(line, r) for line, r in records if not isinstance(r, dict) or wanted(r.get("video_id"))]
    errors = [e for e in errors if e.video_id is None or wanted(e.video_id)]
    if options.paragraph:
        for _, record in records:
            if isinstance(record, dict) and isinstance(record.get("captions"), list):
                record["captions"] = [join_paragraph([str(c) for c in record["captions"]])]
    result = entries_from_records(records, path, video_root, form=form, retrieval=True)
    result.errors[:0] = errors
    return result
