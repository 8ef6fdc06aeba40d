"""A per-host token bucket shared by every task of a node: node-local files under a flock.

Why files and not a named Ray actor per node: every fetch task is its own Ray worker process,
and a flock-guarded file in a node-local folder is shared by exactly the processes of one node
by construction (no actor to place with node affinity, to find by name, to keep alive when the
task that created it ends, or to restart when it dies), costs a few system calls per request
(nothing next to a download), survives task retries and worker restarts, and needs no Ray at
all, so a test shares it between plain processes. The kernel drops a flock when its holder
dies, so a killed task never wedges the others.

A bucket allows `burst` requests at once and `rate` per second after that. `take` is a
reservation: a caller that finds no token takes one on credit (the bucket goes negative) and
sleeps until its turn, so concurrent callers queue in order without polling.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from pathlib import Path

from vipstream.schema import sanitize_id


def take(tokens: float, stamp: float, now: float, rate: float, burst: float) -> tuple[float, float, float]:
    """One request against a bucket holding `tokens` at time `stamp` -> (tokens, stamp, wait_s).

    Refills at `rate` tokens/s up to `burst` (a clock that went backwards refills nothing),
    takes one token, and says how long the caller must wait for it (0 when it was there).
    """
    tokens = min(float(burst), tokens + max(now - stamp, 0.0) * rate)
    tokens -= 1.0
    wait_s = 0.0 if tokens >= 0 else -tokens / rate
    return tokens, now, wait_s


def default_rate_limit_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"vipstream-fetch-rate-{os.getuid()}"


class HostRateLimiter:
    """`acquire(host)` blocks until a request to `host` is allowed on this node.

    rate_per_s <= 0 disables the limit. All processes that use the same `folder` share the
    buckets; keep it node-local (the default, under the system temp folder).
    """

    def __init__(self, rate_per_s: float, burst: int, folder: str | Path | None = None):
        self.rate = float(rate_per_s)
        self.burst = max(int(burst), 1)
        self.folder = Path(folder) if folder else default_rate_limit_dir()

    def _bucket_path(self, host: str) -> Path:
        digest = hashlib.sha1(host.encode("utf-8")).hexdigest()[:8]
        return self.folder / f"{sanitize_id(host)[:60]}-{digest}.bucket"

    def reserve(self, host: str) -> float:
        """Take a token for `host` (on credit if none is left); returns the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._bucket_path(host), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 64, 0).decode("ascii", "replace").split()
            try:
                tokens, stamp = float(raw[0]), float(raw[1])
            except (IndexError, ValueError):  # a new (or torn) bucket starts full
                tokens, stamp = float(self.burst), time.time()
            tokens, stamp, wait_s = take(tokens, stamp, time.time(), self.rate, self.burst)
            record = f"{tokens:.6f} {stamp:.6f}".encode("ascii").ljust(64)
            os.pwrite(fd, record, 0)
        finally:
            os.close(fd)  # closing drops the flock
        return wait_s

    def acquire(self, host: str) -> float:
        """Wait for a request slot to `host`; returns the seconds waited."""
        wait_s = self.reserve(host)
        if wait_s > 0:
            time.sleep(wait_s)
        return wait_s
