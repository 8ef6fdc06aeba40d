"""One writer per output: an `fcntl.flock` on a lock file, held for the whole job.

Two builds into one OUT (or two caption runs under one captioner id) break each other: the
second run's clean-up of stale temporaries deletes the first run's files in progress. So a
writing job takes an exclusive, non-blocking flock first, before any clean-up, and a second
run is refused at once with the holder's host, pid and start time. The kernel drops a flock
when its process dies (SIGKILL included), so a killed run never leaves a stale lock: the file
stays, with the last holder's details, but locking it succeeds again. Read-only commands
(`vipstream inspect`) take no lock.

The lock file is hidden (`.vipstream.lock` in OUT, `.lock` in a captioner's folder), so no
`*.tar` / `*.parquet` / `*.json` pattern ever picks it up. flock is per open file: a second
`output_lock` on the same file in the same process is refused too, which is what we want.
On NFS, Linux maps flock to POSIX byte-range locks, which NFSv4 serves across machines.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

from vipstream.errors import JobError

#: The build's lock, in OUT; a caption run locks `OUT/captions/{id}/CAPTION_LOCK_FILENAME`.
BUILD_LOCK_FILENAME = ".vipstream.lock"
CAPTION_LOCK_FILENAME = ".lock"
#: `vipstream transcribe` locks its ASR folder with the same hidden file name as a build's OUT.
TRANSCRIBE_LOCK_FILENAME = BUILD_LOCK_FILENAME


#: Descriptors of the locks this process holds. A child made by fork() (a DataLoader worker)
#: inherits them, and a flock lives until its last descriptor closes: the lock would outlive a
#: SIGKILLed holder for as long as its workers take to notice. So in a forked child they are
#: pointed at /dev/null (the number stays valid for the file object that owns it); the lock stays
#: the parent's alone. A child given the descriptor on purpose (subprocess pass_fds: exec, no
#: Python fork hooks) keeps it.
_HELD_FDS: set[int] = set()


def _drop_inherited_locks() -> None:
    if not _HELD_FDS:
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in _HELD_FDS:
        os.dup2(null, fd)
    os.close(null)
    _HELD_FDS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class OutputLockedError(JobError):
    """Another live process is writing this output. The CLI exits 1, as for any job that could
    not run to the end; rerunning once the holder has finished (or died) proceeds."""


def _holder_text(handle) -> str:
    handle.seek(0)
    raw = handle.read(4096)
    try:
        holder = json.loads(raw)
        return (f"{holder.get('job', 'a vipstream job')} on host {holder.get('host')}, "
                f"pid {holder.get('pid')}, started {holder.get('started')}")
    except (ValueError, AttributeError):
        return "a vipstream job that has not yet recorded itself (it is just starting)"


@contextlib.contextmanager
def output_lock(path: Path, job: str) -> Iterator[IO[str]]:
    """Hold an exclusive flock on `path` (created if missing) while the block runs; yields the
    open lock file (a child process that inherits its descriptor keeps the lock held too).

    Raises OutputLockedError naming the holder if another process (or another open of the same
    file) holds it. `job` (e.g. "vipstream build") is written into the file for that message.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise OutputLockedError(
                f"{path.parent} is in use by {_holder_text(handle)} (lock file {path}); "
                f"wait for it to finish, or stop it, then rerun") from None
        _HELD_FDS.add(handle.fileno())
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"job": job, "host": socket.gethostname(), "pid": os.getpid(),
                                     "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
            handle.flush()
            yield handle
        finally:
            _HELD_FDS.discard(handle.fileno())
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
