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

Content (`--content`): `textured` sources (fractals, cellular automata, test patterns under
drifting gradients and temporal grain, 640x360 at 25 fps) go through the real `vipstream build`
(3 fps, short side 224, x264 CRF 23) into clips of ~560 KiB whose 13 needed frames cost ~54-59
ms CPU to decode: near real footage. `synthetic` is the demo corpus (flat colour shapes, ~7 KiB
per clip, ~6 ms): a light decode that the loader's fixed per-clip costs dominate.

Measured here (2 shared CPUs, load average 4.4-7.1 during the run, 4 videos -> 31 clips of ~30
frames in 4 shards, 2 processes each side, batch 16, T=12, 3 rounds of 15 timed batches):

    content    dtype     decode ms   loader    bare   ratio   per core   CPU ratio
    textured   float32        53.8     18.1    18.5   1.180        9.0       0.891
    textured   bfloat16       53.8     21.0    19.7   1.065       10.5       0.840
    textured   uint8          53.8     20.7    19.9   0.966       10.3       0.839
    synthetic  float32         6.2     96.8   140.1   0.691       48.4       0.582
    synthetic  bfloat16        6.2     95.9   136.1   0.704       47.9       0.563
    synthetic  uint8           6.2    103.2   137.3   0.705       51.6       0.628

(clips/s, medians; CPU ratio = bare CPU per clip / loader CPU per clip, main process included.)
Wall-clock ratios swing by +-0.25 round to round on this shared machine (the loader above the
bare loop is noise); the CPU-time ratio is the steadier figure. Loader CPU per clip: textured
~59-71 ms vs bare ~53-55; synthetic ~11-13 ms vs ~7 (before the changes below, float32: 16-18
ms synthetic, 68-78 ms textured, same corpora). Where it goes: workers hand batches over as
uint8 whatever `pixel_dtype` (a float32 batch is 7.2 MB per clip of fresh shared memory, ~7 ms
of page faults per clip on this VM, ~3.6 us per 4 KiB page with shmem huge pages off), kept
channel-last (a plain copy); TrainLoader normalises them in the main process into fresh numpy
buffers (transparent huge pages), one image at a time on one thread: ~1.5 (worker) + ~1.9 (main)
ms per clip instead of ~7.3 (micro-benchmark). The rest is the webdataset tar stream and the
1000-sample shuffle buffer (it holds the mp4 bytes; it used to grow worker RSS by ~0.5 GiB on
these clips, now bounded by sample_shuffle_bytes: bench_loader_soak.py), collation, tokenising.
Not done: decord's resize-on-decode (the builder's clips already have the 224 short side, so
the crop is a view and nothing is resized). torchcodec could not be tried: the PyPI wheel is
the CUDA build (needs libnvrtc). The consumer's cost is not timed (the bench never touches the
pixels; a float32 batch from shared memory would also fault in the trainer when it reads it).

Captions: the sidecars are written directly with one caption per clip (their content does not
change the loader's cost; `vipstream caption` is benchmarked by bench_caption.py).

    .venv/bin/python benchmarks/bench_loader.py [--content textured,synthetic] [--videos 4]
        [--procs 2] [--batches 30] [--batch-size 16] [--frames 12] [--rounds 3]
        [--pixel-dtypes float32,uint8] [--work DIR (reuse built corpora)]
    measured with: --pixel-dtypes float32,bfloat16,uint8 --batches 15 (--work of a prior build)
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


def decord_ceiling(clips: list[tuple[str, bytes]], frames: int) -> tuple[float, float, float]:
    """(frames/s decoding every frame, mean frames per clip, CPU ms per clip decoding only the
    loader's frames: T + the middle one), in this one process."""
    import decord
    import numpy as np

    from train.data.frames import train_frame_indices
    from train.data.seeding import sample_rng
    from vipstream.schema import middle_frame_index

    decoded, started = 0, time.perf_counter()
    for _, mp4 in clips:
        reader = decord.VideoReader(io.BytesIO(mp4), ctx=decord.cpu(0), num_threads=1)
        decoded += len(reader)
        reader.get_batch(list(range(len(reader)))).asnumpy()
        del reader
    fps = decoded / (time.perf_counter() - started)
    cpu_started = time.process_time()
    for key, mp4 in clips:
        reader = decord.VideoReader(io.BytesIO(mp4), ctx=decord.cpu(0), num_threads=1)
        n = len(reader)
        wanted = np.unique(np.append(train_frame_indices(n, frames, sample_rng(0, 0, key, "frames")),
                                     middle_frame_index(n)))
        reader.get_batch(wanted.tolist()).asnumpy()
        del reader
    return fps, decoded / len(clips), (time.process_time() - cpu_started) * 1000 / len(clips)


# Textured sources (`--content textured`): natural-image-like detail and motion at 640x360, 25 fps,
# so the clips the builder writes (3 fps, short side 224, x264 CRF 23) cost what real footage
# costs to decode. Each video takes one detailed pattern, blended with drifting colour gradients,
# plus temporal grain (every frame differs, as camera noise makes it). The synthetic demo clips
# (flat colour shapes) compress to almost nothing and decode several times faster.
TEXTURES = (
    "mandelbrot=s=640x360:r=25",
    "cellauto=s=640x360:r=25:rule=110:random_fill_ratio=0.5,boxblur=1",
    "life=s=640x360:r=25:mold=10:ratio=0.3:life_color=#ffcc88:death_color=#203060:mold_color=#806040,boxblur=1",
    "testsrc2=s=640x360:r=25",
)
CONTENTS = ("synthetic", "textured")


def render_textured(path: Path, duration_s: float, index: int) -> None:
    """Replace the video at `path` by a textured one of the same duration (audio: a sine tone)."""
    import subprocess

    # Both inputs in yuv420p before the blend (mixed formats crashed ffmpeg's blend here).
    graph = (f"{TEXTURES[index % len(TEXTURES)]},format=yuv420p[p];"
             f"gradients=s=640x360:r=25:speed=0.03:n=4:seed={index},format=yuv420p[g];"
             f"[p][g]blend=all_mode=overlay:all_opacity=0.6,noise=alls=12:allf=t,format=yuv420p[v];"
             f"sine=frequency={220 + 40 * index}:sample_rate=16000[a]")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
                    "-t", f"{duration_s:.3f}", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
                    "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(path)], check=True)


def build_corpus(work: Path, videos: int, cpus: int, content: str = "synthetic") -> tuple[Path, int]:
    """Synthetic corpus (videos re-rendered textured with `content` textured) -> `vipstream build`
    (one video per shard) -> direct caption sidecars. A finished build in `work` is reused."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from pipeline.builder.config import PipelineConfig
    from pipeline.builder.jobs import run_build
    from tools.make_synthetic_corpus import make_synthetic_corpus
    from vipstream.schema import CAPTION_COLUMNS, caption_sidecar_path, middle_frame_index

    out = work / "out"
    if (out / "manifest.parquet").is_file() and (work / "captions.done").is_file():
        return out, pq.read_metadata(out / "manifest.parquet").num_rows
    corpus = make_synthetic_corpus(work / "corpus", num_videos=videos, seed=1, min_duration_s=60, max_duration_s=120)
    if content == "textured":
        for index, video_id in enumerate(corpus.video_ids):
            render_textured(corpus.video_root / f"{video_id}.mp4", corpus.scenes[video_id][-1].end_s, index)
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
    (work / "captions.done").touch()
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
                        help="comma list of float32, bfloat16, uint8 (uint8: batches leave the loader as "
                             "bytes; Batch.to(device) normalises them there, e.g. on the GPU)")
    parser.add_argument("--content", default="textured,synthetic",
                        help="comma list of textured (detailed, moving, grainy sources: a realistic decode "
                             "cost) and synthetic (the demo corpus's flat colour shapes: very cheap to decode)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the built corpora, reused when already built (default: a new temp folder)")
    args = parser.parse_args()
    contents = args.content.split(",")
    if not set(contents) <= set(CONTENTS):
        parser.error(f"--content: expected a comma list of {CONTENTS}, found {args.content!r}")

    from tools.stand_in_models import save_tiny_clip
    from train.data import TrainDataConfig, make_train_loader
    from train.data.sources import resolve_shards

    print(f"load average at start: {loadavg()} ({os.cpu_count()} CPUs)")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_loader_"))
    processor = save_tiny_clip(work / "clip", image_size=224, patch_size=32)  # CLIP's 224 px preprocessing
    results, decode_ms = {}, {}
    with multiprocessing.get_context("fork").Pool(args.procs) as pool:
        for content in contents:
            out, num_clips = build_corpus(work / content, args.videos, args.procs, content)
            urls = resolve_shards(str(out))
            clips = tar_clips(urls)
            ceiling_fps, frames_per_clip, decode_ms[content] = decord_ceiling(clips, args.frames)
            print(f"{content} corpus: {num_clips} clips in {len(urls)} shards, {frames_per_clip:.1f} frames per clip "
                  f"on average, {sum(len(m) for _, m in clips) / len(clips) / 1024:.0f} KiB per clip; {args.procs} "
                  f"processes each side, batch {args.batch_size}, T={args.frames} (+ the middle frame)")
            print(f"decord ceiling: {ceiling_fps:.0f} frames/s per core decoding every frame "
                  f"(= {ceiling_fps / frames_per_clip:.1f} whole clips/s per core); the loader's frames of a clip "
                  f"cost {decode_ms[content]:.1f} ms CPU to decode")
            bare_loop(pool, urls, args.procs, 2 * args.procs, args.frames)  # warm the pool's imports and cache
            for dtype in args.pixel_dtypes.split(","):
                print(f"{content}, {dtype} pixels:")
                cfg = TrainDataConfig(shards=str(out), captioner_id="bench", text_source="both",
                                      num_frames=args.frames, batch_size=args.batch_size, num_workers=args.procs,
                                      mode="train", pixel_dtype=dtype)
                loader_iter = iter(make_train_loader(cfg, str(processor), rank=0, world_size=1, seed=0))
                results[content, dtype] = compare(loader_iter, pool, urls, args, cfg.prefetch_factor)
                del loader_iter  # ends its workers
    print(f"\n{'content':10} {'dtype':9} {'decode ms':>9} {'loader':>8} {'bare':>8} {'ratio':>6} {'per core':>8} "
          f"{'CPU ratio':>9}  worker RSS MiB")
    for (content, dtype), r in results.items():
        loader = statistics.median(r["loader"])
        print(f"{content:10} {dtype:9} {decode_ms[content]:9.1f} {loader:8.1f} {statistics.median(r['bare']):8.1f} "
              f"{statistics.median(r['ratio']):6.3f} {loader / args.procs:8.1f} {statistics.median(r['cpu_ratio']):9.3f}"
              f"  {', '.join(f'{x:.0f}' for x in r['rss'])}")
    print(f"(clips/s; ratio = loader / bare, target >= 0.9; per core = loader clips/s per process; CPU ratio = bare "
          f"CPU per clip / loader CPU per clip, main process included)\nload average at end: {loadavg()}")


if __name__ == "__main__":
    main()
