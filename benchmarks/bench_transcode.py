"""Transcode throughput: the `vipstream build` job vs a bare ffmpeg subprocess loop, one run.

Both do the same cuts (the spans the job wrote to manifest.parquet) with the same encoder
settings on the same number of parallel workers (the Ray CPUs). The job's time includes
everything it does per corpus (manifest, probes, subtitles, tars, parquet); Ray start-up is
excluded, as a cluster is started once and reused. Target (DESIGN.md section 5): ratio >= 0.85.

The job pays one ffprobe per source video (~75 ms here, mostly process start-up) that the bare
loop does not, so the ratio depends on clips per video. The defaults approach HD-VILA-100M's
shape (videos average ~6.7 min, ~31 clips each): 6 videos of 240-540 s, ~34 clips each, one
video per shard. Shorter videos show the probe's share: measured here, ~17 clips per video gave
0.83 and the 4-video demo corpus (~7 clips per video) ~0.78.

    .venv/bin/python benchmarks/bench_transcode.py [--videos 6] [--min-duration-s 240]
        [--max-duration-s 540] [--cpus 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bare_ffmpeg_loop(jobs: list[tuple[str, float, float]], cfg, workers: int, out_dir: Path) -> float:
    """Seconds for plain `ffmpeg` processes doing the cuts, `workers` at a time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    short = cfg.short_side_px
    scale = f"scale='if(lt(iw,ih),{short},-2)':'if(lt(iw,ih),-2,{short})'"

    def run(index_job):
        index, (src, start_s, end_s) = index_job
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-threads", str(cfg.ffmpeg_threads),
                        "-ss", f"{start_s:.3f}", "-t", f"{end_s - start_s:.3f}", "-i", src,
                        "-vf", f"fps={cfg.fps},{scale}", "-c:v", "libx264", "-preset", cfg.preset,
                        "-crf", str(cfg.crf), "-pix_fmt", "yuv420p", "-an", "-threads",
                        str(cfg.ffmpeg_threads), "-movflags", "+faststart", str(out_dir / f"{index}.mp4")],
                       check=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, enumerate(jobs)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--min-duration-s", type=float, default=240.0)
    parser.add_argument("--max-duration-s", type=float, default=540.0)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import ray

    from pipeline.builder.config import PipelineConfig
    from pipeline.builder.jobs import run_build
    from pipeline.builder.manifest import read_manifest
    from tools.make_synthetic_corpus import make_synthetic_corpus

    work = Path(tempfile.mkdtemp(prefix="bench_transcode_"))
    corpus = make_synthetic_corpus(work / "corpus", num_videos=args.videos, seed=1,
                                   min_duration_s=args.min_duration_s, max_duration_s=args.max_duration_s)
    sources = {e.video_id: e.path for e in read_manifest(corpus.meta_path, corpus.video_root).entries}
    cfg = PipelineConfig(videos_per_shard=1)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    ratios, job_rates, bare_rates = [], [], []
    for round_index in range(args.rounds + 1):  # round 0 warms caches and workers, not counted
        out = work / f"out{round_index}"
        started = time.perf_counter()
        summary = run_build(corpus.meta_path, out, cfg, video_root=corpus.video_root, progress=False)
        job_s = time.perf_counter() - started
        rows = pq.read_table(out / "manifest.parquet").to_pylist()
        jobs = [(sources[r["video_id"]], r["start_s"], r["end_s"]) for r in rows]
        bare_s = bare_ffmpeg_loop(jobs, cfg, args.cpus, work / f"bare{round_index}")
        if round_index == 0:
            continue
        job_rates.append(summary["clips"] / job_s)
        bare_rates.append(len(jobs) / bare_s)
        ratios.append(job_rates[-1] / bare_rates[-1])
        print(f"round {round_index}: job {job_rates[-1]:.2f} clips/s, bare ffmpeg {bare_rates[-1]:.2f} clips/s,"
              f" ratio {ratios[-1]:.3f}")
    ray.shutdown()
    print(f"clips: {summary['clips']} from {args.videos} videos, {args.cpus} CPUs")
    print(f"median: job {statistics.median(job_rates):.2f} clips/s, bare ffmpeg "
          f"{statistics.median(bare_rates):.2f} clips/s, ratio {statistics.median(ratios):.3f} (target >= 0.85)")


if __name__ == "__main__":
    main()
