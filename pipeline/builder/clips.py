"""Clip spans: validating given spans, planning spans from subtitle cues.

Pure functions; no I/O. Given spans (HD-VILA-100M metadata) go through `parse_timestamp`
(pipeline/builder/timestamps.py) and
`validate_span`; without them, `plan_clips` cuts the video at subtitle sentence boundaries:

    cues -> normalise -> clamp to the video -> sentences -> split the too long -> merge the short
         -> settle leftovers (merge back, pad into silence, or drop) -> spans
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pipeline.builder.subtitles import Cue
from pipeline.builder.timestamps import parse_timestamp
from pipeline.errors import StageError

SPAN_STAGE = "span"

# A subtitle sentence ends with one of these, possibly followed by closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)\]\u00bb]*$")


@dataclass(frozen=True)
class Span:
    """A clip's place in its source video, seconds from the start, half-open [start_s, end_s)."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class ClipPlanSpec:
    """How `plan_clips` cuts a video without given spans.

    Defaults follow DESIGN.md section 2: clips of 4-20 s (HD-VILA-100M averages 13.4 s).
    """

    min_clip_s: float = 4.0
    max_clip_s: float = 20.0
    # A pause this long between cues ends a sentence: YouTube auto-captions have no punctuation,
    # so pauses are their only sentence boundaries.
    sentence_gap_s: float = 1.5
    # A clip still shorter than min_clip_s after merging and padding is kept only if at least
    # this long (and never longer than min_clip_s demands): a 0.3 s flash of text is no clip.
    min_keep_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.min_clip_s <= self.max_clip_s:
            raise ValueError(f"need 0 < min_clip_s <= max_clip_s, found {self.min_clip_s}..{self.max_clip_s}")
        if self.sentence_gap_s < 0 or self.min_keep_s < 0:
            raise ValueError(f"sentence_gap_s and min_keep_s must be >= 0, found "
                             f"{self.sentence_gap_s} and {self.min_keep_s}")


def validate_span(start_s: float, end_s: float, duration_s: float | None,
                  tolerance_s: float = 0.5) -> Span:
    """A given span checked against its video, end clamped to the video's end.

    Raises StageError(stage="span") for a negative start, a reversed or empty span, a start at or
    after the video end, or an end more than `tolerance_s` past it (metadata times are rounded,
    and containers disagree on durations by a frame or two: a small overshoot is clamped, a large
    one means the span belongs to another video). `duration_s` None (unknown) skips end checks.
    """
    span_text = f"span {start_s:.3f}-{end_s:.3f} s"
    if not (math.isfinite(start_s) and math.isfinite(end_s)):
        raise StageError(SPAN_STAGE, f"{span_text} is not finite")
    if start_s < 0:
        raise StageError(SPAN_STAGE, f"{span_text} starts before the video (expected start >= 0)")
    if end_s < start_s:
        raise StageError(SPAN_STAGE, f"{span_text} is reversed (end before start)")
    if end_s == start_s:
        raise StageError(SPAN_STAGE, f"{span_text} is empty (expected end > start)")
    if duration_s is None:
        return Span(start_s, end_s)
    if start_s >= duration_s:
        raise StageError(SPAN_STAGE, f"{span_text} starts at/after the video end "
                                     f"(video is {duration_s:.3f} s long)")
    if end_s > duration_s + tolerance_s:
        raise StageError(SPAN_STAGE, f"{span_text} ends {end_s - duration_s:.3f} s past the video end "
                                     f"at {duration_s:.3f} s (tolerance {tolerance_s:g} s)")
    return Span(start_s, min(end_s, duration_s))


def plan_clips(cues: list[Cue], spec: ClipPlanSpec, duration_s: float | None) -> list[Span]:
    """Spans for a video without given clips, cut at subtitle sentence boundaries.

    1. cues, normalised once by the subtitle parsers (`load_subtitles`, `normalise_cues`: rolling
       YouTube duplicates and 10 ms transition cues gone), are clamped to [0, duration_s];
    2. sentences: runs of cues ending at a cue whose text ends with . ! ? (or … 。 ！ ？) or
       before a pause of at least `sentence_gap_s`;
    3. a sentence longer than `max_clip_s` is split at cue boundaries (greedy, each piece as long
       as fits); a single cue longer than `max_clip_s` is split into equal parts;
    4. pieces are merged forward: a clip shorter than `min_clip_s` takes in the following piece
       while the result stays <= `max_clip_s`;
    5. leftovers still shorter than `min_clip_s` merge into the previous clip if that stays
       <= `max_clip_s`; otherwise they are padded into the silence around them (never over a
       neighbour, never outside the video; with unknown duration not past the last cue) up to
       `min_clip_s`; what is then still shorter than min(`min_keep_s`, `min_clip_s`) is dropped.
    Each span runs from its first cue's start to its last cue's end, so spans do not overlap and
    a cue belongs to exactly one span (an evenly split long cue belongs to all of its parts).
    Deterministic: the same cues give the same spans.
    """
    spoken = sorted((cue for cue in cues if cue.text.strip()), key=lambda cue: (cue.start_s, cue.end_s))
    cues = _within_video(spoken, duration_s)
    pieces = [piece for sentence in _sentences(cues, spec.sentence_gap_s)
              for piece in _split_long(sentence, spec.max_clip_s)]
    clips = _merge_forward(pieces, spec)
    clips = _merge_leftovers_back(clips, spec)
    clips = _pad_short(clips, spec.min_clip_s, duration_s)
    keep_s = min(spec.min_keep_s, spec.min_clip_s)
    return [Span(round(clip.start_s, 6), round(clip.end_s, 6))
            for clip in clips if clip.duration_s >= keep_s and clip.duration_s > 0]


def _within_video(cues: list[Cue], duration_s: float | None) -> list[Cue]:
    """Cues clamped to [0, duration_s]; cues wholly outside the video are dropped."""
    inside = []
    for cue in cues:
        start_s, end_s = max(cue.start_s, 0.0), cue.end_s
        if duration_s is not None:
            if start_s >= duration_s:
                continue
            end_s = min(end_s, duration_s)
        if end_s < 0:
            continue
        inside.append(Cue(start_s, max(start_s, end_s), cue.text))
    return inside


def _sentences(cues: list[Cue], gap_s: float) -> list[list[Span]]:
    """Cue spans grouped into sentences (punctuation or a pause ends one)."""
    sentences: list[list[Span]] = []
    current: list[Span] = []
    for index, cue in enumerate(cues):
        current.append(Span(cue.start_s, cue.end_s))
        following = cues[index + 1] if index + 1 < len(cues) else None
        if (following is None or _SENTENCE_END.search(cue.text)
                or following.start_s - cue.end_s >= gap_s):
            sentences.append(current)
            current = []
    return sentences


def _split_long(sentence: list[Span], max_s: float) -> list[Span]:
    """A sentence as pieces of at most `max_s`: cut at cue boundaries, a too-long cue cut evenly."""
    pieces: list[Span] = []
    current: Span | None = None
    for cue in sentence:
        if cue.duration_s > max_s:
            if current is not None:
                pieces.append(current)
                current = None
            pieces.extend(_split_evenly(cue, max_s))
        elif current is None:
            current = cue
        elif max(cue.end_s, current.end_s) - current.start_s <= max_s:
            current = Span(current.start_s, max(cue.end_s, current.end_s))
        else:
            pieces.append(current)
            current = cue
    if current is not None:
        pieces.append(current)
    return pieces


def _split_evenly(span: Span, max_s: float) -> list[Span]:
    parts = math.ceil(span.duration_s / max_s - 1e-9)
    step = span.duration_s / parts
    bounds = [span.start_s + k * step for k in range(parts)] + [span.end_s]
    return [Span(a, b) for a, b in zip(bounds, bounds[1:])]


def _merge_forward(pieces: list[Span], spec: ClipPlanSpec) -> list[Span]:
    """A clip shorter than min takes in the next piece while it stays within max."""
    clips: list[Span] = []
    for piece in pieces:
        if clips and clips[-1].duration_s < spec.min_clip_s and _fits(clips[-1], piece, spec):
            clips[-1] = Span(clips[-1].start_s, piece.end_s)
        else:
            clips.append(piece)
    return clips


def _merge_leftovers_back(clips: list[Span], spec: ClipPlanSpec) -> list[Span]:
    """A clip still shorter than min joins the clip before it if that stays within max."""
    merged: list[Span] = []
    for clip in clips:
        if merged and clip.duration_s < spec.min_clip_s and _fits(merged[-1], clip, spec):
            merged[-1] = Span(merged[-1].start_s, clip.end_s)
        else:
            merged.append(clip)
    return merged


def _fits(first: Span, last: Span, spec: ClipPlanSpec) -> bool:
    """Whether one clip from `first`'s start to `last`'s end stays within max_clip_s."""
    return last.end_s - first.start_s <= spec.max_clip_s


def _pad_short(clips: list[Span], min_s: float, duration_s: float | None) -> list[Span]:
    """Short clips widened into the silence around them, half before and half after if room.

    Padding covers no cue (the room ends at the neighbouring clips), so the clip's text is unchanged.
    """
    padded = list(clips)
    for index, clip in enumerate(padded):
        need = min_s - clip.duration_s
        if need <= 0:
            continue
        floor = padded[index - 1].end_s if index > 0 else 0.0
        if index + 1 < len(padded):
            ceiling = padded[index + 1].start_s
        else:
            ceiling = duration_s if duration_s is not None else clip.end_s
        room_before, room_after = max(clip.start_s - floor, 0.0), max(ceiling - clip.end_s, 0.0)
        after = min(room_after, max(need / 2, need - room_before))
        before = min(room_before, need - after)
        padded[index] = Span(clip.start_s - before, clip.end_s + after)
    return padded
