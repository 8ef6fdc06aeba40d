"""The one error type pipeline stages raise; the shard runner turns it into an error row."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import pyarrow as pa

from vipstream.schema import ERROR_COLUMNS

#: errors.parquet of a build and of a captioner: one schema, so the two tables read alike.
ERROR_TABLE_SCHEMA = pa.schema([(c, pa.int64() if c == "line" else pa.string()) for c in ERROR_COLUMNS])


class StageError(Exception):
    """A failure of one stage on one input, carrying what the error table needs.

    Messages say what was expected and what was found ("span 62.0-58.0 s is reversed"), because
    they end up in errors.parquet, read by someone who cannot rerun our code in their head.
    """

    def __init__(self, stage: str, reason: str, *, video_id: str | None = None,
                 clip_id: str | None = None, source: str | None = None, line: int | None = None):
        super().__init__(f"[{stage}] {reason}")
        self.stage = stage
        self.reason = reason
        self.video_id = video_id
        self.clip_id = clip_id
        self.source = source
        self.line = line

    def to_row(self, **defaults: Any) -> "ErrorRow":
        """The error as a row, filling ids the raising stage did not know from `defaults`."""
        return ErrorRow(
            video_id=self.video_id if self.video_id is not None else defaults.get("video_id"),
            clip_id=self.clip_id if self.clip_id is not None else defaults.get("clip_id"),
            stage=self.stage,
            reason=self.reason,
            source=self.source if self.source is not None else defaults.get("source"),
            line=self.line if self.line is not None else defaults.get("line"),
        )


@dataclass(frozen=True)
class ErrorRow:
    """One row of errors.parquet (columns: vipstream.schema.ERROR_COLUMNS)."""

    video_id: str | None
    clip_id: str | None
    stage: str
    reason: str
    source: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def failure_counts(errors: Iterable[dict[str, Any]], top: int = 10) -> tuple[dict[str, int], dict[str, int]]:
    """Job summaries' failure tallies: ({stage: n}, {"stage: reason" (first 80 chars): n}, top only)."""
    errors = list(errors)
    by_stage = Counter(e["stage"] for e in errors)
    by_reason = Counter(f"{e['stage']}: {e['reason'][:80]}" for e in errors)
    return dict(by_stage), dict(by_reason.most_common(top))
