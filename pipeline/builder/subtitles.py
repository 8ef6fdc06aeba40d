"""Subtitles: bytes -> text (encoding detection) -> cues (VTT/SRT/JSON) -> a clip's text.

The path of a subtitle file through this module, top to bottom:

    read_subtitle_text(bytes) -> str            UTF-8 / BOMs / UTF-16 / cp1252 / latin-1
    parse_vtt | parse_srt | parse_json_cues     -> raw cues, markup stripped, lines kept
        normalise_cues                          -> sorted, rolling duplicates removed, one line each
    clip_subtitle(cues, start_s, end_s) -> str  the text a clip of the video is paired with

Every parser returns normalised cues, so `load_subtitles` output can go straight to
`pipeline.builder.clips.plan_clips` and `clip_subtitle`. Broken input raises `StageError(stage="subtitles")`
with a reason that says what was expected and what was found; no other exception type escapes
`load_subtitles`.

Why normalising matters: YouTube auto-captions (most of HD-VILA-100M) are *rolling*: every cue
repeats the line shown before it and adds one new line, with 10 ms cues in between that only
repeat. Taken naively, every sentence would appear two or three times in a clip's text.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pipeline.builder.subtitle_encoding import read_subtitle_text
from pipeline.builder.timestamps import parse_timestamp
from pipeline.errors import StageError

STAGE = "subtitles"

# Rolling captions abut exactly (one cue ends where the next starts). Only a cue starting within
# this many seconds of the previous cue's end is treated as rolling on from it; a repeat after a
# longer pause is a genuine repetition (a chorus, a second "[Music]") and is kept.
ROLLING_GAP_S = 0.5
# A cue that starts with the last words of the cue before it (captions that grow word by word)
# loses those words; at least this many must match, so a single repeated word ("no. no.") stays.
MIN_WORD_OVERLAP = 2

#: Real subtitle files are kilobytes (a 10-hour auto-caption VTT is ~5 MB); anything far larger
#: is not a subtitle file and is refused before it is read into memory.
MAX_SUBTITLE_BYTES = 64 * 1024 * 1024
SUBTITLE_FORMATS = {".vtt": "vtt", ".srt": "srt", ".json": "json", ".json3": "json"}


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: text shown from `start_s` to `end_s` (seconds from the video start).

    Parsers return cues whose text is a single space-separated line; a raw cue built by hand may
    carry several lines separated by "\\n", which `normalise_cues` uses to find rolling repeats.
    """

    start_s: float
    end_s: float
    text: str


# --------------------------------------------------------------------------------------------
# markup -> plain text

# <00:00:01.234> word timings (YouTube), also mm:ss.ttt
_INLINE_TIME = re.compile(r"<\d+(?::\d{2}){1,2}[.,]\d+>")
# <c>, <c.colorE5E5E5>, </c>, <v Speaker>, <i>, <font color="#fff">, <lang en>, <ruby>, <rt> ...
# A tag must open with a letter, so "5 < 6 and 7 > 3" in an SRT survives.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
# {\an8} and other ASS override codes that leak into SRT files
_ASS_OVERRIDE = re.compile(r"\{\\[^{}]*\}")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), None)


def clean_cue_text(raw: str) -> str:
    """Cue payload -> plain text, one cleaned line per payload line (empty lines dropped).

    Tags are stripped *before* entities are unescaped, so "&lt;i&gt;" stays the literal text "<i>".
    """
    text = _INLINE_TIME.sub("", raw)
    text = _TAG.sub("", text)
    text = _ASS_OVERRIDE.sub("", text)
    text = html.unescape(text).translate(_INVISIBLE)
    lines = (" ".join(line.split()) for line in text.split("\n"))  # split() also eats &nbsp;
    return "\n".join(line for line in lines if line)


# --------------------------------------------------------------------------------------------
# cue normalisation (rolling duplicates, order, overlaps)


def normalise_cues(cues: Iterable[Cue]) -> list[Cue]:
    """Cues as a clip planner and a clip's text want them: in time order, each saying something new.

    Rules, in order (each exists because real ASR files need it):
    1. text lines are whitespace-collapsed; a cue with no text is dropped; an end before the start
       becomes the start (the text is kept, as a point in time);
    2. cues are sorted by start (stable, so file order breaks ties);
    3. a cue that starts within ROLLING_GAP_S of the previous cue's end drops the lines that the
       previous cue showed (YouTube rolling lines); if nothing new is left it is a pure repeat
       (the 10 ms transition cues) and only extends the previous kept cue's end;
    4. in the same situation, leading words that repeat the end of the previous cue (at least
       MIN_WORD_OVERLAP of them: captions that grow word by word) are dropped;
    5. cues that start at the same instant become one cue (two speakers, two caption rows);
    6. a cue's end is cut back to the next cue's start, so a clip cut at a cue boundary never
       shares a cue with its neighbour.
    The result has single-line texts, strictly increasing starts and no time overlaps; applying
    the function again changes nothing for ordinary files.
    """
    prepared = []
    for cue in cues:
        lines = [line for line in (" ".join(part.split()) for part in cue.text.split("\n")) if line]
        if lines:
            prepared.append((cue.start_s, max(cue.start_s, cue.end_s), lines))
    prepared.sort(key=lambda item: item[0])

    kept: list[list[Any]] = []  # [start_s, end_s, text]
    previous_lines: list[str] = []
    previous_end = -math.inf
    for start_s, end_s, lines in prepared:
        rolling = bool(kept) and start_s <= previous_end + ROLLING_GAP_S
        new_lines = [line for line in lines if line not in previous_lines] if rolling else lines
        text = " ".join(new_lines)
        if rolling and text:
            text = _strip_word_overlap(" ".join(previous_lines), text)
        previous_lines, previous_end = lines, end_s
        if not text:
            kept[-1][1] = max(kept[-1][1], end_s)  # a pure repeat keeps the text on screen longer
        elif kept and kept[-1][0] == start_s:
            kept[-1][1] = max(kept[-1][1], end_s)
            kept[-1][2] = f"{kept[-1][2]} {text}"
        else:
            kept.append([start_s, end_s, text])

    for current, following in zip(kept, kept[1:]):
        current[1] = min(current[1], following[0])
    return [Cue(start_s, end_s, text) for start_s, end_s, text in kept]


def _strip_word_overlap(previous: str, text: str) -> str:
    """`text` without its longest word prefix that equals a suffix of `previous` (>= MIN_WORD_OVERLAP)."""
    before, after = previous.split(), text.split()
    for size in range(min(len(before), len(after)), MIN_WORD_OVERLAP - 1, -1):
        if before[-size:] == after[:size]:
            return " ".join(after[size:])
    return text


# --------------------------------------------------------------------------------------------
# WebVTT and SRT

# A cue timing's time: (hh:)mm:ss.ttt, with "," for SRT. The fraction is required so that a
# timing line cut short by a truncated download ("00:00:0") is reported instead of misread.
_CUE_TIME = re.compile(r"^(?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3}$")
_EXPECTED_TIMING = "expected 'hh:mm:ss.mmm --> hh:mm:ss.mmm'"


def parse_vtt(text: str) -> list[Cue]:
    """WebVTT text -> normalised cues.

    Handles the header block (`WEBVTT`, `Kind:`, `Language:`), NOTE/STYLE/REGION blocks, cue
    identifiers, cue settings after the timing (`align:start position:0%`), inline word timings
    and `<c>` tags. A missing `WEBVTT` header is tolerated (SRT-style files saved as .vtt are
    common); a malformed timing line raises StageError with its line number.
    """
    return normalise_cues(_scan_cues(text))


def parse_srt(text: str) -> list[Cue]:
    """SubRip text -> normalised cues. Numbering may have gaps or be missing, the last cue may
    lack its trailing blank line, and `<i>`, `<font>` and `{\\an8}` markup is stripped."""
    return normalise_cues(_scan_cues(text))


def _scan_cues(text: str) -> list[Cue]:
    """Cues from any line-based format that marks cues with 'start --> end' lines (VTT, SRT).

    A cue's payload runs from its timing line to the first empty line (a line of spaces is
    payload: YouTube puts one in most cues). Blocks without a timing line (headers, NOTE, STYLE,
    REGION, SRT numbers) are thereby skipped. If a payload runs into the next timing line without
    an empty line, its last line is that cue's identifier when it is a number or follows a blank.
    """
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    timing_rows = _timing_rows(lines)
    cues = []
    for position, row in enumerate(timing_rows):
        start_s, end_s = _parse_timing_line(lines[row], row + 1)
        stop = timing_rows[position + 1] if position + 1 < len(timing_rows) else len(lines)
        payload = []
        for line in lines[row + 1:stop]:
            if line == "":
                break
            payload.append(line)
        else:
            if stop < len(lines) and payload and _is_identifier(payload):
                payload.pop()
        cues.append(Cue(start_s, end_s, clean_cue_text("\n".join(payload))))
    return cues


def _timing_rows(lines: list[str]) -> list[int]:
    """Indices of the cue timing lines. A line with "-->" is one where a cue can start: the first
    line of a block, or the second after an identifier (a malformed one there is reported). Inside
    a cue's payload, "-->" is text ("Click File --> Save"), unless the whole line is a well-formed
    timing: that is the next cue of a file missing its blank lines.
    """
    rows: list[int] = []
    in_payload, block_line = False, 0
    for index, line in enumerate(lines):
        if line == "":
            in_payload, block_line = False, 0
            continue
        if "-->" in line and ((not in_payload and block_line <= 1) or _is_timing_line(line)):
            rows.append(index)
            in_payload = True
        block_line += 1
    return rows


def _is_timing_line(line: str) -> bool:
    left, right = line.split("-->", 1)
    end_fields = right.split()
    return bool(_CUE_TIME.match(left.strip()) and end_fields and _CUE_TIME.match(end_fields[0]))


def _is_identifier(payload: list[str]) -> bool:
    last = payload[-1].strip()
    return last.isdigit() or (len(payload) > 1 and not payload[-2].strip())


def _parse_timing_line(line: str, line_number: int) -> tuple[float, float]:
    left, right = line.split("-->", 1)
    start_text = left.strip()
    end_fields = right.split()
    end_text = end_fields[0] if end_fields else ""
    if not end_text:
        raise StageError(STAGE, f"line {line_number}: cue timing {line.strip()!r} is truncated "
                                f"(no end time; {_EXPECTED_TIMING})", line=line_number)
    for value in (start_text, end_text):
        if not _CUE_TIME.match(value):
            raise StageError(STAGE, f"line {line_number}: cue timing {line.strip()!r} has a malformed "
                                    f"time {value!r} ({_EXPECTED_TIMING})", line=line_number)
    try:
        return parse_timestamp(start_text), parse_timestamp(end_text)
    except ValueError as exc:
        raise StageError(STAGE, f"line {line_number}: {exc}", line=line_number) from None


# --------------------------------------------------------------------------------------------
# JSON


def parse_json_cues(text: str) -> list[Cue]:
    """JSON cues -> normalised cues.

    Accepted shapes: a list of {"start", "end", "text"} (times in seconds or "hh:mm:ss.mmm";
    "duration" may replace "end"); the same list under "cues" or "segments" (Whisper output);
    YouTube json3 {"events": [{"tStartMs", "dDurationMs", "segs": [{"utf8"}]}]}.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StageError(STAGE, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                         line=exc.lineno) from None
    if isinstance(document, dict) and isinstance(document.get("events"), list):
        return normalise_cues(_json3_cues(document["events"]))
    items = document
    if isinstance(document, dict):
        items = next((document[key] for key in ("cues", "segments") if key in document), None)
        if items is None:
            raise StageError(STAGE, "JSON object has no 'cues', 'segments' or 'events' list "
                                    f"(found keys {sorted(document)[:8]})")
    if not isinstance(items, list):
        raise StageError(STAGE, f"expected a JSON list of cues, found {type(items).__name__}")
    return normalise_cues(_json_cue(item, index) for index, item in enumerate(items))


def _json_cue(item: Any, index: int) -> Cue:
    if not isinstance(item, dict):
        raise StageError(STAGE, f"cue {index} is a {type(item).__name__}, expected an object "
                                "with 'start', 'end' and 'text'")
    try:
        start_s = parse_timestamp(_required(item, index, "start", "start_s"))
        if any(key in item for key in ("end", "end_s")):
            end_s = parse_timestamp(_required(item, index, "end", "end_s"))
        else:
            end_s = start_s + parse_timestamp(_required(item, index, "duration", "dur"))
    except ValueError as exc:
        raise StageError(STAGE, f"cue {index}: {exc}") from None
    text = item.get("text", "")
    if isinstance(text, list):
        text = "\n".join(str(part) for part in text)
    return Cue(start_s, end_s, clean_cue_text("" if text is None else str(text)))


def _required(item: dict, index: int, *keys: str) -> Any:
    for key in keys:
        if key in item:
            return item[key]
    raise StageError(STAGE, f"cue {index} has no {keys[0]!r} (found keys {sorted(item)[:8]})")


def _json3_cues(events: list) -> list[Cue]:
    cues = []
    for index, event in enumerate(events):
        if not isinstance(event, dict) or not event.get("segs"):
            continue  # window definitions and style events carry no text
        try:
            start_s = float(event["tStartMs"]) / 1000.0
            end_s = start_s + float(event.get("dDurationMs", 0)) / 1000.0
        except (KeyError, TypeError, ValueError):
            raise StageError(STAGE, f"json3 event {index} has no numeric 'tStartMs'") from None
        text = "".join(str(seg.get("utf8", "")) for seg in event["segs"] if isinstance(seg, dict))
        cues.append(Cue(start_s, end_s, clean_cue_text(text)))
    return cues


# --------------------------------------------------------------------------------------------
# files


def load_subtitles(path: str | Path) -> list[Cue]:
    """Read a subtitle file into normalised cues; the format comes from the suffix.

    `x.en.vtt` is a VTT file. Missing, unreadable, binary, unparseable and cue-less files raise
    StageError(stage="subtitles", source=str(path)): a video with broken subtitles becomes an
    error row, it never stops the shard.
    """
    source = str(path)
    path = Path(path)
    fmt = SUBTITLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise StageError(STAGE, f"unsupported subtitle format {path.suffix or '(no suffix)'!r} "
                                f"(expected one of {', '.join(SUBTITLE_FORMATS)})", source=source)
    try:
        if not path.is_file():  # a FIFO or device named x.vtt would block the shard forever
            raise StageError(STAGE, "subtitle path is not a regular file" if path.exists()
                             else "subtitle file not found", source=source)
        size = path.stat().st_size
        if size > MAX_SUBTITLE_BYTES:
            raise StageError(STAGE, f"subtitle file is {size} bytes, over the {MAX_SUBTITLE_BYTES} "
                                    f"byte limit for a subtitle file", source=source)
        data = path.read_bytes()
    except FileNotFoundError:
        raise StageError(STAGE, "subtitle file not found", source=source) from None
    except OSError as exc:
        raise StageError(STAGE, f"cannot read subtitle file: {exc.strerror or exc}", source=source) from None
    if not data.strip():
        raise StageError(STAGE, f"subtitle file is empty ({len(data)} bytes)", source=source)
    text = read_subtitle_text(data)
    if "\x00" in text:
        raise StageError(STAGE, f"file looks binary (contains NUL bytes), expected {fmt.upper()} "
                                f"text; it starts with {data[:16]!r}", source=source)
    parse = {"vtt": parse_vtt, "srt": parse_srt, "json": parse_json_cues}[fmt]
    try:
        cues = parse(text)
    except StageError as exc:
        raise StageError(STAGE, exc.reason, source=source, line=exc.line) from None
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # defensive: odd JSON
        raise StageError(STAGE, f"unparseable {fmt.upper()} file: {exc}", source=source) from None
    if not cues:
        raise StageError(STAGE, _why_no_cues(text, fmt), source=source)
    return cues


def _why_no_cues(text: str, fmt: str) -> str:
    """A reason for a file that parsed to nothing, naming what was expected and what was there."""
    first_line = next((line.strip() for line in text.split("\n") if line.strip()), "")
    if fmt == "json":
        return "no cues with text found in JSON (expected a list of {start, end, text})"
    timings = len(_timing_rows(text.replace("\r\n", "\n").replace("\r", "\n").split("\n")))
    if timings:
        return f"found {timings} cue timing lines but no cue text"
    header = "" if fmt != "vtt" or first_line.startswith("WEBVTT") else "no 'WEBVTT' header and "
    return (f"{header}no cue timing lines found ({_EXPECTED_TIMING}); "
            f"the file starts with {first_line[:40]!r}")


# --------------------------------------------------------------------------------------------
# a clip's text


def clip_subtitle(cues: list[Cue], start_s: float, end_s: float) -> str:
    """The text paired with the clip [start_s, end_s): the cues overlapping it, de-duplicated.

    A cue overlaps when it starts before `end_s` and ends after `start_s` (a zero-length cue when
    it lies inside the half-open span), so a clip cut at a cue boundary does not take its
    neighbour's cue. Expects normalised cues (from `load_subtitles` / `parse_*` / `normalise_cues`):
    normalising is done once over the whole file, because it is not idempotent (a second pass
    over "d e | d e g" would eat the repeated words a speaker really said). Only identical
    consecutive texts are folded here.
    """
    texts: list[str] = []
    for cue in cues:
        inside = (cue.start_s < end_s and cue.end_s > start_s) or (
            cue.start_s == cue.end_s and start_s <= cue.start_s < end_s)
        if inside and cue.text and (not texts or texts[-1] != cue.text):
            texts.append(cue.text)
    return " ".join(texts)
