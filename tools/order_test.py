"""The demo's time-order test: does a model tell a video from its time-reversed twin?

Every video of the demo's retrieval set (tools/demo_data.py) has a twin showing the same frames
in reverse order, with captions that differ only in direction. For each caption we ask whether the
model scores its own video above the twin. 50 % is blindness to time: a per-frame model averaged
over frames (CLIP4Clip-meanP) sits there by construction, and so does a video model that has not
learnt to use frame order. Recall@K mixes this with appearance; this number isolates it.

Frames: the eval rule `linspace(0, n-1, T)` on the annotated mp4 files, decoded with decord, through
the checkpoint's own image processor.

    order_test(checkpoint, annotations_jsonl, baseline=None | "meanpool") -> {"accuracy", "ties", "captions"}
    python -m tools.order_test --checkpoint DIR --annotations retrieval.jsonl [--baseline meanpool]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def _frames(path: Path, num_frames: int) -> list[np.ndarray]:
    import decord

    from train.data.frames import eval_frame_indices  # the loader's (the reference's) eval rule

    reader = decord.VideoReader(str(path))
    indices = eval_frame_indices(len(reader), num_frames).tolist()
    return list(reader.get_batch(indices).asnumpy())


def order_test(checkpoint: str | Path, annotations: str | Path, baseline: str | None = None,
               num_frames: int = 12) -> dict[str, Any]:
    """Fraction of captions whose own video outscores its time-reversed twin (cosine similarity).

    annotations: retrieval.jsonl of tools/demo_data.make_retrieval_set (twins on consecutive rows)."""
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer

    annotations = Path(annotations)
    rows = [json.loads(line) for line in annotations.read_text().splitlines() if line.strip()]
    processor = AutoImageProcessor.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if baseline == "meanpool":
        from transformers import CLIPModel

        clip = CLIPModel.from_pretrained(checkpoint).eval()

        def video(pixels: torch.Tensor) -> torch.Tensor:  # [T, 3, S, S] -> [D]
            features = clip.get_image_features(pixel_values=pixels)
            features = getattr(features, "pooler_output", features)
            return torch.nn.functional.normalize(torch.nn.functional.normalize(features, dim=-1).mean(0), dim=-1)

        def text(tokens: Any) -> torch.Tensor:
            features = clip.get_text_features(**tokens)
            return torch.nn.functional.normalize(getattr(features, "pooler_output", features), dim=-1)
    else:
        from model.clip_vip import CLIPViPModel

        model = CLIPViPModel.from_pretrained(checkpoint).eval()

        def video(pixels: torch.Tensor) -> torch.Tensor:
            return model.encode_video(pixels.unsqueeze(0))[0]

        def text(tokens: Any) -> torch.Tensor:
            return model.encode_text(tokens["input_ids"], tokens["attention_mask"])

    wins = ties = total = 0
    with torch.no_grad():
        features = {}
        for row in rows:
            frames = _frames(annotations.parent / row["path"], num_frames)
            features[row["video_id"]] = video(processor(images=frames, return_tensors="pt").pixel_values)
        for first, second in zip(rows[0::2], rows[1::2]):
            for own, twin in ((first, second), (second, first)):
                tokens = tokenizer(own["captions"], padding=True, truncation=True, max_length=70, return_tensors="pt")
                sims = text(tokens) @ torch.stack([features[own["video_id"]], features[twin["video_id"]]]).T
                wins += int((sims[:, 0] > sims[:, 1]).sum())
                ties += int((sims[:, 0] == sims[:, 1]).sum())
                total += len(own["captions"])
    return {"accuracy": 100.0 * wins / max(1, total), "ties": ties, "captions": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Own video vs its time-reversed twin, per caption (50 % = blind to time).")
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--annotations", required=True, type=Path, help="retrieval.jsonl of the demo's retrieval set")
    parser.add_argument("--baseline", choices=("meanpool",), default=None)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--output", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = order_test(args.checkpoint, args.annotations, args.baseline, args.frames)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
