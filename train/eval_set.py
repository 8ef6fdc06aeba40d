"""The set a retrieval evaluation encoded, checked against the build's OUT/manifest.parquet.

A retrieval number means something only over the set the user built. The loader skips what it
cannot read, as training must, so undecodable clips, a truncated shard (its tail unreadable) or a
shard copied twice (every key twice) would silently change the test set: 4 of 6 videos, or 12 of
6, and an R@1 that is not the set's. So `evaluate_model` hands the keys it encoded to
`check_encoded_set`:

- a key encoded twice, or one the manifest does not list, is refused (`EvalSetError`, a
  ValueError: the input is broken, `vipstream eval` exits 2);
- a video the manifest lists that was not encoded is an error (`MissingVideosError`, a JobError:
  exit 1) unless `allow_missing`, when the result says how many videos and captions were dropped.
  The dropped videos' captions are counted from their json members, read straight from the tar
  (json only, never decoded by webdataset); those whose json cannot be read either (past the cut of
  a truncated shard) are counted as videos of unknown caption count.

A data spec that is not a build OUT folder (a brace pattern, a list of tars) has no manifest to
check against: a warning says so.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vipstream.errors import JobError
from vipstream.schema import CLIP_CAPTIONS_FIELD, MANIFEST_FILENAME, META_EXT, SHARDS_DIRNAME

log = logging.getLogger(__name__)

#: A json member larger than this is not a clip's metadata (the builder's are < 10 KB); not read.
MAX_META_BYTES = 1 << 20
#: Keys named in a message, at most.
SHOWN_KEYS = 5


class EvalSetError(ValueError):
    """The encoded set cannot be the one the build wrote (duplicate or unknown keys, no manifest)."""


class MissingVideosError(JobError):
    """Videos of the manifest were not encoded (unreadable); `--allow-missing` reports them instead."""


@dataclass(frozen=True)
class SetCheck:
    """What the evaluation covered, against the manifest (JSON-serialisable via `as_dict`)."""

    checked: bool  # False: no manifest to check against (the spec is not an OUT folder)
    expected_videos: int | None
    dropped_videos: int = 0
    dropped_captions: int = 0  # captions of the dropped videos whose json could be read
    dropped_videos_unknown_captions: int = 0  # dropped videos whose json could not be read either
    dropped_keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shown(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def manifest_keys(data: str | Path) -> dict[str, str] | None:
    """key -> shard stem of every clip OUT/manifest.parquet lists; None when `data` is no local
    folder (nothing to check against); EvalSetError for an OUT folder without a manifest."""
    import pyarrow.parquet as pq

    folder = Path(str(data))
    if "://" in str(data) or str(data).startswith("pipe:") or not folder.is_dir():
        return None
    path = folder / MANIFEST_FILENAME
    if not path.is_file():
        raise EvalSetError(f"{folder}: no {MANIFEST_FILENAME}, so the set cannot be checked; expected a finished "
                           f"build output (rerun the same `vipstream build` to finish it)")
    rows = pq.read_table(path, columns=["key", "shard"]).to_pylist()
    repeated = sorted(k for k, n in Counter(r["key"] for r in rows).items() if n > 1)
    if repeated:
        raise EvalSetError(f"{path} lists keys more than once: {_shown(repeated)}")
    return {r["key"]: r["shard"] for r in rows}


def check_encoded_set(data: str | Path, encoded_keys: list[str], *, allow_missing: bool) -> SetCheck:
    """Compare the keys an evaluation encoded (in order, one per video) with the manifest."""
    expected = manifest_keys(data)
    if expected is None:
        log.warning("%s is not a build OUT folder: the evaluated set (%d videos) is not checked against a "
                    "manifest", data, len(encoded_keys))
        return SetCheck(checked=False, expected_videos=None)
    twice = sorted(k for k, n in Counter(encoded_keys).items() if n > 1)
    if twice:
        raise EvalSetError(f"{data}: {len(twice)} videos were read more than once ({_shown(twice)}): a shard copied "
                           f"or built twice? {len(encoded_keys)} videos read, the manifest lists {len(expected)}; "
                           f"remove the extra shard (and its stats file) from {Path(data) / SHARDS_DIRNAME}")
    unknown = sorted(set(encoded_keys) - set(expected))
    if unknown:
        raise EvalSetError(f"{data}: {len(unknown)} videos read are not in {MANIFEST_FILENAME} ({_shown(unknown)}): "
                           f"a shard of another build in {Path(data) / SHARDS_DIRNAME}?")
    missing = sorted(set(expected) - set(encoded_keys))
    if missing and not allow_missing:
        raise MissingVideosError(
            f"{data}: {len(missing)} of the {len(expected)} videos of {MANIFEST_FILENAME} could not be read "
            f"({_shown(missing)}; the loader's warnings above say why: undecodable clip, truncated shard, ...). "
            f"Metrics over another set than the one built are not that set's: rebuild the output, or pass "
            f"--allow-missing to evaluate the rest and report what was dropped")
    captions, unknown_count = _captions_of(Path(data), {k: expected[k] for k in missing})
    if missing:
        log.warning("%s: %d of %d videos dropped (--allow-missing), with %d captions%s: %s", data, len(missing),
                    len(expected), captions,
                    f" (+ those of {unknown_count} videos whose json is unreadable)" if unknown_count else "",
                    _shown(missing))
    return SetCheck(checked=True, expected_videos=len(expected), dropped_videos=len(missing),
                    dropped_captions=captions, dropped_videos_unknown_captions=unknown_count, dropped_keys=missing)


def _captions_of(out_dir: Path, keys_by_shard: dict[str, str]) -> tuple[int, int]:
    """(captions of the given clips whose json member reads, number of clips whose json does not)."""
    from webdataset.tariterators import base_plus_ext

    wanted: dict[str, set[str]] = defaultdict(set)
    for key, shard in keys_by_shard.items():
        wanted[shard].add(key)
    counted, found = 0, set()
    for shard, keys in wanted.items():
        try:
            with tarfile.open(out_dir / SHARDS_DIRNAME / f"{shard}.tar", mode="r|") as tar:  # a stream: stops at a cut
                for member in tar:
                    key, ext = base_plus_ext(member.name) or (None, None)
                    if key in keys and ext == META_EXT and member.isfile() and member.size <= MAX_META_BYTES:
                        try:
                            captions = json.loads(tar.extractfile(member).read().decode("utf-8"))[CLIP_CAPTIONS_FIELD]
                        except (ValueError, KeyError, TypeError):
                            continue
                        if isinstance(captions, list):
                            counted += len(captions)
                            found.add(key)
        except (OSError, tarfile.TarError, EOFError):
            pass  # the rest of this shard is unreadable: its keys stay unknown
    return counted, len(keys_by_shard) - len(found)
