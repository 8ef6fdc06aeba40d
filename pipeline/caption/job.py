"""`vipstream caption` as a Ray Data job: shards -> middle frames (CPU tasks) -> captioner actors ->
one caption sidecar per shard, resumable per shard, never touching the tars.

    pending shards  ->  read_and_decode_shard (flat_map, one CPU task per shard:
                          read_shard_samples: tar -> mp4 bytes; decode_sample: mp4 -> middle frame)
                    ->  CaptionerActor        (map_batches, actor pool: model loaded once per actor)
                    ->  driver: SidecarWriter buffers rows per shard; a shard whose rows are all
                        in is written as captions/{id}/{shard}.parquet (tmp + os.replace)

Decoding lives in the flat_map task on purpose: a separate task-pool map_batches right before the
actor stage would be fused by Ray Data into the captioner actor, which would then decode
serially between generate calls. As it is, Ray Data streams: frames of one shard are captioned
while the next shards are being decoded on the other CPUs, so the captioner (a GPU) stays busy.

The stages are in pipeline/caption/stages.py, the sidecar publication in
pipeline/caption/sidecars.py; this module picks the shards, wires the dataset and summarises.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.atomic import remove_temporaries, write_json_atomic
from pipeline.caption.captioner import CaptionerConfig, CaptionerLoadError, check_captioner, resolve_captioner_id
from pipeline.caption.sidecars import SidecarWriter
from pipeline.caption.stages import CaptionerActor, read_and_decode_shard
from pipeline.errors import failure_counts
from pipeline.hf_models import load_error_in
from vipstream.output_lock import CAPTION_LOCK_FILENAME, output_lock
from vipstream.config import ConfigError, config_to_dict
from vipstream.errors import JobError
from vipstream.caption_sidecar import sidecar_problem
from vipstream.schema import SHARDS_DIRNAME, caption_sidecar_path, captions_dir, shard_stats_path, shard_stem

log = logging.getLogger(__name__)

CAPTIONER_FILENAME = "captioner.json"
CAPTION_SUMMARY_FILENAME = "summary.json"
_SHARD_NAME = re.compile(r"^(\d{6})\.tar$")


# ---------------------------------------------------------------------------------------------
# Which shards


def resolve_out_dir(path: str | Path) -> Path:
    """Accept the build output (OUT, holding shards/) or its shards/ folder itself."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"shards directory {path} does not exist")
    if (path / SHARDS_DIRNAME).is_dir():
        return path
    if path.name == SHARDS_DIRNAME and path.is_dir():
        return path.parent
    raise ConfigError(f"expected a build output holding {SHARDS_DIRNAME}/ (or that folder), "
                      f"found no {path / SHARDS_DIRNAME}")


def list_shards(out_dir: Path) -> tuple[list[tuple[int, Path]], list[int]]:
    """(finished shards as (index, tar path), unfinished shard indices), sorted by index.

    A tar without its stats file is still being written (or was abandoned by a killed build):
    captioning it could caption clips that later change, so it is skipped with a warning.
    """
    shards_dir = out_dir / SHARDS_DIRNAME
    found = sorted((int(m.group(1)), p) for p in shards_dir.iterdir()
                   if (m := _SHARD_NAME.match(p.name)) and p.is_file())
    if not found:
        raise ConfigError(f"no shards ({{shard:06d}}.tar) in {shards_dir}; run `vipstream build` first")
    finished = [(i, p) for i, p in found if shard_stats_path(out_dir, i).exists()]
    unfinished = [i for i, _ in found if not shard_stats_path(out_dir, i).exists()]
    if unfinished:
        log.warning("skipping %d unfinished shards (no stats file yet): %s", len(unfinished),
                    ", ".join(shard_stem(i) for i in unfinished[:10]))
    if not finished:
        raise ConfigError(f"every shard in {shards_dir} is unfinished (no .stats.json); "
                          f"let `vipstream build` finish first")
    return finished, unfinished


def _expected_clips(out_dir: Path, shards: list[int]) -> int | None:
    """Clip count of `shards` from their stats files, for the progress bar's total (a hint only)."""
    total = 0
    for shard in shards:
        try:
            clips = json.loads(shard_stats_path(out_dir, shard).read_text()).get("clips")
        except (OSError, ValueError):
            return None
        if not isinstance(clips, int):
            return None
        total += clips
    return total


# ---------------------------------------------------------------------------------------------
# The job


def check_captioner_dir(out_dir: Path, captioner_id: str, record: dict[str, Any], overwrite: bool) -> Path:
    """Refuse to mix two captioners (or two settings) under one id; write captioner.json."""
    folder = captions_dir(out_dir, captioner_id)
    folder.mkdir(parents=True, exist_ok=True)
    remove_temporaries(folder)  # left by a killed run
    path = folder / CAPTIONER_FILENAME
    identity = {k: record[k] for k in ("model_identity", "generation")}
    previous = json.loads(path.read_text()) if path.exists() else None
    same = previous is not None and {k: previous.get(k) for k in identity} == identity
    if previous is not None and not same:
        if not overwrite:
            raise ConfigError(
                f"{folder} holds captions of {previous.get('model')!r} with {previous.get('generation')}, "
                f"not {record['model']!r} with {record['generation']}; pick another --captioner-id "
                f"or pass --overwrite to recaption every shard")
        # Another model takes this id over: drop its sidecars now, so that a killed overwrite
        # run cannot leave a folder mixing two captioners under one captioner.json.
        for sidecar in folder.glob("*.parquet"):
            sidecar.unlink()
    if same and not overwrite:
        return folder
    write_json_atomic(path, record)
    return folder


def needs_captions(out_dir: Path, captioner_id: str, shard: int) -> bool:
    """A shard is done only when its sidecar passes the sidecar check the trainer applies
    (vipstream.caption_sidecar): a missing, unreadable or schema-invalid one is redone."""
    path = caption_sidecar_path(out_dir, captioner_id, shard)
    problem = sidecar_problem(path)
    if problem not in (None, "missing"):
        log.warning("redoing %s: %s", path, problem)
    return problem is not None


def _set_data_context(progress_bars: bool) -> dict[str, Any]:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = {"enable_progress_bars": ctx.enable_progress_bars}
    ctx.enable_progress_bars = progress_bars  # the driver's own bar shows captions/s
    return saved


def _restore_data_context(saved: dict[str, Any]) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    for key, value in saved.items():
        setattr(ctx, key, value)


def build_dataset(pending: list[tuple[int, Path]], cfg: CaptionerConfig):
    """The Ray Data pipeline, top to bottom (see the module docstring)."""
    import ray

    items = [{"shard": shard, "path": str(path.resolve())} for shard, path in pending]
    return (ray.data.from_items(items, override_num_blocks=len(items))
            .flat_map(read_and_decode_shard, num_cpus=cfg.decode_cpus)
            .map_batches(CaptionerActor, fn_constructor_kwargs={"cfg": cfg}, batch_size=cfg.batch_size,
                         batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
                         num_gpus=cfg.num_gpus, num_cpus=cfg.num_cpus))


def _check_resources(cfg: CaptionerConfig) -> None:
    """Captioner actors hold their CPUs for the whole job; if they took every CPU, no decode task
    could ever run and the job would wait forever. Say so instead."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0.0)
    needed = cfg.concurrency * cfg.num_cpus + cfg.decode_cpus
    if needed > cpus:
        raise ConfigError(f"{cfg.concurrency} captioner actors x {cfg.num_cpus} CPUs + {cfg.decode_cpus} CPU "
                          f"for decoding need {needed:g} CPUs, the Ray cluster has {cpus:g}; lower "
                          f"concurrency or num_cpus")


def run_caption_job(out_dir: str | Path, cfg: CaptionerConfig, ray_address: str | None = None, *,
                    progress: bool = True) -> dict[str, Any]:
    """Caption every finished shard of `out_dir` lacking a sidecar for this captioner (all of
    them with `cfg.overwrite`); returns the summary also saved as captions/{id}/summary.json.

    Raises ConfigError (missing/empty shards dir, id taken by another captioner) or
    CaptionerLoadError (the model cannot be loaded) before any Ray work starts.
    """
    started = time.perf_counter()
    out_dir = resolve_out_dir(out_dir)
    finished, unfinished = list_shards(out_dir)
    model_record = check_captioner(cfg)
    captioner_id = resolve_captioner_id(cfg)
    record = {"captioner_id": captioner_id, **model_record,
              "model_identity": model_record["model_path"] or model_record["model"],
              "generation": cfg.generation_settings(), "config": config_to_dict(cfg),
              "created": datetime.now(timezone.utc).isoformat()}
    # One caption run per captioner id: taken before its folder's temporaries are cleaned up.
    with output_lock(captions_dir(out_dir, captioner_id) / CAPTION_LOCK_FILENAME, "vipstream caption"):
        return _caption_locked(out_dir, cfg, captioner_id, record, finished, unfinished, ray_address,
                               progress, started)


def _caption_locked(out_dir: Path, cfg: CaptionerConfig, captioner_id: str, record: dict[str, Any],
                    finished: list[tuple[int, Path]], unfinished: list[int], ray_address: str | None,
                    progress: bool, started: float) -> dict[str, Any]:
    from tqdm import tqdm

    from pipeline.ray_session import ray_session

    folder = check_captioner_dir(out_dir, captioner_id, record, cfg.overwrite)
    pending = [(i, p) for i, p in finished if cfg.overwrite or needs_captions(out_dir, captioner_id, i)]
    skipped = len(finished) - len(pending)
    log.info("captioner %s (%s): %d shards to caption, %d already done, %d unfinished skipped",
             captioner_id, cfg.captioner, len(pending), skipped, len(unfinished))
    writer = SidecarWriter(out_dir, captioner_id, cfg.max_caption_chars)
    job_s = 0.0
    if pending:
        with ray_session(ray_address, num_cpus=cfg.ray_num_cpus or None):
            _check_resources(cfg)
            saved = _set_data_context(progress_bars=False)
            job_started = time.perf_counter()
            try:
                dataset = build_dataset(pending, cfg)
                total = _expected_clips(out_dir, [i for i, _ in pending])
                with tqdm(total=total, desc=f"captions [{captioner_id}]", unit="caption",
                          disable=not progress, smoothing=0.1) as bar:
                    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                        captions = writer.add(batch.to_pylist())
                        bar.update(captions)
                        bar.set_postfix(shards=len(writer.done), errors=len(writer.errors))
            except Exception as exc:
                load_error = load_error_in(exc, CaptionerLoadError, r"cannot load captioner .*")
                if load_error is not None:
                    raise CaptionerLoadError(load_error) from None
                raise
            finally:
                _restore_data_context(saved)
            job_s = time.perf_counter() - job_started
        if writer.incomplete():
            raise JobError(f"shards ended incomplete (rows received, expected): {writer.incomplete()}; "
                           f"the finished ones are kept: rerun to finish these")
    summary = summarise_run(out_dir, captioner_id, cfg, finished, unfinished, skipped, writer,
                         job_s, time.perf_counter() - started)
    write_json_atomic(folder / CAPTION_SUMMARY_FILENAME, summary)
    return summary


def summarise_run(out_dir: Path, captioner_id: str, cfg: CaptionerConfig, finished: list, unfinished: list,
               skipped: int, writer: SidecarWriter, job_s: float, wall_s: float) -> dict[str, Any]:
    by_stage, by_reason = failure_counts(writer.errors)
    return {
        "output": str(out_dir),
        "captioner_id": captioner_id,
        "captioner": cfg.captioner,
        "sidecars": str(captions_dir(out_dir, captioner_id)),
        "shards": len(finished),
        "shards_captioned": len(writer.done),
        "shards_skipped_as_done": skipped,
        "shards_skipped_as_unfinished": len(unfinished),
        "shards_failed": len(writer.failed),
        "captions": writer.captions,
        "captions_cut": writer.captions_cut,
        "errors": len(writer.errors),
        "errors_by_stage": by_stage,
        "errors_by_reason": by_reason,
        "captions_per_s": round(writer.captions / job_s, 3) if job_s > 0 else None,
        "job_s": round(job_s, 3),
        "wall_s": round(wall_s, 3),
    }
