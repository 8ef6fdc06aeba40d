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
    """Publish `text` at `path` atomically; on failure (full disk, quota) no temporary is left."""
    tmp = temporary_path_for(path)
    try:
        tmp.write_text(text)
        fsync_and_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable(path: Path) -> None:
    """Raise OSError unless a file can be published at `path` (its folder created if missing): a
    job checks this before its work, so unwritable storage fails in a second, not after an hour."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder, expected a file path", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    probe = temporary_path_for(path)
    probe.write_bytes(b"")
    probe.unlink()
