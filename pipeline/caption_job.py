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

Every row carries its shard's sample count (`shard_total`, counted from the tar's headers
before any sample is emitted), which is how the driver knows a shard is complete without a
second pass. A shard's error rows are merged into errors.parquet before its sidecar is
published, so a kill between the two only means that shard is redone.

Tars are opened read-only with `tarfile`; only `mp4` and `json` members are read (as bytes, the
json with `json.loads`), never unpickled (DESIGN.md section 6).
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.caption import (Captioner, CaptionerConfig, CaptionerLoadError, check_captioner,
                              middle_frame, resolve_captioner_id)
from pipeline.atomic import remove_temporaries, write_json_atomic, write_parquet_atomic
from pipeline.errors import ErrorRow, StageError
from vipstream.config import ConfigError, config_to_dict
from vipstream.schema import (CAPTION_COLUMNS, ERROR_COLUMNS, ERRORS_FILENAME, FORBIDDEN_EXTS, META_EXT,
                              SHARDS_DIRNAME, VIDEO_EXT, caption_sidecar_path, captions_dir,
                              shard_stats_path, shard_stem)

log = logging.getLogger(__name__)

CAPTIONER_FILENAME = "captioner.json"
CAPTION_SUMMARY_FILENAME = "summary.json"
_SHARD_NAME = re.compile(r"^(\d{6})\.tar$")
#: WebDataset's key/extension split: key = path up to the first dot of the basename.
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")

#: Row kinds flowing through the pipeline. A shard that cannot be read or holds no sample still
#: emits one row, so the driver hears about every shard it scheduled.
SAMPLE, SHARD_ERROR, EMPTY_SHARD = "sample", "shard_error", "empty_shard"

CAPTION_SCHEMA = pa.schema([
    ("key", pa.string()), ("caption", pa.string()), ("frame_index", pa.int32()),
    ("frame_time_s", pa.float64()), ("captioner", pa.string()),
    ("created", pa.timestamp("us", tz="UTC")),
])
ERRORS_SCHEMA = pa.schema([(c, pa.int64() if c == "line" else pa.string()) for c in ERROR_COLUMNS])
assert tuple(CAPTION_SCHEMA.names) == CAPTION_COLUMNS


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
# Stage 1: read a shard (flat_map, one CPU task per shard)


def _row(shard: int, total: int, index: int, kind: str, key: str = "", **extra: Any) -> dict[str, Any]:
    row = {"shard": shard, "shard_total": total, "sample_index": index, "kind": kind, "key": key,
           "video_id": "", "clip_id": "", "mp4": b"", "error_stage": "", "error_reason": ""}
    row.update(extra)
    return row


def _group_members(members: list[tarfile.TarInfo]) -> dict[str, dict[str, tarfile.TarInfo]]:
    """key -> {ext: member}, in tar order (WebDataset's grouping of consecutive members)."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    for member in members:
        if not member.isfile():
            continue
        match = _KEY_EXT.match(member.name)
        if not match:
            continue
        key, ext = match.group(1), match.group(2).lower()
        samples.setdefault(key, {})[ext] = member
    return samples


def read_shard_samples(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """{shard, path} -> one row per sample: its mp4 bytes, ids and the shard's sample count.

    Only the `mp4` and `json` members are read; forbidden (pickle) members are never opened.
    """
    shard, path = int(item["shard"]), str(item["path"])
    try:
        handle = tarfile.open(path, mode="r:")
        members = handle.getmembers()
    except (OSError, tarfile.TarError) as exc:
        yield _row(shard, 1, -1, SHARD_ERROR, error_stage="read",
                   error_reason=f"expected a readable tar at {path}, found: {type(exc).__name__}: {exc}")
        return
    with handle:
        samples = _group_members(members)
        if not samples:
            yield _row(shard, 1, -1, EMPTY_SHARD)
            return
        total = len(samples)
        for index, (key, parts) in enumerate(samples.items()):
            key = key.rsplit("/", 1)[-1]
            forbidden = sorted(set(parts) & FORBIDDEN_EXTS)
            if forbidden:
                log.warning("shard %s sample %s: ignoring forbidden members %s", shard_stem(shard), key, forbidden)
            meta = _read_meta(handle, parts.get(META_EXT))
            ids = {"video_id": str(meta.get("video_id") or key.rsplit("_", 1)[0]),
                   "clip_id": str(meta.get("clip_id") or key)}
            if VIDEO_EXT not in parts:
                yield _row(shard, total, index, SAMPLE, key, **ids, error_stage="read",
                           error_reason=f"expected a {VIDEO_EXT} member, found {sorted(parts)}")
                continue
            try:
                video = handle.extractfile(parts[VIDEO_EXT]).read()
            except (OSError, tarfile.TarError) as exc:
                yield _row(shard, total, index, SAMPLE, key, **ids, error_stage="read",
                           error_reason=f"cannot read the {VIDEO_EXT} member: {type(exc).__name__}: {exc}")
                continue
            yield _row(shard, total, index, SAMPLE, key, **ids, mp4=video)


def _read_meta(handle: tarfile.TarFile, member: tarfile.TarInfo | None) -> dict[str, Any]:
    """The sample's json member as a dict ({} when absent or unreadable: ids are only a nicety)."""
    if member is None:
        return {}
    try:
        meta = json.loads(handle.extractfile(member).read())
    except (OSError, tarfile.TarError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


# ---------------------------------------------------------------------------------------------
# Stage 2: decode the middle frame (in the same CPU task as the read)


def decode_sample(row: dict[str, Any]) -> dict[str, Any]:
    """A read row -> the same row with its middle frame as raw RGB bytes, shape, index and time.

    Frames travel as bytes + (height, width) rather than ndarrays because clips of one batch may
    differ in size, and ragged tensor columns are fragile across Ray Data versions. The mp4
    bytes are dropped here: only the frame moves on to the captioner.
    """
    out = {k: v for k, v in row.items() if k != "mp4"}
    out.update(frame=b"", height=0, width=0, frame_index=-1, frame_time_s=float("nan"))
    if row["kind"] != SAMPLE or row["error_stage"]:
        return out
    try:
        frame, out["frame_index"], out["frame_time_s"] = middle_frame(row["mp4"])
    except StageError as exc:
        out.update(error_stage=exc.stage, error_reason=exc.reason)
        return out
    except Exception as exc:  # a bad clip never costs its neighbours
        out.update(error_stage="decode", error_reason=f"{type(exc).__name__}: {exc}")
        return out
    out.update(frame=frame.tobytes(), height=frame.shape[0], width=frame.shape[1])
    return out


def read_and_decode_shard(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """{shard, path} -> one decoded row per sample (the flat_map UDF)."""
    for row in read_shard_samples(item):
        yield decode_sample(row)


# ---------------------------------------------------------------------------------------------
# Stage 3: caption (map_batches with an actor class: the model is loaded once per actor)


class CaptionerActor:
    """Ray Data class UDF: decoded rows -> the same rows with `caption` (frames dropped)."""

    def __init__(self, cfg: CaptionerConfig):
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, int(cfg.num_cpus)))
        self.captioner = Captioner(cfg)
        log.info("captioner actor: %s on %s, %d torch threads", cfg.captioner, self.captioner.device,
                 torch.get_num_threads())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        error_stage = np.array(batch["error_stage"], dtype=object)
        error_reason = np.array(batch["error_reason"], dtype=object)
        todo = [i for i in range(n) if batch["kind"][i] == SAMPLE and not error_stage[i]]
        frames = [np.frombuffer(batch["frame"][i], dtype=np.uint8).reshape(
            int(batch["height"][i]), int(batch["width"][i]), 3) for i in todo]
        captions = np.array([""] * n, dtype=object)
        for i, caption in zip(todo, self._caption(frames, error_stage, error_reason, todo)):
            captions[i] = caption
        out = {k: v for k, v in batch.items() if k not in ("frame", "height", "width")}
        out.update(caption=captions, error_stage=error_stage, error_reason=error_reason)
        return out

    def _caption(self, frames: list[np.ndarray], error_stage: np.ndarray, error_reason: np.ndarray,
                 rows: list[int]) -> list[str]:
        """One batched generate; if it fails, frame by frame, so one bad frame is one error row."""
        try:
            return self.captioner(frames)
        except Exception as exc:
            log.warning("batched generate failed (%s: %s); captioning frame by frame", type(exc).__name__, exc)
        captions = []
        for frame, row in zip(frames, rows):
            try:
                captions.append(self.captioner([frame])[0])
            except Exception as exc:
                error_stage[row], error_reason[row] = "caption", f"generate failed: {type(exc).__name__}: {exc}"
                captions.append("")
        return captions


# ---------------------------------------------------------------------------------------------
# Driver: buffer rows per shard, publish each shard's sidecar when all its rows are in


def _shard_source(shard: int) -> str:
    return f"{SHARDS_DIRNAME}/{shard_stem(shard)}.tar"


class SidecarWriter:
    """Collects the job's output rows and writes each shard's sidecar once all its rows are in."""

    def __init__(self, out_dir: Path, captioner_id: str):
        self.out_dir = out_dir
        self.captioner_id = captioner_id
        self.errors_path = captions_dir(out_dir, captioner_id) / ERRORS_FILENAME
        self.pending: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.totals: dict[int, int] = {}
        self.done: set[int] = set()
        self.failed: set[int] = set()
        self.captions = 0
        self.errors: list[dict[str, Any]] = []  # this run's
        self._all_errors: list[dict[str, Any]] | None = None  # errors.parquet's

    def add(self, rows: list[dict[str, Any]]) -> int:
        """Buffer rows; write every shard they complete. Returns captions in `rows`."""
        new_captions = 0
        for row in rows:
            shard = int(row["shard"])
            if shard in self.done or shard in self.failed:
                raise RuntimeError(f"shard {shard_stem(shard)}: a row arrived after the shard was complete")
            self.totals[shard] = int(row["shard_total"])
            self.pending[shard].append(row)
            new_captions += row["kind"] == SAMPLE and not row["error_stage"]
            if len(self.pending[shard]) == self.totals[shard]:
                self._finish(shard, self.pending.pop(shard))
        return new_captions

    def incomplete(self) -> dict[int, tuple[int, int]]:
        return {s: (len(r), self.totals[s]) for s, r in self.pending.items()}

    def _finish(self, shard: int, rows: list[dict[str, Any]]) -> None:
        rows.sort(key=lambda r: int(r["sample_index"]))
        errors = [self._error_row(shard, r) for r in rows if r["error_stage"]]
        # Errors first: a kill before the sidecar lands only means this shard is redone.
        self._replace_shard_errors(shard, errors)
        self.errors.extend(errors)
        if any(r["kind"] == SHARD_ERROR for r in rows):
            self.failed.add(shard)
            log.error("shard %s could not be read: %s", shard_stem(shard), errors[0]["reason"])
            return
        ok = [r for r in rows if r["kind"] == SAMPLE and not r["error_stage"]]
        created = datetime.now(timezone.utc)
        table = pa.Table.from_pylist([
            {"key": r["key"], "caption": r["caption"], "frame_index": int(r["frame_index"]),
             "frame_time_s": float(r["frame_time_s"]), "captioner": self.captioner_id, "created": created}
            for r in ok], schema=CAPTION_SCHEMA)
        write_parquet_atomic(table, caption_sidecar_path(self.out_dir, self.captioner_id, shard))
        self.done.add(shard)
        self.captions += len(ok)
        log.debug("shard %s: %d captions, %d errors", shard_stem(shard), len(ok), len(errors))

    @staticmethod
    def _error_row(shard: int, row: dict[str, Any]) -> dict[str, Any]:
        source = _shard_source(shard) + (f"#{row['key']}" if row["key"] else "")
        return ErrorRow(video_id=row["video_id"] or None, clip_id=row["key"] or None,
                        stage=row["error_stage"], reason=row["error_reason"], source=source).as_dict()

    def _replace_shard_errors(self, shard: int, errors: list[dict[str, Any]]) -> None:
        """errors.parquet := its rows of other shards + this shard's new rows (idempotent).

        Rows of earlier runs are read once and kept in memory; the file is rewritten whole (it
        is small) only when this shard's rows change it."""
        if self._all_errors is None:
            self._all_errors = read_error_rows(self.errors_path)
        prefix = _shard_source(shard)
        kept = [e for e in self._all_errors
                if not ((e.get("source") or "") == prefix or (e.get("source") or "").startswith(prefix + "#"))]
        if not errors and len(kept) == len(self._all_errors) and self.errors_path.exists():
            return
        self._all_errors = kept + errors
        write_parquet_atomic(pa.Table.from_pylist(self._all_errors, schema=ERRORS_SCHEMA), self.errors_path)


def read_error_rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist() if path.exists() else []


# ---------------------------------------------------------------------------------------------
# The job


def _check_captioner_dir(out_dir: Path, captioner_id: str, record: dict[str, Any], overwrite: bool) -> Path:
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


def _load_error_in(exc: BaseException) -> str | None:
    """The CaptionerLoadError message behind a Ray/Ray Data failure, if that is what it was.

    An actor whose constructor raises surfaces as ActorDiedError carrying only the remote
    traceback as text, so the text is searched too."""
    seen, current = 0, exc
    while current is not None and seen < 20:
        if isinstance(current, CaptionerLoadError):
            return str(current).splitlines()[-1]
        current = current.__cause__ or current.__context__
        seen += 1
    match = re.search(r"CaptionerLoadError: (cannot load captioner .*)", str(exc))
    return match.group(1) if match else None


def run_caption_job(out_dir: str | Path, cfg: CaptionerConfig, ray_address: str | None = None, *,
                    progress: bool = True) -> dict[str, Any]:
    """Caption every finished shard of `out_dir` lacking a sidecar for this captioner (all of
    them with `cfg.overwrite`); returns the summary also saved as captions/{id}/summary.json.

    Raises ConfigError (missing/empty shards dir, id taken by another captioner) or
    CaptionerLoadError (the model cannot be loaded) before any Ray work starts.
    """
    from tqdm import tqdm

    from pipeline.ray_session import ray_session

    started = time.perf_counter()
    out_dir = resolve_out_dir(out_dir)
    finished, unfinished = list_shards(out_dir)
    model_record = check_captioner(cfg)
    captioner_id = resolve_captioner_id(cfg)
    record = {"captioner_id": captioner_id, **model_record,
              "model_identity": model_record["model_path"] or model_record["model"],
              "generation": cfg.generation_settings(), "config": config_to_dict(cfg),
              "created": datetime.now(timezone.utc).isoformat()}
    folder = _check_captioner_dir(out_dir, captioner_id, record, cfg.overwrite)
    pending = [(i, p) for i, p in finished
               if cfg.overwrite or not caption_sidecar_path(out_dir, captioner_id, i).exists()]
    skipped = len(finished) - len(pending)
    log.info("captioner %s (%s): %d shards to caption, %d already done, %d unfinished skipped",
             captioner_id, cfg.captioner, len(pending), skipped, len(unfinished))
    writer = SidecarWriter(out_dir, captioner_id)
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
                load_error = _load_error_in(exc)
                if load_error is not None:
                    raise CaptionerLoadError(load_error) from None
                raise
            finally:
                _restore_data_context(saved)
            job_s = time.perf_counter() - job_started
        if writer.incomplete():
            raise RuntimeError(f"shards ended incomplete (rows received, expected): {writer.incomplete()}; "
                               f"rerun to finish them")
    summary = _summarise(out_dir, captioner_id, cfg, finished, unfinished, skipped, writer,
                         job_s, time.perf_counter() - started)
    write_json_atomic(folder / CAPTION_SUMMARY_FILENAME, summary)
    return summary


def _summarise(out_dir: Path, captioner_id: str, cfg: CaptionerConfig, finished: list, unfinished: list,
               skipped: int, writer: SidecarWriter, job_s: float, wall_s: float) -> dict[str, Any]:
    by_stage = Counter(e["stage"] for e in writer.errors)
    by_reason = Counter(f"{e['stage']}: {e['reason'][:80]}" for e in writer.errors)
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
        "errors": len(writer.errors),
        "errors_by_stage": dict(by_stage),
        "errors_by_reason": dict(by_reason.most_common(10)),
        "captions_per_s": round(writer.captions / job_s, 3) if job_s > 0 else None,
        "job_s": round(job_s, 3),
        "wall_s": round(wall_s, 3),
    }
