"""Loader throughput: `make_train_loader` vs a bare decord loop over the same tar members, one run.

Both sides use the same number of processes (`--procs`: the loader's DataLoader workers; a
pool of as many bare processes) on the same shards, and decode the same frames per clip (the
train rule's T indices + the middle frame, seeded the same way). The loader additionally does
everything else a training batch needs: tar member selection, caption join, text choice, the
shuffle buffer, CLIP pixel preprocessing in torch, tokenisation, collation and the hand-over
to the main process. Worker start-up and the first batches are excluded (warm-up), as in a
long run; so are the batches the workers prefetched while the bare loop ran. The two sides
alternate, round after round, and the median ratio is reported. Target (DESIGN.md section 5):
ratio >= 0.9.

Also reported: clips/s per core (per process; the machine is shared, so with the load average),
decord's frames/s ceiling on these clips (one process, every frame), and the RSS of the loader's
workers after each round (decord's memory grows when readers live on: issues #197/#208).

Measured here (2 shared CPUs, load average 9-12, synthetic 398x224 clips of ~30 frames that decode
in ~7 ms CPU each): float32 0.43 (CPU-time ratio 0.42), bfloat16 0.42 (0.52), uint8 0.79 (0.67).
Below the target: a float32 batch is 7.2 MB per clip written into fresh shared memory (how
DataLoader workers hand tensors over), and its page faults cost ~7 ms of kernel time per clip on
this VM (~3.6 us per 4 KiB page; shmem huge pages are off), as much as decoding these light
clips. uint8 batches (normalised by Batch.to on the device) cut that by 4. Heavier real clips
decode for longer, so the fixed per-clip cost weighs less there. torchcodec could not be tried:
the PyPI wheel is the CUDA build (needs libnvrtc).

Captions: the sidecars are written directly with one caption per clip (their content does not
change the loader's cost; `vipstream caption` is benchmarked by bench_caption.py).

    .venv/bin/python benchmarks/bench_loader.py [--videos 4] [--procs 2] [--batches 30]
        [--batch-size 16] [--frames 12] [--rounds 3] [--pixel-dtypes float32,uint8]
"""

from __future__ import annotations

import argparse
import io
import itertools
import multiprocessing
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


def children_rss_mb(exclude: set[int]) -> list[float]:  # noqa: D401
    """RSS (MiB) of this process's children but `exclude` (the bare pool): the DataLoader workers."""
    me, sizes = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me and int(stat.parent.name) not in exclude:
                status = (stat.parent / "status").read_text()
                kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
                sizes.append(kb / 1024)
        except (OSError, StopIteration, ValueError):
            continue
    return sizes


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU seconds used so far by the processes `pids` (from /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def children(exclude: set[int]) -> set[int]:
    me = os.getpid()
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == me and int(stat.parent.name) not in exclude:
                found.add(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def tar_clips(urls: list[str]) -> list[tuple[str, bytes]]:
    """(key, mp4 bytes) of every clip, in tar order."""
    clips = []
    for url in urls:
        with tarfile.open(url) as tar:
            for member in tar:
                if member.name.endswith(".mp4"):
                    clips.append((member.name.split(".", 1)[0], tar.extractfile(member).read()))
    return clips


def _bare_worker(args: tuple[list[str], int, int, int, int]) -> int:
    """One bare process: read the tars and decode every clip read (as a loader worker does, in
    its own shard order) with the loader's frame rule, until `count` clips; nothing else."""
    import decord
    import numpy as np

    from train.data.frames import train_frame_indices
    from train.data.seeding import sample_rng
    from vipstream.schema import middle_frame_index

    urls, worker, count, frames, seed = args
    done = 0
    for epoch in itertools.count():
        order = urls[worker % len(urls):] + urls[:worker % len(urls)]
        for key, mp4 in tar_clips(order):
            reader = decord.VideoReader(io.BytesIO(mp4), ctx=decord.cpu(0), num_threads=1)
            n = len(reader)
            wanted = np.unique(np.append(train_frame_indices(n, frames, sample_rng(seed, epoch, key, "frames")),
                                         middle_frame_index(n)))
            reader.get_batch(wanted.tolist()).asnumpy()
            del reader
            done += 1
            if done == count:
                return done
    return done


def bare_loop(pool, urls: list[str], procs: int, clips: int, frames: int) -> float:
    """Seconds for `procs` pre-started processes to decode `clips` clips in all."""
    started = time.perf_counter()
    pool.map(_bare_worker, [(urls, w, clips // procs, frames, 0) for w in range(procs)])
    return time.perf_counter() - started


def loader_rate(loader_iter, batches: int, batch_size: int) -> float:
    started = time.perf_counter()
    for _ in range(batches):
        next(loader_iter)
    return batches * batch_size / (time.perf_counter() - started)


def decord_ceiling(clips: list[tuple[str, bytes]]) -> tuple[float, float]:
    """(frames/s, mean frames per clip) decoding every frame of every clip in one process."""
    import decord

    frames, started = 0, time.perf_counter()
    for _, mp4 in clips:
        reader = decord.VideoReader(io.BytesIO(mp4), ctx=decord.cpu(0), num_threads=1)
        frames += len(reader)
        reader.get_batch(list(range(len(reader)))).asnumpy()
        del reader
    return frames / (time.perf_counter() - started), frames / len(clips)


def build_corpus(work: Path, videos: int, cpus: int) -> tuple[Path, int]:
    """Synthetic corpus -> `vipstream build` (one video per shard) -> direct caption sidecars."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from pipeline.build.config import PipelineConfig
    from pipeline.build.jobs import run_build
    from tools.make_synthetic_corpus import make_synthetic_corpus
    from vipstream.schema import CAPTION_COLUMNS, caption_sidecar_path, middle_frame_index

    corpus = make_synthetic_corpus(work / "corpus", num_videos=videos, seed=1, min_duration_s=60, max_duration_s=120)
    out = work / "out"
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
    try:
        run_build(corpus.meta_path, out, PipelineConfig(videos_per_shard=1), video_root=corpus.video_root,
                  progress=False)
    finally:
        ray.shutdown()
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    for shard in sorted({r["shard"] for r in manifest}):
        rows = [r for r in manifest if r["shard"] == shard]
        columns = dict(zip(CAPTION_COLUMNS, (
            [r["key"] for r in rows], ["a red square moves left on a blue background"] * len(rows),
            [middle_frame_index(r["num_frames"]) for r in rows], [0.0] * len(rows), ["bench"] * len(rows),
            ["2026-01-01T00:00:00+00:00"] * len(rows))))
        path = caption_sidecar_path(out, "bench", int(shard))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
    return out, len(manifest)


def compare(loader_iter, pool, urls: list[str], args, prefetch: int) -> dict[str, list[float]]:
    """Rounds of (timed loader batches, then the bare loop on as many clips)."""
    timed = args.batches * args.batch_size
    pool_pids = {p.pid for p in pool._pool}
    result: dict[str, list[float]] = {"ratio": [], "cpu_ratio": [], "loader": [], "bare": [], "rss": []}
    loader_rate(loader_iter, 2 * args.procs, args.batch_size)  # workers started, buffers filled
    for round_index in range(1, args.rounds + 1):
        # The workers refilled their prefetch queues while the bare loop ran: take those
        # batches untimed, so the timed ones are made while we wait (steady state).
        loader_rate(loader_iter, prefetch * args.procs, args.batch_size)
        loader_pids = children(pool_pids) | {os.getpid()}
        cpu_before = cpu_seconds(loader_pids)
        result["loader"].append(loader_rate(loader_iter, args.batches, args.batch_size))
        loader_cpu = (cpu_seconds(loader_pids) - cpu_before) / timed
        result["rss"].append(max(children_rss_mb(pool_pids) or [0.0]))
        cpu_before = cpu_seconds(pool_pids)
        result["bare"].append(timed / bare_loop(pool, urls, args.procs, timed, args.frames))
        bare_cpu = (cpu_seconds(pool_pids) - cpu_before) / timed
        result["ratio"].append(result["loader"][-1] / result["bare"][-1])
        result["cpu_ratio"].append(bare_cpu / loader_cpu)
        print(f"  round {round_index}: loader {result['loader'][-1]:.1f} clips/s, bare decord "
              f"{result['bare'][-1]:.1f} clips/s, ratio {result['ratio'][-1]:.3f}; CPU per clip: loader "
              f"{loader_cpu * 1000:.1f} ms, bare {bare_cpu * 1000:.1f} ms, ratio {result['cpu_ratio'][-1]:.3f}; "
              f"largest loader worker RSS {result['rss'][-1]:.0f} MiB; load {loadavg()}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--procs", type=int, default=2, help="loader workers = bare processes")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per round")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pixel-dtypes", default="float32,uint8",
                        help="comma list of float32, bfloat16, uint8 (uint8: batches leave the workers as "
                             "bytes; Batch.to(device) normalises them there, e.g. on the GPU)")
    args = parser.parse_args()

    from tools.stand_in_models import save_tiny_clip
    from train.data import TrainDataConfig, make_train_loader
    from train.data.sources import resolve_shards

    print(f"load average at start: {loadavg()} ({os.cpu_count()} CPUs)")
    work = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    out, num_clips = build_corpus(work, args.videos, args.procs)
    processor = save_tiny_clip(work / "clip", image_size=224, patch_size=32)  # CLIP's 224 px preprocessing
    urls = resolve_shards(str(out))
    clips = tar_clips(urls)
    ceiling_fps, frames_per_clip = decord_ceiling(clips)
    print(f"corpus: {num_clips} clips in {len(urls)} shards, {frames_per_clip:.1f} frames per clip on average; "
          f"{args.procs} processes each side, batch {args.batch_size}, T={args.frames} (+ the middle frame)")
    print(f"decord ceiling: {ceiling_fps:.0f} frames/s per core decoding every frame "
          f"(= {ceiling_fps / frames_per_clip:.1f} whole clips/s per core)")

    results = {}
    with multiprocessing.get_context("fork").Pool(args.procs) as pool:
        bare_loop(pool, urls, args.procs, 2 * args.procs, args.frames)  # warm the pool's imports
        for dtype in args.pixel_dtypes.split(","):
            print(f"{dtype} pixels:")
            cfg = TrainDataConfig(shards=str(out), captioner_id="bench", text_source="both",
                                  num_frames=args.frames, batch_size=args.batch_size, num_workers=args.procs,
                                  mode="train", pixel_dtype=dtype)
            loader_iter = iter(make_train_loader(cfg, str(processor), rank=0, world_size=1, seed=0))
            results[dtype] = compare(loader_iter, pool, urls, args, cfg.prefetch_factor)
            del loader_iter  # ends its workers
    for dtype, r in results.items():
        loader = statistics.median(r["loader"])
        print(f"median {dtype}: loader {loader:.1f} clips/s ({loader / args.procs:.1f} clips/s per core), bare "
              f"decord {statistics.median(r['bare']):.1f} clips/s, ratio {statistics.median(r['ratio']):.3f} "
              f"(target >= 0.9); CPU-time ratio {statistics.median(r['cpu_ratio']):.3f}; worker RSS "
              f"{', '.join(f'{x:.0f}' for x in r['rss'])} MiB")
    print(f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
