"""Proxy-guided attention and the CLIP-ViP video encoder vs their baselines, forward + backward, one run.

1. attention op: `model.attention.proxy_guided_attention` vs a dense SDPA over all M + T*P tokens
   with the equivalent boolean mask (the test oracle). Target (DESIGN.md section 5): >= 5x faster.
2. video encoder: `CLIPViPModel.encode_video` on [B, T, 3, H, W] vs the plain CLIP image encoder
   (`CLIPModel.get_image_features`, SDPA attention) on the same B*T frames, both + post-LN,
   projection, L2 norm. Target: <= 1.1x the time.

Defaults are B/16 sizes (width 768, 12 heads, P=196, T=12, M=4, batch 2, one layer). Timings are
medians over repeats, the two contenders alternating so that a busy machine slows both alike.
At toy sizes (the quick run below) fixed overheads dominate and the ratios mean little.

    .venv/bin/python benchmarks/bench_attention.py [--threads 2] [--repeats 5]
    .venv/bin/python benchmarks/bench_attention.py --width 256 --heads 4 --image-size 112 --frames 4  # quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.attention import proxy_guided_attention  # noqa: E402


def dense_proxy_mask(num_proxies: int, num_frames: int, num_patches: int) -> torch.Tensor:
    """`[N, N]` boolean, True = may attend: proxies see all; a patch sees proxies + its own frame."""
    frame_of = torch.cat([torch.full((num_proxies,), -1), torch.arange(num_frames).repeat_interleave(num_patches)])
    mask = frame_of[:, None] == frame_of[None, :]
    mask[:, :num_proxies] = True
    mask[:num_proxies, :] = True
    return mask


def time_alternating(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each step, calls interleaved round by round."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


def bench_attention_op(args: argparse.Namespace, num_patches: int) -> dict[str, float]:
    """Forward + backward of the attention op alone, q/k/v given."""
    batch, heads, head_dim = args.batch, args.heads, args.width // args.heads
    num_tokens = args.proxies + args.frames * num_patches
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, num_tokens, heads, head_dim, generator=generator).requires_grad_()
               for _ in range(3))
    grad_out = torch.randn(batch, num_tokens, heads, head_dim, generator=generator)
    mask = dense_proxy_mask(args.proxies, args.frames, num_patches)

    def proxy_step() -> None:
        out = proxy_guided_attention(q, k, v, args.proxies, args.frames)
        torch.autograd.backward(out, grad_out)

    def dense_step() -> None:
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=mask).transpose(1, 2)
        torch.autograd.backward(out, grad_out)

    with torch.no_grad():
        fast = proxy_guided_attention(q, k, v, args.proxies, args.frames)
        dense = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               attn_mask=mask).transpose(1, 2)
    medians = time_alternating({"proxy": proxy_step, "dense": dense_step}, args.warmup, args.repeats)
    return {**medians, "max_abs_diff": (fast - dense).abs().max().item()}


def bench_encoder(args: argparse.Namespace) -> dict[str, float | str]:
    """Forward + backward of the whole vision tower: CLIP-ViP on videos vs CLIP per frame."""
    from transformers import CLIPConfig, CLIPModel

    from model.clip_vip import CLIPViPModel

    vision = dict(hidden_size=args.width, intermediate_size=4 * args.width, num_hidden_layers=args.layers,
                  num_attention_heads=args.heads, image_size=args.image_size, patch_size=args.patch_size)
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=100, bos_token_id=98, eos_token_id=99, pad_token_id=0)
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)).train()
    baseline_attention = getattr(clip.vision_model.config, "_attn_implementation", "?")
    video_model = CLIPViPModel.from_clip(clip, num_proxies=args.proxies).train()
    pixels = torch.randn(args.batch, args.frames, 3, args.image_size, args.image_size)
    frames = pixels.flatten(0, 1)

    def video_step() -> None:
        video_model.zero_grad(set_to_none=True)
        video_model.encode_video(pixels).sum().backward()

    def per_frame_step() -> None:
        clip.zero_grad(set_to_none=True)
        features = clip.get_image_features(pixel_values=frames)
        features = getattr(features, "pooler_output", features)  # transformers >= 5 returns an output
        F.normalize(features, dim=-1).sum().backward()

    medians = time_alternating({"video": video_step, "per_frame": per_frame_step}, args.warmup, args.repeats)
    return {**medians, "per_frame_attention": baseline_attention}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--proxies", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the CPUs you may use)")
    parser.add_argument("--skip-encoder", action="store_true", help="only the attention op")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num_patches = (args.image_size // args.patch_size) ** 2

    attention = bench_attention_op(args, num_patches)
    summary = {"sizes": {**vars(args), "patches": num_patches},
               "attention_seconds": attention,
               "attention_speedup_vs_dense": attention["dense"] / attention["proxy"]}
    print(f"attention op (fwd+bwd): proxy-guided {attention['proxy']:.3f} s, dense masked "
          f"{attention['dense']:.3f} s -> {summary['attention_speedup_vs_dense']:.2f}x faster "
          f"(target >= 5x; max |diff| {attention['max_abs_diff']:.1e})")
    if not args.skip_encoder:
        encoder = bench_encoder(args)
        summary["encoder_seconds"] = encoder
        summary["encoder_time_ratio_vs_per_frame"] = encoder["video"] / encoder["per_frame"]
        print(f"vision tower (fwd+bwd): CLIP-ViP video {encoder['video']:.3f} s, CLIP per frame "
              f"{encoder['per_frame']:.3f} s -> {summary['encoder_time_ratio_vs_per_frame']:.3f}x the time "
              f"(target <= 1.1x)")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
