"""What a loader worker skipped: counts by reason (they reach the trainer through each batch) and
rate-limited warnings (issue 15.2).

A corpus where every clip fails the same way must not print one warning per clip, round after
round (every mp4 member a PNG printed 130 KB/s): each reason is logged in full for its first
`in_full` occurrences, then as one line per reason per `every_s` seconds with the count since
the last such line. The counts themselves are never limited: they are in every batch's `counts`
and in the trainer's `skipped` metrics.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Callable

log = logging.getLogger(__name__)


class SkipWarnings:
    """Per-worker warning limiter: the first `in_full` warnings of each reason in full, then a
    count per reason at most every `every_s` seconds (emitted with the next warning after the
    interval, or by `flush`)."""

    def __init__(self, in_full: int = 3, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.in_full, self.every_s, self.clock = in_full, every_s, clock
        self.seen: collections.Counter[str] = collections.Counter()
        self.held: collections.Counter[str] = collections.Counter()  # not logged since the last summary
        self.last_summary = clock()

    def warn(self, reason: str, message: str, *args: object) -> None:
        self.seen[reason] += 1
        if self.seen[reason] <= self.in_full:
            suffix = (f" (the first {self.in_full} '{reason}' skips are shown in full, then counted every "
                      f"{self.every_s:g} s)" if self.seen[reason] == self.in_full else "")
            log.warning(message + suffix, *args)
        else:
            self.held[reason] += 1
        if self.held and self.clock() - self.last_summary >= self.every_s:
            self.flush()

    def flush(self) -> None:
        """Log the held counts (one line per reason) and start a new interval."""
        now = self.clock()
        for reason, count in sorted(self.held.items()):
            log.warning("%d more '%s' skips in the last %.0f s (%d in all in this loader worker)", count, reason,
                        now - self.last_summary, self.seen[reason])
        self.held.clear()
        self.last_summary = now


class SkipCounts(collections.Counter):
    """Per-worker tally of samples skipped or patched, by reason; `take()` empties it.

    Reasons: shard_open_error, shard_read_error, missing_member, forbidden_member, bad_json,
    oversized_json, corrupt_video, missing_caption, caption_fallback, subtitle_fallback,
    missing_text, frame_index_mismatch, bad_sidecar, caption_cut.

    `skip(reason, message, *args)` counts and warns through `warnings` (rate-limited).
    """

    def __init__(self, *args, warnings: SkipWarnings | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.warnings = warnings if warnings is not None else SkipWarnings()

    def skip(self, reason: str, message: str | None = None, *args: object) -> None:
        self[reason] += 1
        if message is not None:
            self.warnings.warn(reason, message, *args)

    def take(self) -> dict[str, int]:
        counts = {k: int(v) for k, v in self.items() if v}
        self.clear()
        return counts
