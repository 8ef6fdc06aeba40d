"""Atomic file publication, shared by `pipeline/` and `train/`: write a hidden temporary beside
the target, fsync, `os.replace`.

Readers (and a resumed job) see either the old file or the whole new one. Temporaries are hidden
and end in `.tmp` (`TMP_GLOB`), so no `*.tar` / `*.json` / `*.parquet` pattern (ours, a user's
glob, pathlib's, which also matches dot files) ever picks up a half-written file, and a rerun can
sweep what a killed run left. Imports nothing from the project.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

TMP_GLOB = ".*.tmp"


def temporary_path_for(final: Path) -> Path:
    """A hidden sibling of `final` to write into, then `os.replace` onto `final`."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")


def fsync_and_replace(tmp: Path, final: Path) -> None:
    """Flush `tmp` to disk, then rename it onto `final` (atomic on one filesystem)."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def write_text_atomic(path: Path, text: str) -> None:
    """Publish `text` at `path` atomically."""
    tmp = temporary_path_for(path)
    tmp.write_text(text)
    fsync_and_replace(tmp, path)
