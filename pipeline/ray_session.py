"""Start or join Ray for a job, and leave it as found."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Join `address` (a running cluster, or "auto"), else start a local Ray without dashboard.

    A Ray already initialised by the caller (a notebook, a test, a benchmark) is reused and left
    running; one this function started is shut down on exit.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    else:
        # address="local": always a fresh local Ray, never a cluster that `ray start` or
        # ray.cluster_utils left registered in /tmp/ray (plain ray.init() would join it).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
