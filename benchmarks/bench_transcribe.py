"""Transcription throughput: the `vipstream transcribe` Ray Data job vs a bare loop (one ffmpeg
decode per video + the same `generate` calls on the same blocks, same model, same batch size,
same torch threads), one run, in audio-seconds per second. Target: ratio >= 0.8.

A random-init Whisper of whisper-tiny's size (d_model 384, 4 + 4 layers, 6 heads, 80 mel bins;
built from a config, nothing downloaded) transcribes real ffmpeg videos made in a temp dir. Every
block is longer than one 30 s window, so Whisper's long-form path runs on each with its own
attention mask and a block's work does not depend on which blocks share its batch: both sides do
the same work (checked: the same segments come out). Greedy decoding with the guards on and no
temperature fallback (a random model fails every guard; fallback would sample, differently on
each side).

Fairness: Ray is started before timing and the bare loop's model is loaded before its timing
starts, as the job's actor does before its first batch; the job's time is the whole
`run_transcribe_job` call, which also pays the actor's process start and torch/transformers
imports, Ray Data planning, the probes and the VTT writes. The decode task (ffmpeg + log-mel) runs
on the second CPU, overlapped with the model, as on a real cluster.

    .venv/bin/python benchmarks/bench_transcribe.py [--videos 12] [--seconds 145] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bare_decode(path: Path) -> "np.ndarray":
    """The whole first audio stream as 16 kHz mono float32, one ffmpeg (the bare baseline's decode)."""
    import numpy as np

    from pipeline.transcribe.audio import _decode_args

    done = subprocess.run(_decode_args(path.resolve()), stdin=subprocess.DEVNULL, capture_output=True, check=True)
    return np.frombuffer(done.stdout, dtype=np.float32)


def bare_loop(videos: list[Path], cfg, model) -> tuple[float, float, list]:
    """(audio seconds, seconds, [(video, block start_s, block audio_s, BlockResult)]) of ffmpeg +
    features + generate, video by video, in batches of cfg.batch_size blocks."""
    from pipeline.transcribe.asr import block_features, load_feature_extractor
    from pipeline.transcribe.audio import SAMPLE_RATE

    extractor = load_feature_extractor(cfg.asr)
    block_n, step_n = int(cfg.block_s * SAMPLE_RATE), int((cfg.block_s - cfg.overlap_s) * SAMPLE_RATE)
    started = time.perf_counter()
    audio_s, pending, places, results = 0.0, [], [], []
    for video in videos:
        samples = bare_decode(video)
        audio_s += len(samples) / SAMPLE_RATE
        start = 0
        while True:
            block = samples[start:start + block_n]
            pending.append(block_features(extractor, block))
            places.append((video.stem, start / SAMPLE_RATE, len(block) / SAMPLE_RATE))
            if start + block_n >= len(samples):
                break
            start += step_n
        while len(pending) >= cfg.batch_size:
            results += model(pending[:cfg.batch_size])
            pending = pending[cfg.batch_size:]
    if pending:
        results += model(pending)
    return audio_s, time.perf_counter() - started, [(*place, r) for place, r in zip(places, results)]


def bare_cues(results: list) -> dict[str, list]:
    """The bare loop's segments stitched per video as the job's writer does (repeat filter off)."""
    from pipeline.transcribe.stitch import BlockTranscript, Segment, stitch_blocks

    blocks: dict[str, list] = {}
    for video, start_s, audio_s, result in results:
        segments = tuple(Segment(start_s + s.start_s, start_s + s.end_s, s.text) for s in result.segments)
        blocks.setdefault(video, []).append(BlockTranscript(len(blocks.get(video, [])), start_s, start_s + audio_s,
                                                            segments))
    return {video: stitch_blocks(b) for video, b in blocks.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=145.0, help="per video: 3 blocks of 60 s, the last 35 s")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the model (both sides)")
    parser.add_argument("--cpus", type=int, default=2, help="local Ray CPUs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # as Ray gives an actor with num_cpus=N

    import ray
    import torch

    from pipeline.transcribe.asr import AsrModel
    from pipeline.transcribe.config import TranscribeConfig
    from pipeline.transcribe.job import run_transcribe_job
    from pipeline.builder.subtitles import load_subtitles
    from tests.transcription import make_av, save_tiny_whisper
    from vipstream.schema import asr_subtitle_path

    with tempfile.TemporaryDirectory(prefix="bench_transcribe_") as tmp:
        tmp = Path(tmp)
        model_dir = save_tiny_whisper(tmp / "whisper-tiny-size", d_model=384, layers=4, heads=6)
        corpus = tmp / "corpus"
        corpus.mkdir()
        videos = [make_av(corpus / f"v{k:02d}.mp4", args.seconds, audio=f"sine=frequency={200 + 37 * k}")
                  for k in range(args.videos)]
        cfg = TranscribeConfig(asr=str(model_dir), language="en", temperatures=(0.0,), max_new_tokens=args.max_new_tokens,
                               block_s=60.0, overlap_s=5.0, batch_size=args.batch_size, num_cpus=float(args.threads),
                               cue_compression_ratio_threshold=0.0, max_ngram_repeats=0, drop_repeated_cues=False)

        torch.set_num_threads(args.threads)
        model = AsrModel(cfg)
        audio_s, bare_s, bare_results = bare_loop(videos, cfg, model)

        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
        try:
            started = time.perf_counter()
            summary = run_transcribe_job(corpus, tmp / "asr", cfg, progress=False)
            job_s = time.perf_counter() - started
        finally:
            ray.shutdown()
        job_cues = {v.stem: load_subtitles(asr_subtitle_path(tmp / "asr", v.stem)) for v in videos
                    if asr_subtitle_path(tmp / "asr", v.stem).exists()}
        expected = {v: c for v, c in bare_cues(bare_results).items() if c}

    load = os.getloadavg()
    result = {
        "videos": args.videos,
        "audio_s": round(audio_s, 1),
        "blocks": len(bare_results),
        "videos_failed": summary["videos_failed"],
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": args.threads,
        "ray_cpus": args.cpus,
        "model": "Whisper random init, d_model 384, 4+4 layers, 6 heads (whisper-tiny's shape)",
        "bare_s": round(bare_s, 2),
        "bare_audio_s_per_s": round(audio_s / bare_s, 3),
        "job_s": round(job_s, 2),
        "job_audio_s_per_s": round(audio_s / job_s, 3),
        "ratio": round(bare_s / job_s, 3),
        "job_audio_hours": summary["audio_hours"],
        "cues": sum(len(c) for c in job_cues.values()),
        "same_cues": job_cues == expected,  # the same model work on both sides
        "load_average": [round(x, 1) for x in load],
    }
    print(json.dumps(result, indent=2))
    print(f"transcribe job: {result['job_audio_s_per_s']} audio-s/s vs bare ffmpeg + generate loop "
          f"{result['bare_audio_s_per_s']} audio-s/s -> ratio {result['ratio']} (target >= 0.8; load average "
          f"{result['load_average']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
