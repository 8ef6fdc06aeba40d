"""`vipstream build --subtitle-db DB`: each clip's text from a DB keyed by clip_id (the
reference's `hdvila_subtitles_92m_db` LMDB, or a JSONL/parquet; pipeline/text_db.py reads them)
instead of from subtitle files, for corpora whose clips come with spans (HD-VILA meta JSONL).

    read_subtitle_db(path, entries) -> SubtitleDbTexts   in the driver, before any shard task:
                                                         every given clip looked up once
    texts.for_entries(group)        -> {clip_id: ClipText} the shard task's share
    text_from_db(texts, clip_id)    -> str, or StageError(stage="subtitles") with the reason

The DB is read only in the driver (an LMDB environment must not cross a fork) and each shard
task gets the texts of its own clips as an argument; the counts cover the whole manifest, so
they are exact on a resumed build too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pipeline.builder.manifest import VideoEntry
from pipeline.errors import StageError
from pipeline.text_db import ClipText, open_text_db

log = logging.getLogger(__name__)

STAGE = "subtitles"
#: Where a record's text is read from, first found wins: the reference's clip list names it
#: `text`; `subtitle` is our clip json's name for it.
SUBTITLE_FIELDS = ("text", "subtitle")
#: A safety bound on a DB text, not a length policy: an HD-VILA clip's transcript is ~30 words
#: (~200 characters); 20,000 characters is far past any real clip and bounds a hostile value.
MAX_SUBTITLE_DB_CHARS = 20_000
#: The error a video without given spans gets: DB texts are per clip, so its clips must be known.
NO_SPANS_REASON = ("--subtitle-db gives texts per clip_id, so a video's clips must come with spans "
                   "(an HD-VILA 'clip' list of {clip_id, span}); this video has none")


@dataclass
class SubtitleDbTexts:
    """The DB's texts for the manifest's clips (absent from `texts`: the DB has no such key)."""

    source: str
    name: str
    described: dict[str, Any]
    texts: dict[str, ClipText] = field(default_factory=dict)
    clips: int = 0
    clips_without_text: int = 0
    texts_invalid: int = 0
    texts_truncated: int = 0

    def for_entries(self, entries: Iterable[VideoEntry]) -> dict[str, ClipText]:
        """The texts of these entries' clips: what one shard task needs."""
        return {c.clip_id: self.texts[c.clip_id] for e in entries for c in (e.clips or ())
                if c.clip_id in self.texts}

    def summary(self) -> dict[str, Any]:
        return {**self.described, "keys_matched": len(self.texts),
                "keys_unmatched": self.described["keys"] - len(self.texts), "clips": self.clips,
                "clips_without_text": self.clips_without_text, "texts_invalid": self.texts_invalid,
                "texts_truncated": self.texts_truncated, "max_text_chars": MAX_SUBTITLE_DB_CHARS}


def read_subtitle_db(path: str | Path, entries: Iterable[VideoEntry]) -> SubtitleDbTexts:
    """Look every given clip of `entries` up in the DB at `path` (ConfigError when it cannot be
    opened); returns the texts found and the counts."""
    with open_text_db(path, SUBTITLE_FIELDS) as db:
        found = SubtitleDbTexts(str(Path(path).resolve()), db.name, db.describe())
        for entry in entries:
            for clip in entry.clips or ():
                found.clips += 1
                text = found.texts.get(clip.clip_id) or db.lookup(clip.clip_id, MAX_SUBTITLE_DB_CHARS)
                if text is None:
                    found.clips_without_text += 1
                    continue
                found.texts[clip.clip_id] = text
                found.texts_invalid += text.text is None
                found.texts_truncated += text.truncated
        if found.clips and not found.texts:
            log.warning("no clip_id of the manifest is a key of %s: its keys look like %s", path, db.sample_keys())
    log.info("subtitle DB %s: texts for %d of %d clips, %d keys name no clip", found.name,
             found.clips - found.clips_without_text, found.clips, found.summary()["keys_unmatched"])
    return found


def text_from_db(texts: dict[str, ClipText], clip_id: str) -> str:
    """The clip's text, or StageError(stage="subtitles") saying why it has none. The reason does
    not repeat the clip_id (its error row has it), so the build summary tallies reasons."""
    found = texts.get(clip_id)
    if found is None:
        raise StageError(STAGE, "no text for this clip_id in the subtitle DB")
    if found.text is None:
        raise StageError(STAGE, f"the text of this clip_id in the subtitle DB is unusable: {found.reason}")
    return found.text
