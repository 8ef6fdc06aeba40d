"""Clip texts keyed by `clip_id`, in the forms they are released in: the one reader behind
`vipstream caption --import DB` (auxiliary captions) and `vipstream build --subtitle-db DB`
(transcripts).

    open_text_db(path, value_fields) -> TextDB      the form is told from the path (below)
    db.lookup(clip_id, max_chars)    -> ClipText | None (None: no such key)
    decode_text(raw, max_chars)      -> ClipText    untrusted bytes/str -> bounded clean text

Forms (the reference, microsoft/XPretrain CLIP-ViP/src/datasets/dataset_pretrain_stage1_all_source.py,
treats a path without an extension as an LMDB and `.json`/`.jsonl` as a JSON list):
- **LMDB**: a folder holding `data.mdb` (or a `.mdb` file). Key = the clip_id's UTF-8 bytes
  (`QMi8x8o55Ns.1.mp4`), value = the text's UTF-8 bytes: the layout of the released
  `hdvila_ofa_captions_db` and of `hdvila_subtitles_92m_db`. Opened read-only and without the
  lock file (`readonly=True, lock=False`: the DB may sit on read-only or shared storage) and
  looked up in place, one `get` per clip: nothing is loaded, so 92M keys cost no memory.
- **JSON**: a list of `{"image_id" | "clip_id": ..., VALUE: ...}` objects (the reference's JSON
  caption form, `image_id` + `caption`). A `.jsonl` file starting with `[` is read this way too,
  as the reference does.
- **JSONL**: one such object per line (e.g. the reference's clip list `{"clip_id", "text", ...}`).
- **parquet**: columns `clip_id` (or `image_id`) and VALUE.
JSON, JSONL and parquet are read whole into a dict (last record of a repeated key wins, as in the
reference, and is counted): for corpus-sized imports use the LMDB.

Every value is untrusted: decoded as strict UTF-8 (invalid bytes give a reason, never a
replacement character), control characters and runs of whitespace collapsed, and cut to
`max_chars` (flagged `truncated`). Only a bounded prefix of a value is ever decoded.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from vipstream.config import ConfigError
from vipstream.text_bounds import cut_text

log = logging.getLogger(__name__)

#: Fields that hold a record's clip id: `clip_id` (HD-VILA metadata, our manifests) or
#: `image_id` (the reference's JSON caption form names the captioned middle frame by its clip).
KEY_FIELDS = ("clip_id", "image_id")
LMDB_FORM, JSON_FORM, JSONL_FORM, PARQUET_FORM = "lmdb", "json", "jsonl", "parquet"
LMDB_DATA_FILE = "data.mdb"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# ---------------------------------------------------------------------------------------------
# One value: untrusted bytes or str -> bounded clean text


@dataclass(frozen=True)
class ClipText:
    """A clip's text as imported: `text`, or None with the `reason` it is unusable."""

    text: str | None
    reason: str | None = None
    truncated: bool = False  # the value was longer than max_chars and was cut


def _prefix_limit(max_chars: int) -> int:
    """How much of a value is decoded: enough for max_chars of any UTF-8 text (<= 4 bytes per
    character), so a huge value is never decoded whole."""
    return 4 * max_chars + 4


def _surrogate_reason(text: str) -> str | None:
    """Why `text` is not valid Unicode text, or None. Files are decoded with `surrogateescape`,
    which turns each invalid byte into a lone surrogate U+DC80..U+DCFF; a JSON `\\ud800` escape
    gives one too."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        if 0xDC80 <= code <= 0xDCFF:
            return f"not valid UTF-8: byte {code - 0xDC00:#04x} at character {exc.start}"
        return f"not valid Unicode text: lone surrogate U+{code:04X} at character {exc.start}"


def decode_text(raw: Any, max_chars: int) -> ClipText:
    """An imported value -> ClipText: strict UTF-8, control characters and whitespace runs
    collapsed to one space, at most `max_chars` characters (cut at the bound, flagged)."""
    limit = _prefix_limit(max_chars)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        cut = len(raw) > limit
        data = bytes(raw[:limit])
        try:
            # final=False on a cut value: a character split by the cut is dropped, not an error
            text = codecs.getincrementaldecoder("utf-8")("strict").decode(data, final=not cut)
        except UnicodeDecodeError as exc:
            return ClipText(None, f"not valid UTF-8: byte {data[exc.start]:#04x} at offset {exc.start}")
    elif isinstance(raw, str):
        cut = len(raw) > limit
        text = raw[:limit]
        reason = _surrogate_reason(text)
        if reason is not None:
            return ClipText(None, reason)
    else:
        found = "null" if raw is None else type(raw).__name__
        return ClipText(None, f"expected a string, found {found}")
    text = " ".join(_CONTROL.sub(" ", text).split())
    if not text:
        return ClipText(None, "empty text")
    if cut or len(text) > max_chars:
        return ClipText(cut_text(text, max_chars), None, truncated=True)
    return ClipText(text)


# ---------------------------------------------------------------------------------------------
# The DB


class TextDB:
    """A read-only mapping clip_id -> text, with what reading it found (keys, duplicates,
    records that could not be used). Use as a context manager; `close` releases an LMDB."""

    form: str

    def __init__(self, path: Path, form: str):
        self.path = path
        self.form = form
        self.num_keys = 0
        self.duplicate_keys = 0   # records repeating an earlier key (the last one is kept)
        self.invalid_records = 0  # records without a string key or without the value field

    @property
    def name(self) -> str:
        return self.path.name

    def lookup(self, clip_id: str, max_chars: int) -> ClipText | None:
        """The text of `clip_id` (decoded, bounded), or None when the DB has no such key."""
        raise NotImplementedError

    def sample_keys(self, n: int = 3) -> list[str]:
        """A few keys, for messages that show what the DB's keys look like."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"source": str(self.path), "form": self.form, "keys": self.num_keys,
                "duplicate_keys": self.duplicate_keys, "invalid_records": self.invalid_records}

    def close(self) -> None:
        pass

    def __enter__(self) -> "TextDB":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _LmdbTextDB(TextDB):
    """The reference's layout, read in place: one `txn.get(clip_id.encode())` per lookup."""

    def __init__(self, path: Path):
        super().__init__(path, LMDB_FORM)
        try:
            import lmdb
        except ImportError:
            raise ConfigError(f"{path} is an LMDB: reading it needs the `lmdb` package "
                              f"(pip install lmdb)") from None
        try:
            self._env = lmdb.open(str(path), subdir=path.is_dir(), readonly=True, lock=False,
                                  create=False)
        except lmdb.Error as exc:
            raise ConfigError(f"cannot open the LMDB {path}: {exc}") from None
        self._max_key_bytes = self._env.max_key_size()
        self._txn = self._env.begin(buffers=True)  # values as memoryviews into the map: no copy
        self.num_keys = int(self._env.stat()["entries"])

    def lookup(self, clip_id: str, max_chars: int) -> ClipText | None:
        try:
            key = clip_id.encode("utf-8")
        except UnicodeEncodeError:
            return None
        if not key or len(key) > self._max_key_bytes:
            return None  # LMDB cannot hold such a key, so it is not there
        value = self._txn.get(key)
        # The memoryview is valid until the next operation on the transaction: decode it now.
        return None if value is None else decode_text(value, max_chars)

    def sample_keys(self, n: int = 3) -> list[str]:
        keys = []
        for key in self._txn.cursor().iternext(values=False):
            keys.append(bytes(key).decode("utf-8", errors="replace"))
            if len(keys) == n:
                break
        return keys

    def close(self) -> None:
        if self._env is not None:
            self._txn.abort()
            self._env.close()
            self._env = None


class _MemoryTextDB(TextDB):
    """JSON, JSONL or parquet, read once into {clip_id: raw value}."""

    def __init__(self, path: Path, form: str, records: Iterable[tuple[str, Any] | None]):
        super().__init__(path, form)
        self._values: dict[str, Any] = {}
        for record in records:
            if record is None:
                self.invalid_records += 1
                continue
            key, value = record
            if key in self._values:
                self.duplicate_keys += 1
            self._values[key] = value
        self.num_keys = len(self._values)

    def lookup(self, clip_id: str, max_chars: int) -> ClipText | None:
        if clip_id not in self._values:
            return None
        return decode_text(self._values[clip_id], max_chars)

    def sample_keys(self, n: int = 3) -> list[str]:
        return [key for key, _ in zip(self._values, range(n))]


# ---------------------------------------------------------------------------------------------
# Readers of the file forms


def _record(obj: Any, value_fields: tuple[str, ...]) -> tuple[str, Any] | None:
    """(key, raw value) of one JSON record, or None when it has no string key or no value field."""
    if not isinstance(obj, dict):
        return None
    key = next((obj[f] for f in KEY_FIELDS if isinstance(obj.get(f), str)), None)
    field = next((f for f in value_fields if f in obj), None)
    if key is None or field is None or _surrogate_reason(key) is not None:
        return None
    return key, obj[field]


def _json_list_records(text: str, path: Path, value_fields: tuple[str, ...]) -> Iterator[tuple[str, Any] | None]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not a valid JSON list: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}") from None
    if not isinstance(document, list):
        raise ConfigError(f"{path}: expected a JSON list of {{{'|'.join(KEY_FIELDS)}, "
                          f"{'|'.join(value_fields)}}} objects, found a {type(document).__name__}")
    for obj in document:
        yield _record(obj, value_fields)


def _jsonl_records(path: Path, value_fields: tuple[str, ...]) -> Iterator[tuple[str, Any] | None]:
    """One record per non-blank line; a line that is not a JSON object is an invalid record."""
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.decode("utf-8", errors="surrogateescape").strip().lstrip("\ufeff")
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                yield None
                continue
            yield _record(obj, value_fields)


def _parquet_records(path: Path, value_fields: tuple[str, ...]) -> Iterator[tuple[str, Any] | None]:
    """(key, value bytes) per row; string columns are read as bytes so that every value goes
    through the same strict UTF-8 decoding (pyarrow does not check UTF-8 when reading)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"cannot read parquet {path}: {exc}") from None
    schema = handle.schema_arrow
    key_column = next((f for f in KEY_FIELDS if f in schema.names), None)
    value_column = next((f for f in value_fields if f in schema.names), None)
    if key_column is None or value_column is None:
        raise ConfigError(f"{path}: expected columns {'|'.join(KEY_FIELDS)} and {'|'.join(value_fields)}, "
                          f"found {schema.names}")
    textual = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    for column in (key_column, value_column):
        if not any(check(schema.field(column).type) for check in textual):
            raise ConfigError(f"{path}: column {column!r} must hold strings, found {schema.field(column).type}")
    for batch in handle.iter_batches(columns=[key_column, value_column], batch_size=65536):
        keys = batch.column(key_column).cast(pa.large_binary()).to_pylist()
        values = batch.column(value_column).cast(pa.large_binary()).to_pylist()
        for key, value in zip(keys, values):
            try:
                yield (key.decode("utf-8"), value) if key else None
            except UnicodeDecodeError:
                yield None


def _read_text_file(path: Path) -> str:
    """A JSON/JSONL file's text; invalid bytes survive as lone surrogates, so they cost only the
    record that holds them (decode_text reports them) instead of the whole file."""
    try:
        return path.read_bytes().decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _starts_with_bracket(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def open_text_db(path: str | Path, value_fields: tuple[str, ...]) -> TextDB:
    """Open the text DB at `path` in the form its path says (see the module docstring).

    `value_fields`: the field (JSON) or column (parquet) holding the text, first found wins,
    e.g. ("caption",) for captions. Raises ConfigError naming the path and what was expected
    when the path is missing, of no known form, or unreadable as that form.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise ConfigError(f"text DB {path} does not exist")
    if path.is_dir():
        if not (path / LMDB_DATA_FILE).is_file():
            raise ConfigError(f"{path} is a folder but not an LMDB (no {LMDB_DATA_FILE} inside); expected "
                              f"an LMDB folder, a .json, .jsonl or .parquet file")
        return _LmdbTextDB(path)
    if suffix == ".mdb":
        return _LmdbTextDB(path)
    if suffix == ".parquet":
        return _MemoryTextDB(path, PARQUET_FORM, _parquet_records(path, value_fields))
    if suffix in (".json", ".jsonl"):
        if _starts_with_bracket(path):
            return _MemoryTextDB(path, JSON_FORM, _json_list_records(_read_text_file(path), path, value_fields))
        return _MemoryTextDB(path, JSONL_FORM, _jsonl_records(path, value_fields))
    hint = " (unzip it: the LMDB is the folder inside)" if suffix == ".zip" else ""
    raise ConfigError(f"text DB {path}: expected an LMDB folder (holding {LMDB_DATA_FILE}), a .mdb, .json, "
                      f".jsonl or .parquet file{hint}")
