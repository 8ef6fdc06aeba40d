"""Start or join Ray for a job, and leave it as found."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

log = logging.getLogger(__name__)

#: Ray (2.60 here) turns token authentication on for every new local cluster when RAY_AUTH_MODE is
#: unset, and says so in a WARNING from this logger on every start. We keep that default (any
#: local process could otherwise run code in the cluster) and say it once, in our words.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_RAY_AUTH_ENABLED_WARNING = "Token authentication is enabled for this Ray cluster"
AUTH_NOTE = ("Ray: token authentication is on for this local cluster (Ray's default; the token is in "
             "~/.ray/auth_token; RAY_AUTH_MODE=disabled opts out)")
_auth_note_said = False


def _drop_ray_auth_enabled_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_RAY_AUTH_ENABLED_WARNING)


def _say_auth_mode_once() -> None:
    """Replace Ray's token-auth warning by AUTH_NOTE, logged once per process (only when Ray
    would have warned: RAY_AUTH_MODE unset). A Ray that words or routes it differently just
    prints its own warning again."""
    global _auth_note_said
    logging.getLogger(_RAY_AUTH_LOGGER).addFilter(_drop_ray_auth_enabled_warning)  # idempotent
    if os.environ.get("RAY_AUTH_MODE") is None and not _auth_note_said:
        log.info(AUTH_NOTE)
        _auth_note_said = True


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
        _say_auth_mode_once()
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
