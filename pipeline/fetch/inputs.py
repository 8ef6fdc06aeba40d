"""The four input forms of `vipstream fetch` -> `FetchEntry(video_id, url, clips)`.

1. HD-VILA-100M meta JSONL, as is: `{"video_id", "url", "clip": [{"clip_id", "span"}]}`;
2. a vipstream manifest (JSONL or parquet) with a `url` (and optional `clips`);
3. a CSV (or TSV, or parquet) with `video_id,url` columns (`video_id` optional);
4. a plain text file of URLs, one per line (`#` comments), ids derived from the URLs.

Ids are sanitised (`vipstream.schema.sanitize_id`): they become file names. Two records with the
same sanitised id are a duplicate (an error row, the first is kept), as in `vipstream build`.
A record whose URL is not http(s) stays an entry with `url_error` set: it gets a `bad_url`
status row without any request. A malformed record is an error row with its line number.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow.parquet as pq

from pipeline.builder.manifest import iter_jsonl, parse_given_clips
from pipeline.errors import ErrorRow, StageError
from pipeline.fetch.urls import BadUrl, check_http_url, url_hash, video_id_from_url
from vipstream.schema import sanitize_id

STAGE = "input"


@dataclass(frozen=True)
class FetchEntry:
    video_id: str  # sanitised: the stem of VIDEOS/{video_id}.mp4
    url: str
    clips: list[dict[str, Any]] | None = None  # [{clip_id, span: [start, end]}], spans as given
    line: int | None = None
    url_error: str | None = None  # set: the URL is refused (not http(s)); never requested

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FetchInput:
    entries: list[FetchEntry] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    form: str = ""


def _clips_of(record: dict[str, Any], video_id: str) -> list[dict[str, Any]] | None:
    given = parse_given_clips(record.get("clips", record.get("clip")), video_id)
    if given is None:
        return None
    return [{"clip_id": c.clip_id, "span": [c.start, c.end]} for c in given]


def _entry(record: Any, line: int) -> FetchEntry:
    """One record of forms 1-3 -> FetchEntry; StageError(stage="input") when malformed."""
    if not isinstance(record, dict):
        raise StageError(STAGE, f"expected a JSON object, found {type(record).__name__}")
    raw_url = record.get("url")
    if not isinstance(raw_url, str) or not raw_url.strip():
        raise StageError(STAGE, f"missing or empty 'url' (found {raw_url!r:.80})")
    raw_id = record.get("video_id")
    if raw_id is not None and not isinstance(raw_id, (str, int)):
        raise StageError(STAGE, f"'video_id' must be a string, found {type(raw_id).__name__}")
    raw_id = str(raw_id).strip() if raw_id is not None else ""
    video_id = sanitize_id(raw_id) if raw_id else video_id_from_url(raw_url.strip())
    return _with_url_check(video_id, raw_url, _clips_of(record, video_id), line)


def _with_url_check(video_id: str, url: str, clips: list[dict[str, Any]] | None, line: int) -> FetchEntry:
    try:
        return FetchEntry(video_id, check_http_url(url), clips, line)
    except BadUrl as exc:
        return FetchEntry(video_id, url.strip(), clips, line, url_error=str(exc))


def _iter_csv(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in sample and "," not in sample) else ","
        reader = csv.DictReader(handle, delimiter=delimiter)
        if not reader.fieldnames or "url" not in [f.strip() for f in reader.fieldnames]:
            raise ValueError(f"{path}: a CSV input needs a 'url' column (and optionally 'video_id'), "
                             f"found columns {reader.fieldnames}")
        for row in reader:
            yield reader.line_num, {k.strip(): (v.strip() if isinstance(v, str) else v)
                                    for k, v in row.items() if k is not None}


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    table = pq.read_table(path)
    if "url" not in table.column_names:
        raise ValueError(f"{path}: a parquet input needs a 'url' column, found {table.column_names}")
    for number, row in enumerate(table.to_pylist(), start=1):
        yield number, row


def _looks_like_jsonl(path: Path) -> bool:
    with open(path, "rb") as handle:
        for raw in handle:
            text = raw.decode("utf-8", errors="replace").strip()
            if text and not text.startswith("#"):
                return text.startswith("{")
    return True


def _url_list(path: Path) -> FetchInput:
    """Form 4: one URL per line. A derived id taken by an earlier URL gets the URL's hash
    appended (the same URL twice is a duplicate)."""
    result = FetchInput(form="urls")
    seen_urls: dict[str, int] = {}
    taken: set[str] = set()
    with open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            url = raw.decode("utf-8", errors="replace").strip()
            if not url or url.startswith("#"):
                continue
            if url in seen_urls:
                result.errors.append(ErrorRow(None, None, STAGE, f"duplicate URL (same as line {seen_urls[url]}); "
                                                                 f"this line is skipped", source=str(path), line=line))
                continue
            seen_urls[url] = line
            video_id = video_id_from_url(url)
            if video_id in taken:
                video_id = f"{video_id}_{url_hash(url)}"
            taken.add(video_id)
            result.entries.append(_with_url_check(video_id, url, None, line))
    return result


def read_fetch_input(input_path: str | Path) -> FetchInput:
    """Read any of the four forms (detected from the file); FileNotFoundError if it is missing,
    ValueError if a CSV/parquet lacks its `url` column."""
    path = Path(input_path)
    if not path.is_file():
        raise FileNotFoundError(f"input {path} is not a file (expected a JSONL, CSV, parquet or URL list)")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return entries_from_records(_iter_parquet(path), path, form="parquet")
    if suffix in (".csv", ".tsv"):
        return entries_from_records(_iter_csv(path), path, form="csv")
    if _looks_like_jsonl(path):
        return entries_from_records(iter_jsonl(path), path, form="jsonl")
    return _url_list(path)


def entries_from_records(records: Iterable[tuple[int, Any]], path: Path, *, form: str) -> FetchInput:
    """(line, record) pairs -> entries; malformed records and duplicate ids are error rows."""
    result = FetchInput(form=form)
    first_line: dict[str, int] = {}
    for line, record in records:
        try:
            if isinstance(record, StageError):
                raise StageError(STAGE, record.reason)
            entry = _entry(record, line)
        except StageError as exc:
            vid = record.get("video_id") if isinstance(record, dict) else None
            result.errors.append(ErrorRow(vid if isinstance(vid, str) else None, None, STAGE, exc.reason,
                                          source=str(path), line=line))
            continue
        if entry.video_id in first_line:
            result.errors.append(ErrorRow(entry.video_id, None, STAGE,
                                          f"duplicate video_id {entry.video_id!r} (same file name as line "
                                          f"{first_line[entry.video_id]}); this line is skipped",
                                          source=str(path), line=line))
            continue
        first_line[entry.video_id] = line
        result.entries.append(entry)
    return result
