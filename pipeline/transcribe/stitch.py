"""Window outputs -> cues: clean Whisper's segment texts, stitch overlapping blocks by time, drop
cues that still repeat.

    clean_text(text) -> str                          control and replacement characters out
    stitch_blocks(blocks) -> list[Cue]               one video's blocks -> its cues, in time order
    drop_repeats(cues, rules) -> (kept, dropped)     Whisper's loops that survived its guards

Pure functions over hand-made or model-made values; no model, no Ray, no files.

Stitching. Block k covers [start_s, end_s) of the video and overlaps block k+1 by the config's
`overlap_s`. Inside a block, Whisper's sequential long-form decoding already joins its 30 s
windows; only block edges need us. The seam between blocks k and k+1 is the middle of their
overlap. Block k keeps its segments whose midpoint lies before the seam: a segment past it was
heard near k's edge, where the audio was cut, and block k+1 heard that stretch with context on
both sides. Block k+1 keeps every segment that reaches beyond what block k kept (ends more than
SEAM_SLACK_S after it), so nothing said across the seam is lost; the words both blocks heard
are then dropped from the first segment after the seam (a run of at least MIN_SEAM_WORDS must
match, so one repeated word, "no. no.", stays), and so is a word one block heard cut at its
edge when the other says it whole. Segment times are clamped to the block's audio (a model can
time a segment past the end of its input).
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Sequence

from pipeline.builder.subtitles import Cue

#: Words at a seam that must repeat before they are taken for a duplicate of the other block.
MIN_SEAM_WORDS = 2
#: A segment of the later block is new at a seam when it ends this much after what the earlier
#: block kept (segment end times of one stretch of speech differ by a few 20 ms steps between blocks).
SEAM_SLACK_S = 0.5
#: n-gram sizes checked for loops inside a cue ("the the the", "thank you thank you ...").
MAX_NGRAM = 4
#: Punctuation and symbols around a word ("Hello," "(yes)" "so..."), ignored when words are compared.
_EDGE_MARKS = re.compile(r"^[\W_]+|[\W_]+$")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Segment:
    """One Whisper segment: text spoken from `start_s` to `end_s`, seconds of the source video."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class BlockTranscript:
    """The model's output for one block: its place in the video and its segments (video times)."""

    index: int
    start_s: float
    end_s: float  # start_s + the block's audio duration
    segments: tuple[Segment, ...] = ()
    language: str | None = None


@dataclass(frozen=True)
class RepeatRules:
    """When a cue counts as a repetition (TranscribeConfig's cue_* keys; 0 / False: rule off)."""

    compression_ratio_threshold: float = 2.4
    max_ngram_repeats: int = 4
    drop_repeated_cues: bool = True


@dataclass
class DropCounts:
    """Cues dropped by each rule of `drop_repeats`."""

    compression: int = 0
    ngram_loop: int = 0
    repeated_cue: int = 0

    @property
    def total(self) -> int:
        return self.compression + self.ngram_loop + self.repeated_cue


# ---------------------------------------------------------------------------------------------
# text


def clean_text(text: str) -> str:
    """A segment's decoded text as one clean line: U+FFFD (bytes of a character cut between
    tokens), control and format characters removed, whitespace collapsed."""
    kept = "".join(" " if ch.isspace() else ch for ch in text
                   if ch == " " or ch.isspace() or (ch != "\ufffd" and unicodedata.category(ch)[0] != "C"))
    return _SPACE.sub(" ", kept).strip()


def _normalise_word(word: str) -> str:
    return _EDGE_MARKS.sub("", word).lower()


def _words(text: str) -> list[str]:
    """Words for comparison: lower case, surrounding punctuation stripped, empty ones dropped."""
    words = (_normalise_word(word) for word in text.split())
    return [word for word in words if word]


def text_compression_ratio(text: str) -> float:
    """OpenAI Whisper's measure of repetition: UTF-8 bytes / zlib-compressed bytes of the text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def longest_ngram_run(words: Sequence[str], max_n: int = MAX_NGRAM) -> int:
    """The most consecutive repeats of any n-gram (n <= max_n): ["a","b","a","b","a","b"] -> 3."""
    best = 1 if words else 0
    for n in range(1, max_n + 1):
        for start in range(0, len(words) - 2 * n + 1):
            gram, run, position = words[start:start + n], 1, start + n
            while words[position:position + n] == gram:
                run, position = run + 1, position + n
            best = max(best, run)
    return best


# ---------------------------------------------------------------------------------------------
# stitching


def _seams(blocks: Sequence[BlockTranscript]) -> list[float]:
    """Per block, the seam after it (the middle of its overlap with the next; inf for the last)."""
    return [(block.end_s + following.start_s) / 2 for block, following in zip(blocks, blocks[1:])] + [math.inf]


def _join_seam(previous: str, text: str) -> tuple[str, str]:
    """The last cue before a seam and the first after it, without the words both blocks heard.

    The longest run of words (>= MIN_SEAM_WORDS) that ends `previous` and starts `text` is
    dropped from `text`. A block edge can cut a word: "... went to the st" + "to the store." keeps
    "store." and drops "st"; "... went to the store." + "ent to the store. Next" keeps "Next".
    """
    before, after = previous.split(), text.split()
    left, right = [_normalise_word(w) for w in before], [_normalise_word(w) for w in after]
    for size in range(min(len(left), len(right)), MIN_SEAM_WORDS - 1, -1):
        if left[-size:] == right[:size]:
            return previous, " ".join(after[size:])
        # the previous block's last word was cut by its edge and is said whole after the run
        if (size < len(left) and left[-1] and left[-size - 1:-1] == right[:size] and size < len(right)
                and right[size].startswith(left[-1]) and right[size] != left[-1]):
            return " ".join(before[:-1]), " ".join(after[size:])
        # the next block's first word is the end of a word it heard cut at its start
        if (size < len(right) and right[0] and left[-size:] == right[1:size + 1]
                and left[-size - 1:][0].endswith(right[0]) and left[-size - 1] != right[0]):
            return previous, " ".join(after[size + 1:])
    return previous, text


def stitch_blocks(blocks: Sequence[BlockTranscript]) -> list[Cue]:
    """One video's blocks (any order, every block present) -> cues in time order, no overlaps.

    See the module docstring for the rule. Empty texts are dropped; a cue's end is cut back to
    the next cue's start, as `pipeline.builder.subtitles.normalise_cues` wants them.
    """
    blocks = sorted(blocks, key=lambda b: b.index)
    cues: list[list] = []  # [start_s, end_s, text, block index]
    for block, seam in zip(blocks, _seams(blocks)):
        covered_s = cues[-1][1] if cues else -math.inf  # what the blocks before this one kept
        for segment in sorted(block.segments, key=lambda s: (s.start_s, s.end_s)):
            text = clean_text(segment.text)
            start_s = min(max(segment.start_s, block.start_s), block.end_s)
            end_s = min(max(segment.end_s, start_s), block.end_s)
            if not text or start_s >= block.end_s:
                continue
            if (start_s + end_s) / 2 >= seam or end_s <= covered_s + SEAM_SLACK_S:
                continue
            if cues and cues[-1][3] != block.index:  # the first segment after a seam
                cues[-1][2], text = _join_seam(cues[-1][2], text)
                if not text:
                    cues[-1][1] = max(cues[-1][1], end_s)
                    continue
            cues.append([start_s, end_s, text, block.index])
    cues.sort(key=lambda c: c[0])
    for current, following in zip(cues, cues[1:]):
        current[1] = max(current[0], min(current[1], following[0]))
    return [Cue(round(start_s, 3), round(end_s, 3), text) for start_s, end_s, text, _ in cues]


# ---------------------------------------------------------------------------------------------
# repeats


def drop_repeats(cues: Sequence[Cue], rules: RepeatRules) -> tuple[list[Cue], DropCounts]:
    """Cues minus the ones that still repeat after Whisper's guards, and how many each rule took.

    Rules (each off at 0 / False): the cue's text compresses by more than
    `compression_ratio_threshold` (zlib, UTF-8: OpenAI's measure and value); one word n-gram
    repeats `max_ngram_repeats` times in a row inside it; its words equal the last kept cue's.
    """
    kept: list[Cue] = []
    counts = DropCounts()
    for cue in cues:
        words = _words(cue.text)
        if rules.compression_ratio_threshold and text_compression_ratio(cue.text) > rules.compression_ratio_threshold:
            counts.compression += 1
        elif rules.max_ngram_repeats and longest_ngram_run(words) >= rules.max_ngram_repeats:
            counts.ngram_loop += 1
        elif rules.drop_repeated_cues and kept and words and words == _words(kept[-1].text):
            counts.repeated_cue += 1
        else:
            kept.append(cue)
    return kept, counts
