"""The demo's time-order test: does a model tell a video from its time-reversed twin?

Every video of the demo's retrieval set (tools/demo_data.py) has a twin showing the same frames
in reverse order, with captions that differ only in direction. For each caption we ask whether the
model scores its own video above the twin. 50 % is blindness to time: a per-frame model averaged
over frames (CLIP4Clip-meanP) sits there by construction, and so does a video model that has not
learnt to use frame order. Recall@K mixes this with appearance; this number isolates it.

Frames: the eval rule `linspace(0, n-1, T)` on the annotated mp4 files, decoded with decord; the
checkpoint, its preprocessing and tokenisation are `vipstream eval`'s (train.evaluate.load_encoders).

    order_test(checkpoint, annotations_jsonl, baseline=None | "meanpool") -> {"accuracy", "ties", "captions"}
    python -m tools.order_test --checkpoint DIR --annotations retrieval.jsonl [--baseline meanpool]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def _frames(path: Path, num_frames: int) -> np.ndarray:
    """[T, H, W, 3] uint8 RGB frames at the eval rule's indices."""
    import decord

    from train.data.frames import eval_frame_indices

    reader = decord.VideoReader(str(path))
    return reader.get_batch(eval_frame_indices(len(reader), num_frames).tolist()).asnumpy()


def order_test(checkpoint: str | Path, annotations: str | Path, baseline: str | None = None,
               num_frames: int = 12, max_text_length: int = 70) -> dict[str, Any]:
    """Fraction of captions whose own video outscores its time-reversed twin (cosine similarity).

    annotations: retrieval.jsonl of tools/demo_data.make_retrieval_set (twins on consecutive rows).
    The checkpoint is loaded, its frames preprocessed and its captions tokenised exactly as
    `vipstream eval` does (train.evaluate.load_encoders, the loader's pixel and text code)."""
    import torch

    from train.data.pixels import PixelSpec, preprocess_frames
    from train.data.text import load_tokenizer, tokenize
    from train.evaluate import load_encoders

    annotations = Path(annotations)
    rows = [json.loads(line) for line in annotations.read_text().splitlines() if line.strip()]
    encoders = load_encoders(str(checkpoint), baseline)
    encoders.module.eval()
    spec = PixelSpec.from_pretrained(checkpoint)
    tokenizer = load_tokenizer(str(checkpoint))

    wins = ties = total = 0
    with torch.no_grad():
        features = {}
        for row in rows:
            pixels = preprocess_frames(_frames(annotations.parent / row["path"], num_frames), spec)
            features[row["video_id"]] = encoders.video(pixels.unsqueeze(0))[0]  # [T, 3, S, S] -> [D]
        for first, second in zip(rows[0::2], rows[1::2]):
            for own, twin in ((first, second), (second, first)):
                texts = encoders.text(*tokenize(tokenizer, own["captions"], max_text_length))  # [C, D]
                sims = texts @ torch.stack([features[own["video_id"]], features[twin["video_id"]]]).T
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
