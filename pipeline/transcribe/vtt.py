"""WebVTT out: cues -> the text of a `.vtt` file that `pipeline.builder.subtitles.parse_vtt` reads
back into the same cues, and the language recorded in its header.

    format_vtt(cues, language, note) -> str
    read_vtt_language(path) -> str | None

The header carries `Kind: captions` and `Language: xx` as YouTube's files do, and a NOTE block
naming the model; both are skipped by every VTT reader (ours included). Cue text is escaped
(&amp; &lt; &gt;): our parser strips tags before it unescapes entities, so a literal "<i>" said
by the model stays text, and no cue text can contain "-->".
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from pipeline.builder.subtitles import Cue

_LANGUAGE_HEADER = "Language:"


def vtt_time(seconds: float) -> str:
    """12.3456 -> "00:00:12.346" (hh:mm:ss.mmm, rounded to the millisecond)."""
    total_ms = max(0, int(round(seconds * 1000)))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def format_vtt(cues: Sequence[Cue], language: str | None = None, note: str | None = None) -> str:
    """The WebVTT text of `cues` (one line of text each; see the module docstring)."""
    header = ["WEBVTT", "Kind: captions"]
    if language:
        header.append(f"{_LANGUAGE_HEADER} {language}")
    blocks = ["\n".join(header)]
    if note:
        blocks.append("NOTE " + " ".join(note.replace("-->", "->").split()))
    for cue in cues:
        text = html.escape(" ".join(cue.text.split()), quote=False)
        if text:
            blocks.append(f"{vtt_time(cue.start_s)} --> {vtt_time(max(cue.end_s, cue.start_s))}\n{text}")
    return "\n\n".join(blocks) + "\n"


def read_vtt_language(path: str | Path) -> str | None:
    """The `Language:` of a VTT file's header block (None if absent or unreadable)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    return None  # the header block ends at the first blank line
                if line.startswith(_LANGUAGE_HEADER):
                    return line[len(_LANGUAGE_HEADER):].strip() or None
    except (OSError, UnicodeDecodeError):
        return None
    return None
