"""Reading samples out of shard tars safely: only `mp4` and `json` members, our own decoders.

webdataset's `.decode()` would unpickle `.pyd`/`.pickle`/`.pkl` members and `torch.load` `.pth`
ones (issue 7), so it is never called. Tar members are grouped into samples by webdataset's
`group_by_keys` with the shared key rule (`vipstream.schema.split_member_name`, the caption job's
too); we read the bytes of `mp4`, `json` and forbidden members only (the last just to see that
they are there), refuse any sample carrying a `FORBIDDEN_EXTS` member, and parse the json
ourselves. A json member larger than `schema.MAX_META_JSON_BYTES` is never read (its size is in
the tar header): its sample is skipped (`oversized_json`), as a json member is the one place a
hostile shard could hand the tokenizer megabytes of text.

A sample or shard that fails is counted in the worker's `SkipCounts` and skipped, never raised:
one bad clip must not end a week-long run. The counts reach the trainer through each batch.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
from typing import Any, Iterable, Iterator
from urllib.parse import urlparse

from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys

from train.data.skips import SkipCounts
from vipstream.schema import FORBIDDEN_EXTS, MAX_META_JSON_BYTES, META_EXT, VIDEO_EXT, split_member_name

log = logging.getLogger(__name__)

_READ_EXTS = frozenset({VIDEO_EXT, META_EXT}) | FORBIDDEN_EXTS
#: webdataset's tar_file_iterator skips these (`__key__` style metadata members); so do we.
_META_MEMBER = re.compile(r"__[^/]*__($|/)")


class Oversized:
    """Stands for a member that was not read because it is larger than its bound."""

    def __init__(self, size: int) -> None:
        self.size = size


def _last_ext(name: str) -> str:
    """'key.pickle' -> 'pickle', a sample's suffix 'pickle' -> 'pickle', 'key.x.PTH' -> 'pth'."""
    return name.rsplit(".", 1)[-1].lower()


def _selected(member_name: str) -> bool:
    """Which tar members are read at all: the two we decode and the forbidden ones."""
    return _last_ext(member_name) in _READ_EXTS


def open_shard(url: str):
    """A binary stream of a shard: local file, `pipe:` command, http(s) via curl, else fsspec."""
    scheme = urlparse(url).scheme if "://" in url or url.startswith("pipe:") else ""
    if scheme in ("", "file", "pipe", "http", "https"):
        return gopen(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


def read_shard(url: str, counts: SkipCounts) -> Iterator[dict[str, Any]]:
    """Raw samples {__key__, __url__, ext: bytes, ...} of one shard, in tar order.

    A shard that cannot be opened, or whose tar breaks midway, is logged and counted; the
    samples read before the break are kept.
    """
    try:
        stream = open_shard(url)
    except Exception as exc:  # any opener error (missing file, failed pipe, auth) skips the shard
        counts.skip("shard_open_error", "skipping shard %s: cannot open it: %s", url, exc)
        return

    def on_tar_error(exc: BaseException) -> bool:
        counts.skip("shard_read_error", "shard %s: tar read error, rest of the shard skipped: %s", url, exc)
        return False  # stop this shard

    try:
        yield from group_by_keys(tar_members(stream, url, on_tar_error), keys=split_member_name,
                                 handler=on_tar_error)
    finally:
        stream.close()


def tar_members(stream, url: str, on_error) -> Iterator[dict[str, Any]]:
    """{fname, data, __url__} of the selected regular members, in tar order (webdataset's
    tar_file_expander, plus the size bound: a json member over MAX_META_JSON_BYTES is skipped
    over unread and stands as an `Oversized`). A tar error calls `on_error` and ends the shard."""
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")
        for member in tar:
            if not member.isreg() or _META_MEMBER.match(member.name) or not _selected(member.name):
                continue
            if _last_ext(member.name) == META_EXT and member.size > MAX_META_JSON_BYTES:
                data: Any = Oversized(member.size)
            else:
                data = tar.extractfile(member).read()
            yield {"fname": member.name, "data": data, "__url__": url}
            tar.members = []  # stream mode: do not keep every header of the shard
    except Exception as exc:  # a truncated or corrupt tar; the members read so far are kept
        on_error(exc)


def select_members(raw: dict[str, Any], counts: SkipCounts) -> dict[str, Any] | None:
    """A raw sample -> {key, url, mp4: bytes, meta: dict}, or None (counted) when it carries a
    forbidden member, lacks `mp4` or `json`, or its json is not an object."""
    exts = {_last_ext(name) for name in raw if not name.startswith("__")}
    if exts & FORBIDDEN_EXTS:
        counts.skip("forbidden_member", "refusing sample %s of %s: it carries %s members (never unpickled)",
                    raw.get("__key__"), raw.get("__url__"), sorted(exts & FORBIDDEN_EXTS))
        return None
    video, meta_bytes = raw.get(VIDEO_EXT), raw.get(META_EXT)
    if isinstance(meta_bytes, Oversized):
        counts.skip("oversized_json", "skipping sample %s of %s: its json member is %d bytes, over the %d "
                    "bytes a clip's json can need (schema.MAX_META_JSON_BYTES); not read", raw.get("__key__"),
                    raw.get("__url__"), meta_bytes.size, MAX_META_JSON_BYTES)
        return None
    if not video or meta_bytes is None:
        counts["missing_member"] += 1
        return None
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        counts["bad_json"] += 1
        return None
    if not isinstance(meta, dict):
        counts["bad_json"] += 1
        return None
    return {"key": raw["__key__"], "url": raw["__url__"], "mp4": video, "meta": meta}


def read_samples(shards: Iterable[dict[str, Any]], counts: SkipCounts) -> Iterator[dict[str, Any]]:
    """Stage: shard dicts {url, epoch} -> selected samples {key, url, epoch, mp4, meta}."""
    for shard in shards:
        for raw in read_shard(shard["url"], counts):
            sample = select_members(raw, counts)
            if sample is not None:
                sample["epoch"] = shard["epoch"]
                yield sample
