"""Trainer throughput: `train.loop.run_training` vs a bare forward/backward/step loop, one run.

Same tiny CLIP-ViP (tools/stand_in_models, 32 px), same micro-batches, same loss, AdamW and
grad-norm clip, one process:
  bare            the micro-batches already in memory, a plain loop: forward, loss, backward,
                  clip, step;
  trainer/memory  run_training on the same in-memory batches (its bookkeeping: timing, logging
                  to metrics.jsonl + TensorBoard every log_every steps, checkpoint at the end);
  trainer/loader  run_training on the real streaming loader over built shards with
                  --loader-workers DataLoader workers (decode + tokenise in the background).
Step time is measured from one request for a batch to the next (everything the loop does),
after --warmup steps; bare and trainer alternate for --rounds rounds and the median ratio is
reported, beside the ratio of CPU time per step of the process (load-independent on a shared
machine). Target (DESIGN.md section 5): trainer >= 0.9x bare.

Then the H100 arithmetic: the loader's clips/s on one core at the B/16 shape (12 frames,
224 px, one DataLoader-less process, per CPU-second) against the clips/s one H100 consumes at B/16, derived from
a published step rate: open_clip's ViT-B/16 on LAION-400M, 32 epochs of ~407M samples in
10,700 A100-hours (docs/PRETRAINED.md) = ~338 image-text pairs/s per A100. A CLIP-ViP clip costs
about (T + 1) image passes (T frames + the middle frame) and two texts, i.e. ~10x a pair at T=12
(FLOP count below); an H100 is taken as --h100-speedup x an A100 (bf16).
Caveat: by default the loader reads the synthetic corpus, whose flat-colour clips decode in ~6 ms
of CPU; realistic clips (bench_loader.py --content textured, ~54 ms decode, ~60-70 ms of loader
CPU per clip) give ~14-17 clips per CPU-second, i.e. ~5-6 busy cores and about 8 decode cores per
H100 at B/16. Pass --data with a build of your own footage for your number.

    .venv/bin/python benchmarks/bench_train.py [--steps 60] [--warmup 5] [--rounds 3] [--batch-size 4]
        [--loader-workers 2] [--data OUT] [--h100-speedup 2.5]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# Published step rate (open_clip docs/PRETRAINED.md, LAION-400M ViT-B/16, laion400m_e32).
OPENCLIP_B16_SAMPLES = 407e6 * 32
OPENCLIP_B16_A100_HOURS = 10_700
# Forward GFLOPs, ViT-B/16 image tower at 224 px (197 tokens) and CLIP's text tower per token.
VIT_B16_GFLOPS = 17.6
TEXT_GFLOPS_PER_TOKEN = 2 * 38e6 / 1e9  # 2 x ~38M text-transformer weights


def build_corpus(root: Path) -> Path:
    """Synthetic corpus -> shards (a local Ray, shut down after)."""
    from pipeline.builder.config import PipelineConfig
    from pipeline.builder.jobs import run_build
    from tools.make_synthetic_corpus import make_synthetic_corpus

    corpus = make_synthetic_corpus(root / "corpus", num_videos=4, seed=0)
    out = root / "out"
    run_build(corpus.meta_path, out, PipelineConfig(videos_per_shard=1, num_cpus=2), video_root=corpus.video_root,
              progress=False)
    return out


class Timed:
    """Wraps a batch iterator, recording when each batch is requested (loop iteration boundaries)."""

    def __init__(self, batches):
        self.batches, self.times = iter(batches), []

    def __iter__(self):
        return self

    def __next__(self):
        self.times.append((time.perf_counter(), time.process_time()))
        return next(self.batches)


def step_seconds(times: list[tuple[float, float]], warmup: int) -> tuple[float, float]:
    """(median wall seconds per step, mean CPU seconds per step of this process) after `warmup`."""
    walls = [b[0] - a[0] for a, b in zip(times, times[1:])][warmup:]
    cpu = (times[-1][1] - times[warmup][1]) / (len(times) - 1 - warmup)
    return statistics.median(walls), cpu


def bare_loop(setup, batches: list, warmup: int) -> tuple[float, float]:
    """(median wall, mean CPU) seconds per step of the plain loop on in-memory batches."""
    from train.config import loss_features
    from train.loop import load_model, seed_everything
    from train.step import FeatureModel, make_loss_fn, model_inputs

    cfg = setup.train
    seed_everything(cfg.seed)
    model = load_model(cfg.init, cfg).train()
    features = loss_features(cfg.loss, setup.data.text_source)
    forward, loss_fn = FeatureModel(model), make_loss_fn(cfg.loss, features, False)
    optimizer = torch.optim.AdamW(model.parameter_groups(cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    times = []
    for batch in batches:
        times.append((time.perf_counter(), time.process_time()))
        out = forward(**model_inputs(batch, features))
        loss, _ = loss_fn({k: v for k, v in out.items() if k != "logit_scale"}, out["logit_scale"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
        optimizer.step()
    times.append((time.perf_counter(), time.process_time()))
    return step_seconds(times, warmup)


def trainer(setup, run_dir: Path, make_batches, warmup: int) -> tuple[tuple[float, float], dict]:
    from train.loop import run_training

    timed = {}

    def make_loader(data_cfg, **kwargs):
        timed["it"] = Timed(make_batches(data_cfg, **kwargs))
        return timed["it"]

    summary = run_training(setup, run_dir, make_loader=make_loader)
    times = timed["it"].times[: setup.train.max_steps + 1]
    return step_seconds(times, warmup), summary


def loader_clips_per_core(out: Path, root: Path, batches: int = 6) -> tuple[float, float]:
    """Clips/s of the streaming loader in one process (num_workers=0) at the B/16 shape: 12 frames,
    224 px crop, max text length 70; (per wall second, per CPU second of this process: the rate of
    one core of its own, independent of the machine's load)."""
    from tools.stand_in_models import save_tiny_clip
    from train.data import TrainDataConfig, make_train_loader
    from vipstream.config import load_config

    processor = save_tiny_clip(root / "clip224", image_size=224, patch_size=32)
    cfg = load_config(TrainDataConfig, None, {"shards": str(out), "text_source": "subtitle", "num_frames": 12,
                                               "batch_size": 8, "num_workers": 0, "max_text_length": 70,
                                               "sample_shuffle": 16, "sample_shuffle_initial": 8})
    iterator = iter(make_train_loader(cfg, str(processor), rank=0, world_size=1, seed=0))
    next(iterator)  # open + first decode
    started, cpu_started = time.perf_counter(), time.process_time()
    clips = sum(len(next(iterator)) for _ in range(batches))
    return clips / (time.perf_counter() - started), clips / (time.process_time() - cpu_started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-frames", type=int, default=4)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="an existing build OUT folder (default: build one)")
    parser.add_argument("--h100-speedup", type=float, default=2.5, help="H100 / A100 training throughput (bf16)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from tools.stand_in_models import save_tiny_clip
    from train.config import load_setup
    from train.data import make_train_loader

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp_name:
        tmp = Path(tmp_name)
        out = args.data or build_corpus(tmp)
        clip = save_tiny_clip(tmp / "clip32")
        # text_source subtitle + loss vs: no caption sidecar needed (the join costs the loader, not the step)
        values = {"init": str(clip), "shards": str(out), "text_source": "subtitle", "loss": "vs",
                  "num_frames": args.num_frames, "batch_size": args.batch_size, "max_text_length": 32,
                  "num_workers": args.loader_workers, "max_steps": args.steps, "log_every": 10,
                  "save_every": 10 ** 6, "progress": False, "lr": 5e-4, "precision": "fp32",
                  "sample_shuffle": 16, "sample_shuffle_initial": 4}
        setup = load_setup(None, values)
        # The same micro-batches for the bare loop and the in-memory trainer run.
        stream = iter(make_train_loader(setup.data, str(clip), rank=0, world_size=1, seed=0))
        batches = [next(stream) for _ in range(args.steps)]
        del stream

        # Alternate rounds (the machine is shared): median of the per-round ratios.
        bare_runs, memory_runs = [], []
        for round_index in range(args.rounds):
            bare_runs.append(bare_loop(setup, batches, args.warmup))
            memory_runs.append(trainer(setup, tmp / f"run_memory{round_index}",
                                       lambda cfg, **kw: itertools.cycle(batches), args.warmup)[0])
        bare_s, memory_s = (statistics.median(r[0] for r in runs) for runs in (bare_runs, memory_runs))
        memory_ratio = statistics.median(b[0] / m[0] for b, m in zip(bare_runs, memory_runs))
        cpu_ratio = statistics.median(b[1] / m[1] for b, m in zip(bare_runs, memory_runs))
        (loader_s, _), summary = trainer(setup, tmp / "run_loader", lambda cfg, **kw: make_train_loader(cfg, **kw),
                                    args.warmup)
        clips_per_wall_s, clips_per_cpu_s = loader_clips_per_core(out, tmp)

    print(f"tiny config: batch {args.batch_size}, {args.num_frames} frames, 32 px, {args.steps} steps "
          f"(median step after {args.warmup} warm-up steps), 1 process, torch threads 1")
    print(f"  bare loop (in memory)      {1 / bare_s:7.2f} steps/s")
    print(f"  trainer, in-memory batches {1 / memory_s:7.2f} steps/s   ratio {memory_ratio:.3f} (median of "
          f"{args.rounds} alternating rounds: {', '.join(f'{b[0] / m[0]:.3f}' for b, m in zip(bare_runs, memory_runs))}; "
          f"target >= 0.9)")
    print(f"    CPU time per step (load-independent): bare {statistics.median(b[1] for b in bare_runs) * 1e3:.2f} ms, "
          f"trainer {statistics.median(m[1] for m in memory_runs) * 1e3:.2f} ms, ratio {cpu_ratio:.3f}")
    print(f"  trainer, streaming loader  {1 / loader_s:7.2f} steps/s   ratio {bare_s / loader_s:.3f}; "
          f"data-wait fraction {summary['data_wait_fraction']:.3f} with {args.loader_workers} loader workers")

    a100_pairs_s = OPENCLIP_B16_SAMPLES / (OPENCLIP_B16_A100_HOURS * 3600)
    pair_gflops = VIT_B16_GFLOPS + TEXT_GFLOPS_PER_TOKEN * 77
    clip_gflops = (12 + 1) * VIT_B16_GFLOPS + 2 * TEXT_GFLOPS_PER_TOKEN * 70
    h100_clips_s = a100_pairs_s * args.h100_speedup * pair_gflops / clip_gflops
    print(f"H100 arithmetic: open_clip B/16 {a100_pairs_s:.0f} pairs/s per A100; a CLIP-ViP clip (12 frames + "
          f"middle frame + 2 texts) = {clip_gflops / pair_gflops:.1f}x a pair -> {h100_clips_s:.0f} clips/s per H100 "
          f"(x{args.h100_speedup} A100); with gradient checkpointing (~4/3 compute) {h100_clips_s * 3 / 4:.0f}")
    print(f"  loader at the B/16 shape (12 frames, 224 px, 1 process): {clips_per_cpu_s:.1f} clips per CPU-second "
          f"({clips_per_wall_s:.1f} clips/s wall on this shared machine) -> {h100_clips_s / clips_per_cpu_s:.1f} "
          f"busy cores, i.e. {math.ceil(h100_clips_s / clips_per_cpu_s)} decode cores per H100 "
          f"({math.ceil(h100_clips_s * 3 / 4 / clips_per_cpu_s)} with gradient checkpointing)")


if __name__ == "__main__":
    main()
