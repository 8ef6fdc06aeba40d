"""Checks of a training run's inputs before any process starts, each a ConfigError saying what
was expected and what was found: a missing data or captions folder, an unknown captioner id
(listing those present), no finished shard or a broken stats file (named), fewer clips than one
step's batch, a missing --init folder or validation set, a model folder of only pickled weights or
with fewer text positions than max_text_length, or an output whose checkpoints do not fit (see
select_checkpoint).

Remote data (fsspec URLs, `pipe:`) is checked as far as the loader's resolver can list it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from train.checkpoint import select_checkpoint
from train.config import TrainSetup
from vipstream.config import ConfigError
from vipstream.schema import SHARD_STATS_SUFFIX

log = logging.getLogger(__name__)


def _is_local(spec: str) -> bool:
    return "://" not in spec and not spec.startswith("pipe:") and "{" not in spec and "," not in spec


def count_clips(shard_urls: list[str]) -> int | None:
    """Clips in the given local shards, from their stats files (the build's "clips" count); None
    when unknown (remote shards, or stats without that count). A stats file that is not a JSON
    object is a ConfigError naming it: the shard's commit marker is broken."""
    total = 0
    for url in shard_urls:
        stats = Path(url[: -len(".tar")] + SHARD_STATS_SUFFIX) if url.endswith(".tar") else None
        if stats is None or not stats.is_file():
            return None
        try:
            found = json.loads(stats.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ConfigError(f"{stats}: the stats file of shard {Path(url).name} is not valid JSON ({exc}); it "
                              f"is the shard's commit marker: rerun `vipstream build` on that output (delete "
                              f"the file first so the shard is rebuilt)") from None
        if not isinstance(found, dict):
            raise ConfigError(f"{stats}: expected the JSON object the build writes, found {type(found).__name__}; "
                              f"delete it and rerun `vipstream build` so shard {Path(url).name} is rebuilt")
        clips = found.get("clips")
        if not isinstance(clips, int):
            return None
        total += clips
    return total


def warn_bad_sidecars(urls: list[str], data) -> dict[str, str]:
    """Warn, naming each, about caption sidecars that exist but are broken: training skips them
    (their shards' clips take the missing_caption rule) and `vipstream caption` redoes them."""
    from train.data.text import sidecar_problems

    problems = sidecar_problems(urls, data)
    for path, reason in list(problems.items())[:10]:
        log.warning("caption sidecar %s is unusable (%s): its shard's clips will take the missing_caption "
                    "rule (%s); rerun `vipstream caption` to redo it", path, reason, data.missing_caption)
    if len(problems) > 10:
        log.warning("... and %d more unusable caption sidecars", len(problems) - 10)
    return problems


def check_init(init: str, start: Path | None, max_text_length: int) -> None:
    """The model folder the run loads. A local --init folder must hold a config and safetensors
    weights (a folder of only pickled weights is refused); the start checkpoint's files are the
    loop's to judge (a step that fails to load falls back to the previous one). Either must have
    at least max_text_length text positions; a hub name is checked once loaded (train/loop.py)."""
    from model.clip_vip import CONFIG_NAME, check_checkpoint_weights, text_positions

    if start is not None:
        check_text_length(max_text_length, text_positions(start), start / CONFIG_NAME)
        return
    folder = Path(init).expanduser()
    if not folder.is_dir():
        return
    if not (folder / CONFIG_NAME).is_file():
        raise ConfigError(f"--init {init}: no {CONFIG_NAME}; expected a CLIP or CLIP-ViP checkpoint folder")
    try:
        check_checkpoint_weights(folder)
    except (ValueError, FileNotFoundError) as exc:  # PickledWeightsError and a garbage config.json are ValueErrors
        raise ConfigError(f"--init {init}: {exc}") from None
    check_text_length(max_text_length, text_positions(folder), folder / CONFIG_NAME)


def check_text_length(max_text_length: int, positions: int | None, source: object) -> None:
    """ConfigError when texts of max_text_length tokens do not fit the model's position table."""
    if positions is not None and max_text_length > positions:
        raise ConfigError(f"max_text_length {max_text_length} is beyond the {positions} text positions of the model "
                          f"({source}); use --max-text-length {positions} or less")


def check_inputs(setup: TrainSetup, output: str | Path, world_size: int, *, resume: bool,
                 weights_only: bool) -> dict[str, Any]:
    """Raise ConfigError for input the run cannot train on; returns what was found."""
    from train.data.config import CAPTION_SOURCES
    from train.data.sources import check_captions_root, resolve_shards

    data, cfg = setup.data, setup.train
    spec = str(data.shards)
    if _is_local(spec) and not spec.endswith(".tar") and not Path(spec).is_dir():
        raise ConfigError(f"--data {spec}: expected a build output folder (holding shards/), found no such folder")
    urls = resolve_shards(spec)  # ConfigError: no finished shard, unknown form
    captions = None
    if data.text_source in CAPTION_SOURCES:
        captions = check_captions_root(urls[0], data.captioner_id, data.captions_root)
        warn_bad_sidecars(urls, data)
    clips = count_clips(urls)
    per_step = data.batch_size * world_size
    if clips is not None and clips < per_step:
        raise ConfigError(f"batch_size {data.batch_size} x {world_size} processes needs {per_step} clips per "
                          f"micro-batch, but {spec} holds only {clips} clips in {len(urls)} finished shards; "
                          f"lower batch_size (or use fewer processes)")
    init = str(cfg.init)
    # A hub id is exactly "org/name"; anything else that is not a folder is a path that is missing.
    if not Path(init).expanduser().is_dir() and (init.startswith((".", "/", "~")) or init.count("/") != 1):
        raise ConfigError(f"--init {init}: no such folder (expected a CLIP or CLIP-ViP checkpoint folder, "
                          f"or a hub name like openai/clip-vit-base-patch16)")
    if cfg.val_data and _is_local(str(cfg.val_data)) and not Path(cfg.val_data).is_dir():
        raise ConfigError(f"val_data {cfg.val_data}: no such folder (expected a retrieval set's build output)")
    start = select_checkpoint(output, setup.to_dict(), setup.digest, world_size, resume=resume,
                              weights_only=weights_only)
    check_init(init, start, data.max_text_length)
    return {"shards": len(urls), "clips": clips, "captions": captions, "start_checkpoint": start}
