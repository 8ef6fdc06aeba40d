"""pipeline/fetch/ratelimit.py: the token bucket, alone and shared by real processes of one node."""

from __future__ import annotations

import multiprocessing
import time

from pipeline.fetch.ratelimit import HostRateLimiter, take


def test_a_bucket_gives_its_burst_at_once_then_one_token_per_interval():
    tokens, stamp = 2.0, 100.0
    waits = []
    for _ in range(4):  # four requests at the same instant, rate 2/s, burst 2
        tokens, stamp, wait_s = take(tokens, stamp, 100.0, rate=2.0, burst=2)
        waits.append(wait_s)
    assert waits == [0.0, 0.0, 0.5, 1.0]  # reserved in order: no caller polls
    tokens, stamp, wait_s = take(tokens, stamp, 110.0, rate=2.0, burst=2)  # a quiet spell refills to burst only
    assert wait_s == 0.0 and tokens == 1.0
    tokens, _, wait_s = take(0.0, 200.0, 150.0, rate=2.0, burst=2)  # a clock that went back refills nothing
    assert wait_s == 0.5


def _acquire_many(folder: str, host: str, count: int, queue) -> None:
    limiter = HostRateLimiter(rate_per_s=10.0, burst=1, folder=folder)
    for _ in range(count):
        limiter.acquire(host)
        queue.put((host, time.time()))


def test_processes_of_one_node_share_one_bucket_per_host(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_acquire_many, args=(str(tmp_path), host, 5, queue))
               for host in ("a.example", "a.example", "a.example", "b.example")]
    for worker in workers:
        worker.start()
    grants = [queue.get(timeout=60) for _ in range(20)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    times_a = sorted(t for host, t in grants if host == "a.example")
    times_b = sorted(t for host, t in grants if host == "b.example")
    assert len(times_a) == 15 and len(times_b) == 5
    # 15 requests to one host at 10/s (burst 1) need >= 1.4 s, whichever process made them ...
    assert times_a[-1] - times_a[0] >= 1.4 - 0.05
    gaps = [b - a for a, b in zip(times_a, times_a[1:])]
    assert sum(gaps) / len(gaps) >= 0.095
    # ... while the other host has its own bucket (its 5 requests need only >= 0.4 s).
    assert times_b[-1] - times_b[0] >= 0.4 - 0.05


def test_a_zero_rate_means_no_limit(tmp_path):
    limiter = HostRateLimiter(rate_per_s=0, burst=1, folder=tmp_path)
    started = time.monotonic()
    assert all(limiter.acquire("h") == 0.0 for _ in range(100))
    assert time.monotonic() - started < 1.0 and not list(tmp_path.iterdir())
