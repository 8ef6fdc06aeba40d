"""Shard list resolution: what `TrainDataConfig.shards` names -> an ordered list of shard URLs,
and where each shard's caption sidecar lives.

Accepted forms (DESIGN.md section 4):
- a build's OUT folder (or its `shards/` folder), local or fsspec (`s3://bucket/out`): its
  finished shards only, i.e. the tars that have their `.stats.json` commit marker;
- a brace pattern `out/shards/{000000..000099}.tar` (webdataset's form);
- a comma-separated list of any of these (commas inside braces belong to the pattern);
- single tar URLs: local paths, fsspec URLs, `pipe:` commands.

Resolution runs once, in the process that calls `make_train_loader`; workers get the list.
"""

from __future__ import annotations

import logging
import posixpath
from urllib.parse import urlparse

import braceexpand

from vipstream.config import ConfigError
from vipstream.schema import (CAPTION_SIDECAR_SUFFIX, CAPTIONS_DIRNAME, SHARD_STATS_SUFFIX, SHARD_TAR_NAME,
                              SHARDS_DIRNAME, sanitize_id)

log = logging.getLogger(__name__)


def split_spec(spec: str) -> list[str]:
    """Split a comma-separated list at top-level commas (not those of `{a,b}` brace patterns)."""
    parts, depth, current = [], 0, []
    for char in spec:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _is_pipe(url: str) -> bool:
    return url.startswith("pipe:")


def _filesystem(url: str):
    """(fsspec filesystem, path within it) for a local path or any fsspec URL."""
    import fsspec.core

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def _join(base: str, *names: str) -> str:
    """Join URL-or-path components with '/', keeping a scheme (s3://b/out + shards)."""
    return posixpath.join(base.rstrip("/"), *names)


def finished_shards_of(folder: str) -> list[str]:
    """The finished shard tars of an OUT folder (or of its shards/ folder), sorted by index.

    A tar without its stats file is unfinished (still being written, or left by a killed
    build): it is left out with a warning, as the caption job does.
    """
    fs, path = _filesystem(folder)
    shards_path = _join(path, SHARDS_DIRNAME)
    if not fs.isdir(shards_path):
        shards_path = path
    names = {posixpath.basename(p.rstrip("/")) for p in fs.ls(shards_path, detail=False)}
    tars = sorted(n for n in names if SHARD_TAR_NAME.match(n))
    finished = [n for n in tars if SHARD_TAR_NAME.match(n).group(1) + SHARD_STATS_SUFFIX in names]
    unfinished = len(tars) - len(finished)
    if unfinished:
        log.warning("%s: leaving out %d unfinished shards (no stats file yet)", folder, unfinished)
    if not finished:
        raise ConfigError(f"no finished shard ({{shard:06d}}.tar with its {SHARD_STATS_SUFFIX}) in "
                          f"{folder}: {len(tars)} tars found; run (or finish) `vipstream build` first")
    prefix = folder.rstrip("/") if shards_path == path else _join(folder, SHARDS_DIRNAME)
    return [_join(prefix, name) for name in finished]


def _expand_one(part: str) -> list[str]:
    if _is_pipe(part) or part.endswith(".tar") or "{" in part:
        return list(braceexpand.braceexpand(part))
    fs, path = _filesystem(part)
    if fs.isdir(path):
        return finished_shards_of(part)
    raise ConfigError(f"shards entry {part!r} is neither a build OUT folder nor a .tar URL or brace pattern")


def resolve_shards(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Every shard URL named by `spec`, in order, duplicates removed. Raises ConfigError when
    nothing is found (a typo must not become an empty, silently hanging stream)."""
    parts = split_spec(spec) if isinstance(spec, str) else [str(p) for p in spec]
    urls: list[str] = []
    for part in parts:
        urls.extend(_expand_one(part))
    urls = list(dict.fromkeys(urls))
    if not urls:
        raise ConfigError(f"shards {spec!r} names no shard")
    return urls


def shard_stem_of(url: str) -> str:
    """'s3://b/out/shards/000012.tar' -> '000012' (the sidecar file's stem)."""
    name = posixpath.basename(urlparse(url).path if "://" in url else url)
    return name[: -len(".tar")] if name.endswith(".tar") else name


def default_captions_root(shard_url: str, captioner_id: str) -> str:
    """OUT/captions/{captioner_id} for a shard OUT/shards/NAME.tar (local path or fsspec URL)."""
    if _is_pipe(shard_url):
        raise ConfigError(f"cannot locate the caption sidecars of a pipe: shard ({shard_url!r}); "
                          f"set captions_root")
    shards_folder = posixpath.dirname(shard_url.rstrip("/"))
    out_dir = posixpath.dirname(shards_folder)
    return _join(out_dir, CAPTIONS_DIRNAME, sanitize_id(captioner_id))


def sidecar_url(shard_url: str, captioner_id: str, captions_root: str | None) -> str:
    root = captions_root or default_captions_root(shard_url, captioner_id)
    return _join(root, shard_stem_of(shard_url) + CAPTION_SIDECAR_SUFFIX)


def check_captions_root(shard_url: str, captioner_id: str, captions_root: str | None) -> str:
    """The sidecar folder, checked to exist up front: an unknown captioner id lists the known ones."""
    root = captions_root or default_captions_root(shard_url, captioner_id)
    fs, path = _filesystem(root)
    if not fs.isdir(path):
        parent_fs, parent = _filesystem(posixpath.dirname(root.rstrip("/")))
        known = (sorted(posixpath.basename(p.rstrip("/")) for p in parent_fs.ls(parent, detail=False)
                        if parent_fs.isdir(p)) if parent_fs.isdir(parent) else [])
        raise ConfigError(f"no caption sidecars for captioner {captioner_id!r} at {root}; captioners "
                          f"present: {known or 'none'} (run `vipstream caption` first)")
    return root
