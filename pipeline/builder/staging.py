"""Remote sources: copy a manifest's fsspec URI (s3://, gs://, hdfs://, ...) to a local temp file.

ffmpeg only ever reads local files (DESIGN.md section 6), so a source on object storage is
staged first, inside the shard task, and deleted when its clips are cut. Which protocols may be
fetched is configured (`remote_protocols`); http(s) is off by default, since a manifest from the
web could otherwise make workers fetch arbitrary URLs.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from pipeline.errors import StageError
from vipstream.schema import sanitize_id

STAGE = "fetch"


_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def uri_protocol(path: str) -> str | None:
    """"s3" for "s3://bucket/key", None for a plain local path."""
    match = _URI.match(path)
    return match.group(1).lower() if match else None


#: Remote sources are copied in chunks of this size; the copy checks between chunks whether its
#: deadline has passed, so an abandoned copy stops writing within one chunk.
_CHUNK_BYTES = 8 * 1024 * 1024


@contextlib.contextmanager
def local_copy(path: str | None, allowed_protocols: tuple[str, ...], max_bytes: int,
               timeout_s: float | None = None) -> Iterator[str | None]:
    """Yield a local path for `path`: itself when local, else a temporary copy of the URI.

    The copy (size check included) must finish within `timeout_s` seconds (None: no limit): an
    object store that stalls mid-read would otherwise hold the shard task forever. It runs in a
    daemon thread the caller stops waiting for at the deadline (a read blocked in a driver cannot
    be interrupted from Python); the thread stops at its next chunk and its partial file goes
    with the temporary folder. Every failure is a StageError(stage="fetch") with its reason.
    """
    protocol = uri_protocol(path) if path else None
    if protocol is None:
        yield path
        return
    if protocol not in allowed_protocols:
        raise StageError(STAGE, f"protocol {protocol!r} is not allowed for sources (remote_protocols = "
                                f"{','.join(allowed_protocols) or 'none'})", source=path)
    try:
        import fsspec

        fs, remote_path = fsspec.core.url_to_fs(path)
    except Exception as exc:  # an unknown protocol, a missing driver
        raise StageError(STAGE, f"cannot open {protocol}:// source: {type(exc).__name__}: {exc}",
                         source=path) from None
    name = Path(remote_path).name
    local_name = sanitize_id(Path(name).stem) + "".join(c for c in Path(name).suffix if c.isalnum() or c == ".")
    with tempfile.TemporaryDirectory(prefix="vipstream_fetch_") as tmp:
        local = str(Path(tmp) / local_name)
        outcome: list[BaseException | None] = []
        stop = threading.Event()
        worker = threading.Thread(target=_copy_into, args=(fs, remote_path, local, max_bytes, stop, outcome),
                                  name=f"fetch {name}", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            stop.set()
            raise StageError(STAGE, f"copying the {protocol}:// source did not finish within "
                                    f"source_fetch_timeout_s={timeout_s:g} s (a stalled or too slow store)",
                             source=path)
        error = outcome[0] if outcome else None
        if isinstance(error, StageError):
            raise StageError(STAGE, error.reason, source=path)
        if isinstance(error, FileNotFoundError):
            raise StageError(STAGE, "remote file not found", source=path)
        if error is not None:  # credentials, network, a broken driver
            raise StageError(STAGE, f"copying the {protocol}:// source failed: {type(error).__name__}: {error}",
                             source=path)
        yield local


def _copy_into(fs, remote_path: str, local: str, max_bytes: int, stop: threading.Event,
               outcome: list[BaseException | None]) -> None:
    """Copy `remote_path` of `fs` to `local` in chunks (the body of local_copy's fetch thread);
    the result (None or the exception) goes to `outcome`. Returns early once `stop` is set."""
    try:
        size = fs.size(remote_path)
        if size is not None and size > max_bytes:
            raise StageError(STAGE, f"remote file is {size} bytes, over max_source_bytes={max_bytes}")
        copied = 0
        with fs.open(remote_path, "rb") as source, open(local, "wb") as target:
            while not stop.is_set():
                chunk = source.read(_CHUNK_BYTES)
                if not chunk:
                    break
                copied += len(chunk)
                if copied > max_bytes:  # the size was unknown, or the object grew
                    raise StageError(STAGE, f"remote file is over max_source_bytes={max_bytes}")
                target.write(chunk)
        outcome.append(None)
    except BaseException as exc:  # handed to the caller, which raises it as a StageError
        outcome.append(exc)
