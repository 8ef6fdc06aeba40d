"""One training run per run folder: `RUN/.vipstream.lock` (vipstream/output_lock.py), held for the whole run.

Two runs on one `--output` break each other: each prunes and replaces the other's checkpoints and
truncates its metrics, and the checkpoint one prints may hold the other's weights. So a run takes
the same kind of lock as `vipstream build`, before it touches the folder, and a second run is
refused at once (exit 1) naming the holder. The kernel drops the lock when its holder dies
(SIGKILL included), so a killed run never leaves a stale lock and `--resume` just works.

Who holds it (exactly one process per run):
- `vipstream train`, whatever the launcher, takes it before its preflight and keeps it until the
  launcher returns. With `--nproc` the torchrun process inherits the lock's file descriptor, so the
  lock stays held while torchrun lives, also if the launcher alone is killed; with `--launcher ray`
  the driver holds it while Ray Train runs (the workers do not take it).
- `python -m train` under a user's own torchrun: rank 0 takes it (on a shared run folder, NFSv4
  serves flock across nodes), the other ranks do not. Under `vipstream train --nproc` rank 0 finds
  it held by its launcher (the pid in VIPSTREAM_RUN_LOCK_HOLDER, one of its ancestors) and goes on.
- `train.loop.run_training` called from Python: rank 0 takes it unless its caller holds it (`lock=False`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import IO, Iterator

from vipstream.output_lock import BUILD_LOCK_FILENAME, OutputLockedError, output_lock

log = logging.getLogger(__name__)

#: RUN/.vipstream.lock, the name a build's OUT uses: one kind of lock for every vipstream output.
RUN_LOCK_FILENAME = BUILD_LOCK_FILENAME
#: Set by `vipstream train --nproc` for its torchrun: the pid of the launcher holding the lock.
HOLDER_ENV = "VIPSTREAM_RUN_LOCK_HOLDER"
JOB_NAME = "vipstream train"


def run_lock_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RUN_LOCK_FILENAME


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[IO[str]]:
    """Hold RUN/.vipstream.lock while the block runs (the folder is created if missing); yields the
    lock file, whose descriptor a child process may inherit to keep the lock held.

    Raises OutputLockedError (a JobError: exit 1) naming the holder when another run holds it."""
    with output_lock(run_lock_path(run_dir), JOB_NAME) as handle:
        yield handle


def holder_env() -> dict[str, str]:
    """Environment entries telling the launched ranks that this process (their ancestor) holds the lock."""
    return {HOLDER_ENV: str(os.getpid())}


def rank_lock(run_dir: str | Path, rank: int) -> contextlib.ExitStack:
    """What one `python -m train` process holds for the run: the run lock on rank 0, unless a
    launcher above it already holds it; nothing on the other ranks. Raises OutputLockedError now
    (not when the block is entered) when another run holds it."""
    stack = contextlib.ExitStack()
    if rank != 0:
        return stack
    try:
        stack.enter_context(run_lock(run_dir))
    except OutputLockedError:
        if not held_by_my_launcher(run_dir):
            raise
        log.debug("%s is held by the launcher (pid %s)", run_lock_path(run_dir), os.environ[HOLDER_ENV])
    return stack


def held_by_my_launcher(run_dir: str | Path) -> bool:
    """Whether the lock's recorded holder is the launcher named in HOLDER_ENV and an ancestor of this process."""
    launcher = os.environ.get(HOLDER_ENV, "")
    if not launcher.isdigit():
        return False
    try:
        holder = json.loads(run_lock_path(run_dir).read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return False
    return holder == int(launcher) and _is_ancestor(int(launcher))


def _is_ancestor(pid: int) -> bool:
    """Whether `pid` is this process's parent, grandparent, ... (Linux /proc)."""
    current = os.getppid()
    while current > 1:
        if current == pid:
            return True
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            return False
        current = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the parenthesised name
    return False
