"""Measured agreement with the reference implementation's checkpoints and pixels (issue 14).

1. Checkpoints: random weights of a CLIP-ViP in our layout (the B/32 or B/16 architecture, or a
   tiny one), exported with `to_xpretrain_state_dict` to a reference-layout `.pt` in float32 and
   in float16 (the released files were saved under apex O2), loaded back with
   `CLIPViPModel.from_xpretrain`; max |difference| of video embeddings, text embeddings and logits
   against the original model. With `--reference-src` (a local checkout of microsoft/XPretrain's
   `CLIP-ViP` folder; nothing of it is shipped here) the exported state dict is also loaded
   *strictly* into the reference's own `CLIPModel` and its embeddings are compared with ours.
2. Pixels: our torch preprocessing (train/data/pixels.py) against transformers'
   CLIPImageProcessor on real decoded frames of ffmpeg-made non-square videos, for the legacy
   int size, `{"shortest_edge"}` and the reference's square `{"height", "width"}`.

    python -m tools.xpretrain_parity [--arch b32|b16|tiny] [--reference-src PATH/CLIP-ViP] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
ARCHS = ("b32", "b16", "tiny")


def clip_config(arch: str):
    """Transformers' CLIPConfig defaults are openai/clip-vit-base-patch32's architecture."""
    from transformers import CLIPConfig

    if arch == "b32":
        return CLIPConfig()
    if arch == "b16":
        return CLIPConfig(vision_config={"patch_size": 16})
    if arch == "tiny":
        small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        return CLIPConfig(text_config={**small, "vocab_size": 100, "max_position_embeddings": 16,
                                       "bos_token_id": 98, "eos_token_id": 99, "pad_token_id": 1},
                          vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=16)
    raise ValueError(f"arch: expected one of {ARCHS}, found {arch!r}")


def _text_inputs(config, batch: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids with one end token (the largest id, so argmax pooling and eos pooling agree) + mask."""
    eos = config.text_config.eos_token_id
    ids = torch.randint(2, eos, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(batch):
        end = length - 1 - row % max(length - 2, 1)
        ids[row, end] = eos
        ids[row, end + 1:] = 1
        mask[row, end + 1:] = 0
    return ids, mask


def _features(encode_video, encode_text, logit_scale, video, ids, mask) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        v, t = encode_video(video), encode_text(ids, mask)
        return {"video": v, "text": t, "logits": logit_scale * t @ v.T}


def _max_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float((a[name] - b[name]).abs().max()) for name in a}


def checkpoint_report(arch: str = "b32", batch: int = 2, frames: int = 12, seed: int = 0,
                      reference_src: str | Path | None = None) -> dict[str, Any]:
    """Max |difference| of embeddings/logits after the reference-layout round trip (and against the
    reference's own module when `reference_src` is given)."""
    from transformers import CLIPModel

    from model.clip_vip import CLIPViPModel

    config = clip_config(arch)
    torch.manual_seed(seed)
    ours = CLIPViPModel(CLIPModel(config)).eval()
    with torch.no_grad():
        ours.temporal_embedding.normal_(std=0.02)  # a trained-looking table (CLIP init leaves it 0)
        ours.clip.logit_scale.fill_(4.60)
    generator = torch.Generator().manual_seed(seed + 1)
    size = config.vision_config.image_size
    video = torch.randn(batch, frames, 3, size, size, generator=generator)
    ids, mask = _text_inputs(config, batch, min(20, config.text_config.max_position_embeddings), generator)
    expected = _features(ours.encode_video, ours.encode_text, ours.logit_scale, video, ids, mask)
    report: dict[str, Any] = {"arch": arch, "batch": batch, "frames": frames}
    with tempfile.TemporaryDirectory(prefix="xpretrain-parity-") as scratch:
        for dtype in (torch.float32, torch.float16):
            path = Path(scratch) / f"{dtype}.pt"
            torch.save(ours.to_xpretrain_state_dict(dtype=dtype), path)
            loaded = CLIPViPModel.from_xpretrain(path, config)
            got = _features(loaded.encode_video, loaded.encode_text, loaded.logit_scale, video, ids, mask)
            report[f"round trip {str(dtype).replace('torch.', '')}"] = _max_differences(got, expected)
    if reference_src is not None:
        report["reference module"] = _against_reference(ours, config, reference_src, video, ids, mask, expected)
    return report


def _against_reference(ours, config, reference_src, video, ids, mask, expected) -> dict[str, Any]:
    """Load our exported state dict strictly into XPretrain's own CLIPModel (CLIP-ViP/src/modeling/
    CLIP_ViP.py of a local checkout) and compare its embeddings with ours."""
    sys.path.insert(0, str(Path(reference_src)))
    try:
        from src.modeling.CLIP_ViP import CLIPModel as ReferenceCLIPModel  # the checkout's code
    finally:
        sys.path.pop(0)
    config = config.__class__.from_dict(config.to_dict())
    config.vision_additional_config = types.SimpleNamespace(  # the reference configs' values
        type="ViP", temporal_size=ours.config.temporal_size, if_use_temporal_embed=1,
        logit_scale_init_value=4.60, add_cls_num=ours.config.num_proxies - 1)
    reference = ReferenceCLIPModel(config).eval()
    state = {key[len("clipmodel."):]: value for key, value in ours.to_xpretrain_state_dict().items()}
    reference.load_state_dict(state, strict=True)
    with torch.no_grad():
        got = _features(lambda v: reference.get_image_features(pixel_values=v, if_norm=True),
                        lambda i, m: reference.get_text_features(input_ids=i, attention_mask=m, if_norm=True),
                        reference.logit_scale.exp(), video, ids, mask)
    return {"strict load": "ok", "keys": len(state), **_max_differences(got, expected)}


def _make_video(path: Path, size: str) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10:duration=2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def pixel_report(image_sizes: tuple[int, ...] = (224, 32)) -> list[dict[str, Any]]:
    """Our pixels vs CLIPImageProcessor's (PIL) on decoded frames of 320x240 and 180x320 videos."""
    import decord
    from PIL import Image
    from transformers import AutoImageProcessor

    from train.data.pixels import PixelSpec, preprocess_frames

    level = 1 / 255 / min(_CLIP_STD)
    rows = []
    with tempfile.TemporaryDirectory(prefix="xpretrain-pixels-") as scratch:
        root = Path(scratch)
        for video_size in ("320x240", "180x320"):
            path = _make_video(root / f"{video_size}.mp4", video_size)
            frames = decord.VideoReader(str(path), num_threads=1).get_batch([0, 7, 15]).asnumpy()
            for image_size in image_sizes:
                for form, size in (("legacy int", image_size), ("shortest_edge", {"shortest_edge": image_size}),
                                   ("height/width", {"height": image_size, "width": image_size})):
                    folder = root / f"{video_size}-{image_size}-{form.replace('/', '_').replace(' ', '_')}"
                    folder.mkdir()
                    (folder / "preprocessor_config.json").write_text(json.dumps({
                        "do_resize": True, "size": size, "resample": 3, "do_center_crop": True,
                        "crop_size": {"height": image_size, "width": image_size}, "do_normalize": True,
                        "image_mean": _CLIP_MEAN, "image_std": _CLIP_STD, "image_processor_type": "CLIPImageProcessor"}))
                    ours = preprocess_frames(frames, PixelSpec.from_pretrained(folder))
                    processor = AutoImageProcessor.from_pretrained(str(folder), backend="pil")
                    theirs = torch.stack([torch.from_numpy(np.asarray(processor(images=Image.fromarray(f),
                                                                                return_tensors="np")["pixel_values"][0]))
                                          for f in frames])
                    difference = (ours - theirs).abs()
                    rows.append({"video": video_size, "size": image_size, "form": form,
                                 "max": float(difference.max()), "mean": float(difference.mean()),
                                 "max_levels": float(difference.max() / level),
                                 "over_2_levels": float((difference > 2.01 * level).float().mean())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHS, default="b32", help="architecture of the random weights")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--reference-src", type=Path, default=None,
                        help="a local checkout's CLIP-ViP folder (holding src/modeling/CLIP_ViP.py)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    report = {"checkpoint": checkpoint_report(args.arch, frames=args.frames, reference_src=args.reference_src),
              "pixels": pixel_report()}
    print(f"checkpoint agreement, max |difference| ({args.arch}, {args.frames} frames, random weights):")
    for name, values in report["checkpoint"].items():
        if isinstance(values, dict):
            print(f"  {name:18s} " + "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in values.items()))
    print("pixels vs CLIPImageProcessor (PIL), normalised units (1 uint8 level = %.4f):" % (1 / 255 / min(_CLIP_STD)))
    for row in report["pixels"]:
        print(f"  {row['video']:8s} -> {row['size']:3d} {row['form']:13s} max {row['max']:.4f} "
              f"({row['max_levels']:.1f} levels)  mean {row['mean']:.2e}  pixels > 2 levels {row['over_2_levels']:.2%}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
