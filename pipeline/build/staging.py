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


@contextlib.contextmanager
def local_copy(path: str | None, allowed_protocols: tuple[str, ...], max_bytes: int) -> Iterator[str | None]:
    """Yield a local path for `path`: itself when local, else a temporary copy of the URI."""
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
        size = fs.size(remote_path)
    except FileNotFoundError:
        raise StageError(STAGE, "remote file not found", source=path) from None
    except Exception as exc:  # an unknown protocol, a missing driver, credentials, network
        raise StageError(STAGE, f"cannot open {protocol}:// source: {type(exc).__name__}: {exc}",
                         source=path) from None
    if size is not None and size > max_bytes:
        raise StageError(STAGE, f"remote file is {size} bytes, over max_source_bytes={max_bytes}", source=path)
    name = Path(remote_path).name
    local_name = sanitize_id(Path(name).stem) + "".join(c for c in Path(name).suffix if c.isalnum() or c == ".")
    with tempfile.TemporaryDirectory(prefix="vipstream_fetch_") as tmp:
        local = str(Path(tmp) / local_name)
        try:
            fs.get_file(remote_path, local)
        except Exception as exc:
            raise StageError(STAGE, f"copying the {protocol}:// source failed: {type(exc).__name__}: {exc}",
                             source=path) from None
        yield local
