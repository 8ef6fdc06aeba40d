"""Loader memory over time: stream many rounds from `make_train_loader` and print the RSS of the
main process and of every DataLoader worker after each round (issue 15.11).

A round is `--batches` batches taken from the loader (a "round" of the benchmark, not a shard
round). What to look for: after the warm-up rounds (the shuffle buffer filling up, the first
decodes mapping decord's and ffmpeg's code and buffers), every process's RSS stays flat; the
summary line gives each series' drift from the end of the warm-up to the last round, in percent.

Corpora are those of bench_loader.py (`--content textured`: ~560 KiB clips that cost what real
footage costs to decode; `synthetic`: the demo's ~7 KiB clips), built once into `--work`.
`--set key=value` overrides any TrainDataConfig key (repeatable), which is how one suspect at a
time was removed when the growth was looked for (e.g. `--set sample_shuffle=0`).

    .venv/bin/python benchmarks/bench_loader_soak.py --work /tmp/soak [--content textured]
        [--rounds 12] [--batches 15] [--workers 2] [--batch-size 16] [--frames 12] [--warmup 4]
        [--set sample_shuffle_bytes=0 ...]

Measured here (2 shared CPUs, load average 10-50 from other work, textured corpus: 31 clips of
~560 KiB, 2 workers, batch 16, T=12, uint8, rounds of 15 batches = 240 clips; RSS in MiB):

    before (sample_shuffle 1000, no byte bound; the code before issue 15.11):
      main      544 x 12
      worker 0  654, 719, 794, 858, 940, 1010, 1084, 1125, 1131, 1131, 1131, 1134
      worker 1  654, 726, 804, 864, 939, 1006, 1082, 1127, 1130, 1135, 1135, 1135
    one suspect removed: --set sample_shuffle=0 (no buffer; same code):
      main      443 x 8
      worker 0  467, 473, 450, 452, 468, 461, 472, 465
      worker 1  449, 459, 459, 469, 459, 473, 461, 472
    after (sample_shuffle 1000, sample_shuffle_bytes 128 MiB, the defaults):
      main      451 x 12
      worker 0  645, 640, 664, 645, 650, 644, 667, 644, 659, 668, 655, 665
      worker 1  627, 656, 657, 657, 671, 665, 639, 661, 665, 668, 665, 671

The growth was the shuffle buffer filling with raw mp4 bytes: without it the workers are flat
(+-3%), and tracemalloc in one process (num_workers=0, 60 batches) put 542 MiB in 987 blocks
allocated by tarfile's member read, i.e. the ~1000 buffered samples, rising with RSS step for step
(traced Python memory +145 MiB per 15 batches, RSS +150); decord's readers (9 MiB, not growing)
and the allocator showed no growth of their own. The buffer used to stop growing at 1000 samples,
~0.5 GiB per worker for these clips (open_clip-sized buffers of real clips: more); now it holds at
most sample_shuffle_bytes of mp4 per worker (~190 MiB of RSS for 128 MiB of bytes) and is full
within the first two rounds: flat after that (the +-3% is decode buffers coming and going).

    .venv/bin/python benchmarks/bench_loader_soak.py --work /tmp/soak --rounds 12     # after
    .venv/bin/python benchmarks/bench_loader_soak.py --work /tmp/soak --rounds 12 --set sample_shuffle_bytes=0  # before
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_loader import CONTENTS, build_corpus, children, loadavg  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident set size of `pid` in MiB (0 when it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((line for line in status.splitlines() if line.startswith("VmRSS")), "VmRSS: 0 kB")
    return int(line.split()[1]) / 1024


def drift_percent(series: list[float], warmup: int) -> float:
    """(last - value at the end of the warm-up) / that value, in percent."""
    if len(series) <= warmup:
        return float("nan")
    base = series[warmup - 1] if warmup > 0 else series[0]
    return 100.0 * (series[-1] - base) / base if base else float("nan")


def spread_percent(series: list[float], warmup: int) -> float:
    """(max - min) / min of the rounds after the warm-up, in percent."""
    kept = series[warmup:] if len(series) > warmup else series
    return 100.0 * (max(kept) - min(kept)) / min(kept) if kept and min(kept) else float("nan")


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """`key=value` strings -> TrainDataConfig overrides, typed like the fields they set."""
    from train.data import TrainDataConfig

    types = {f.name: f.type for f in dataclasses.fields(TrainDataConfig)}
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types:
            raise SystemExit(f"--set {pair}: unknown TrainDataConfig key {key!r}")
        kind = str(types[key])
        overrides[key] = (value.lower() in ("1", "true", "yes") if "bool" in kind else
                          int(value) if kind.startswith("int") else float(value) if kind.startswith("float") else value)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--content", default="textured", choices=CONTENTS)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--batches", type=int, default=15, help="batches per round")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=4, help="rounds left out of the drift figure")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--pixel-dtype", default="uint8")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainDataConfig override (repeatable), e.g. sample_shuffle=0")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the built corpus, reused when already built (default: a new temp folder)")
    args = parser.parse_args()

    from tools.stand_in_models import save_tiny_clip
    from train.data import TrainDataConfig, make_train_loader

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_loader_soak_"))
    processor = work / "clip"
    if not (processor / "preprocessor_config.json").is_file():
        save_tiny_clip(processor, image_size=224, patch_size=32)
    out, num_clips = build_corpus(work / args.content, args.videos, args.workers, args.content)
    values = dict(shards=str(out), captioner_id="bench", text_source="both", num_frames=args.frames,
                  batch_size=args.batch_size, num_workers=args.workers, mode="train", pixel_dtype=args.pixel_dtype)
    cfg = TrainDataConfig(**{**values, **parse_overrides(args.overrides)})
    print(f"load average at start: {loadavg()} ({os.cpu_count()} CPUs); {args.content} corpus: {num_clips} clips; "
          f"{args.workers} workers, batch {args.batch_size}, T={args.frames}, {args.pixel_dtype}, "
          f"{args.rounds} rounds of {args.batches} batches; overrides {parse_overrides(args.overrides) or 'none'}")
    stream = iter(make_train_loader(cfg, str(processor), rank=0, world_size=1, seed=0))
    main_rss: list[float] = []
    worker_rss: dict[int, list[float]] = {}
    started = time.perf_counter()
    for round_index in range(1, args.rounds + 1):
        round_started = time.perf_counter()
        for _ in range(args.batches):
            next(stream)
        main_rss.append(rss_mib(os.getpid()))
        for pid in sorted(children(set())):
            worker_rss.setdefault(pid, []).append(rss_mib(pid))
        workers = ", ".join(f"{series[-1]:.0f}" for series in worker_rss.values())
        print(f"round {round_index:3d}: main {main_rss[-1]:7.0f} MiB; workers {workers} MiB; "
              f"{args.batches * args.batch_size / (time.perf_counter() - round_started):.1f} clips/s; "
              f"load {loadavg()}", flush=True)
    del stream
    print(f"\nmain RSS MiB:   {', '.join(f'{x:.0f}' for x in main_rss)}")
    for number, series in enumerate(worker_rss.values()):
        print(f"worker {number} RSS MiB: {', '.join(f'{x:.0f}' for x in series)}")
    drifts = [drift_percent(main_rss, args.warmup)] + [drift_percent(s, args.warmup) for s in worker_rss.values()]
    spreads = [spread_percent(s, args.warmup) for s in worker_rss.values()]
    print(f"drift after round {args.warmup} to round {args.rounds}: main {drifts[0]:+.1f}%, workers "
          f"{', '.join(f'{d:+.1f}%' for d in drifts[1:])}; worker spread (max-min)/min after round {args.warmup}: "
          f"{', '.join(f'{d:.1f}%' for d in spreads)}; {time.perf_counter() - started:.0f} s; "
          f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
