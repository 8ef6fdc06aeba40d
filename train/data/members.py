"""Reading samples out of shard tars safely: only `mp4` and `json` members, our own decoders.

webdataset's `.decode()` would unpickle `.pyd`/`.pickle`/`.pkl` members and `torch.load` `.pth`
ones (issue 7), so it is never called. Tar members are grouped by webdataset's own iterators;
we read the bytes of `mp4`, `json` and forbidden members only (the last just to see that they are
there), refuse any sample carrying a `FORBIDDEN_EXTS` member, and parse the json ourselves.

A sample or shard that fails is counted in the worker's `SkipCounts` and skipped, never raised:
one bad clip must not end a week-long run. The counts reach the trainer through each batch.
"""

from __future__ import annotations

import collections
import json
import logging
from typing import Any, Iterable, Iterator
from urllib.parse import urlparse

from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from vipstream.schema import FORBIDDEN_EXTS, META_EXT, VIDEO_EXT

log = logging.getLogger(__name__)

_READ_EXTS = frozenset({VIDEO_EXT, META_EXT}) | FORBIDDEN_EXTS


class SkipCounts(collections.Counter):
    """Per-worker tally of samples skipped or patched, by reason; `take()` empties it.

    Reasons: shard_open_error, shard_read_error, missing_member, forbidden_member, bad_json,
    corrupt_video, missing_caption, caption_fallback, subtitle_fallback, missing_text,
    frame_index_mismatch.
    """

    def take(self) -> dict[str, int]:
        counts = {k: int(v) for k, v in self.items() if v}
        self.clear()
        return counts


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
        counts["shard_open_error"] += 1
        log.warning("skipping shard %s: cannot open it: %s", url, exc)
        return

    def on_tar_error(exc: BaseException) -> bool:
        counts["shard_read_error"] += 1
        log.warning("shard %s: tar read error, rest of the shard skipped: %s", url, exc)
        return False  # stop this shard

    try:
        files = tar_file_expander([{"url": url, "stream": stream}], handler=on_tar_error,
                                  select_files=_selected)
        yield from group_by_keys(files, handler=on_tar_error)
    finally:
        stream.close()


def select_members(raw: dict[str, Any], counts: SkipCounts) -> dict[str, Any] | None:
    """A raw sample -> {key, url, mp4: bytes, meta: dict}, or None (counted) when it carries a
    forbidden member, lacks `mp4` or `json`, or its json is not an object."""
    exts = {_last_ext(name) for name in raw if not name.startswith("__")}
    if exts & FORBIDDEN_EXTS:
        counts["forbidden_member"] += 1
        log.warning("refusing sample %s of %s: it carries %s members (never unpickled)",
                    raw.get("__key__"), raw.get("__url__"), sorted(exts & FORBIDDEN_EXTS))
        return None
    video, meta_bytes = raw.get(VIDEO_EXT), raw.get(META_EXT)
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
