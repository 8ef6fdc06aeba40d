"""Train the demo's stand-ins for pretrained models, on CPU in about a minute each.

CLIP-ViP starts from a pretrained CLIP and its OCL captions come from a pretrained image
captioner; neither can be downloaded here, and random weights would make the demo meaningless.
So we train tiny ones on what they would know from web images: single frames of the synthetic
world (tools/demo_data.py) described by appearance only — colours, shapes, background, never
motion. Both are saved exactly as hub checkpoints are, and loaded by the real code paths:

* `train_stand_in_clip(folder)`: a tiny `CLIPModel` (tools/stand_in_models.tiny_clip_config, the
  real CLIP BPE tokenizer over DEMO_WORDS) trained image-text contrastively (CLIP's own loss);
  `save_tiny_clip(folder, model=...)`. Loads with `CLIPModel.from_pretrained` / `CLIPViPModel.from_clip`.
* `train_stand_in_captioner(folder)`: a tiny `VisionEncoderDecoderModel` (ViT encoder, GPT-2
  decoder with cross-attention) trained by teacher forcing on frame -> description, saved with a
  `ViTImageProcessor` and the same word-level CLIP tokenizer (one token per word, so a caption
  is ~10 decoder steps). Loads with `AutoModelForImageTextToText`, as `vipstream caption` does.

Seeded: the same seed gives the same weights on one machine (torch CPU kernels are deterministic
for these ops), whatever its instruction-set level under the portable kernels of
vipstream/numerics.py (the demo's default); across machines, see README ("What make demo shows").

    python -m tools.stand_in_training clip --output DIR [--steps N] [--seed S]
    python -m tools.stand_in_training captioner --output DIR [--steps N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tools.demo_data import DEMO_WORDS, frame_batch
from tools.stand_in_models import clip_image_processor, clip_tokenizer, save_tiny_clip, tiny_clip_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StandInSpec:
    """Size and schedule of one stand-in. Defaults: about a minute on one CPU core."""

    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3  # AdamW; tiny models from scratch tolerate (and need) a large rate
    weight_decay: float = 0.01
    warmup_steps: int = 20
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    image_size: int = 32  # px; patch 8 -> 16 patches a frame
    patch_size: int = 8
    seed: int = 0
    # torch CPU threads. Tiny matrices gain nothing from more, and on a shared or busy machine
    # extra threads spin against each other: 2 threads at load 7 ran a step 40x slower than 1.
    threads: int = 1


#: The captioner reads its frames at 48 px: at 32 a small square is 3 px and its colour is often
#: missed (first-shape colour right 24 % vs 43 % at 48 px after the same steps); the CLIP stays at
#: 32 px because CLIP-ViP pays its image size twelve times a clip.
CLIP_SPEC = StandInSpec(steps=400)
CAPTIONER_SPEC = StandInSpec(steps=500, image_size=48)


def _schedule(optimizer: Any, spec: StandInSpec) -> Any:
    """Linear warm-up, then cosine to zero."""
    import math

    import torch

    def factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _train(model: Any, spec: StandInSpec, loss_of_batch: Any, what: str) -> list[dict]:
    """The shared loop: AdamW, warm-up + cosine, grad clip 1; one loss row every 10 steps."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        return _train_steps(model, spec, loss_of_batch, what)
    finally:
        torch.set_num_threads(threads)


def _train_steps(model: Any, spec: StandInSpec, loss_of_batch: Any, what: str) -> list[dict]:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = _schedule(optimizer, spec)
    rng = random.Random(f"{what}:{spec.seed}")
    history, started = [], time.perf_counter()
    model.train()
    for step in range(spec.steps):
        frames, texts = frame_batch(rng, spec.batch_size)
        loss = loss_of_batch(frames, texts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 10 == 0 or step == spec.steps - 1:
            history.append({"step": step, "loss": round(float(loss.detach()), 4)})
            log.debug("%s step %d loss %.4f", what, step, history[-1]["loss"])
    model.eval()
    log.info("%s: %d steps in %.1f s, loss %.3f -> %.3f", what, spec.steps, time.perf_counter() - started,
             history[0]["loss"], history[-1]["loss"])
    return history


def _write_history(folder: Path, what: str, spec: StandInSpec, history: list[dict], seconds: float) -> None:
    (folder / "stand_in_training.json").write_text(json.dumps(
        {"model": what, "spec": asdict(spec), "seconds": round(seconds, 2), "history": history}, indent=1))


# --------------------------------------------------------------------------------------------
# CLIP


def train_stand_in_clip(folder: str | Path, spec: StandInSpec = CLIP_SPEC) -> Path:
    """Train a tiny CLIP on (frame, description) pairs with CLIP's contrastive loss; save it to
    `folder` with its tokenizer and image processor (a hub-like CLIP checkpoint)."""
    import torch
    from transformers import CLIPModel

    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    tokenizer = clip_tokenizer(DEMO_WORDS)
    processor = clip_image_processor(spec.image_size)
    model = CLIPModel(tiny_clip_config(tokenizer, hidden=spec.hidden, layers=spec.layers, heads=spec.heads,
                                       image_size=spec.image_size, patch_size=spec.patch_size,
                                       projection_dim=spec.hidden))

    def loss_of_batch(frames: np.ndarray, texts: list[str]) -> torch.Tensor:
        pixels = processor(images=list(frames), return_tensors="pt").pixel_values  # [B, 3, S, S]
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        return model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                     pixel_values=pixels, return_loss=True).loss

    history = _train(model, spec, loss_of_batch, "clip")
    folder = save_tiny_clip(folder, words=DEMO_WORDS, model=model)
    _write_history(folder, "clip", spec, history, time.perf_counter() - started)
    return folder


# --------------------------------------------------------------------------------------------
# captioner

#: Longest description in tokens (two shapes: 13 words) + start/end, with room to spare.
CAPTION_MAX_TOKENS = 24


def build_captioner(spec: StandInSpec) -> tuple[Any, Any, Any]:
    """(VisionEncoderDecoderModel, tokenizer, image processor), random init, ids consistent:
    generation starts at <|startoftext|> and stops at <|endoftext|> (also the pad token)."""
    import torch
    from transformers import (GPT2Config, ViTConfig, ViTImageProcessor, VisionEncoderDecoderConfig,
                              VisionEncoderDecoderModel)

    tokenizer = clip_tokenizer(DEMO_WORDS, model_max_length=CAPTION_MAX_TOKENS)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    encoder = ViTConfig(hidden_size=spec.hidden, num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                        intermediate_size=2 * spec.hidden, image_size=spec.image_size, patch_size=spec.patch_size)
    decoder = GPT2Config(vocab_size=len(tokenizer), n_embd=spec.hidden, n_layer=spec.layers, n_head=spec.heads,
                         n_positions=CAPTION_MAX_TOKENS + 8, bos_token_id=bos, eos_token_id=eos)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = bos, eos, eos
    torch.manual_seed(spec.seed)
    model = VisionEncoderDecoderModel(config)
    generation = model.generation_config
    generation.decoder_start_token_id, generation.bos_token_id = bos, bos
    generation.eos_token_id, generation.pad_token_id = eos, eos
    generation.max_new_tokens = CAPTION_MAX_TOKENS
    processor = ViTImageProcessor(size={"height": spec.image_size, "width": spec.image_size})
    return model, tokenizer, processor


def train_stand_in_captioner(folder: str | Path, spec: StandInSpec = CAPTIONER_SPEC) -> Path:
    """Train a tiny ViT + GPT-2 captioner on frame -> description (teacher forcing, cross-entropy);
    save_pretrained model, tokenizer and image processor to `folder`."""
    import torch

    started = time.perf_counter()
    model, tokenizer, processor = build_captioner(spec)

    def loss_of_batch(frames: np.ndarray, texts: list[str]) -> torch.Tensor:
        pixels = processor(images=list(frames), return_tensors="pt").pixel_values  # [B, 3, S, S]
        tokens = tokenizer(texts, padding=True, return_tensors="pt")  # <start> words <end> <pad=end>...
        labels = tokens.input_ids[:, 1:].clone()  # the model prepends decoder_start (= <start>) itself
        labels[tokens.attention_mask[:, 1:] == 0] = -100
        return model(pixel_values=pixels, labels=labels).loss

    history = _train(model, spec, loss_of_batch, "captioner")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    _write_history(folder, "captioner", spec, history, time.perf_counter() - started)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a stand-in CLIP or image captioner on synthetic frames.")
    parser.add_argument("model", choices=("clip", "captioner"))
    parser.add_argument("--output", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--steps", type=int, default=None, help=f"default: clip {CLIP_SPEC.steps}, "
                                                                 f"captioner {CAPTIONER_SPEC.steps}")
    parser.add_argument("--batch-size", type=int, default=StandInSpec.batch_size)
    parser.add_argument("--seed", type=int, default=StandInSpec.seed)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = CLIP_SPEC if args.model == "clip" else CAPTIONER_SPEC
    spec = replace(spec, steps=args.steps or spec.steps, batch_size=args.batch_size, seed=args.seed)
    train = train_stand_in_clip if args.model == "clip" else train_stand_in_captioner
    folder = train(args.output, spec)
    print(json.dumps(json.loads((folder / "stand_in_training.json").read_text()) | {"history": "..."}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
