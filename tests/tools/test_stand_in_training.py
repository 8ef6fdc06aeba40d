"""tools/stand_in_training.py: the stand-ins learn what a pretrained CLIP and captioner would know
about the synthetic world, and load through the real code paths (CLIPModel.from_pretrained +
AutoTokenizer + AutoImageProcessor; the pipeline's Captioner, as `vipstream caption` loads it)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tools.demo_data import frame_batch
from tools.make_synthetic_corpus import COLOURS
from tools.stand_in_training import StandInSpec, main, train_stand_in_captioner, train_stand_in_clip

# Short schedules: enough to be far above chance, a few seconds each on an idle core.
CLIP_SPEC = StandInSpec(steps=150, batch_size=48)
CAPTIONER_SPEC = StandInSpec(steps=200, batch_size=48, image_size=48)


def _held_out(n: int):
    """Frames the stand-ins never saw (their own generator), with distinct descriptions."""
    frames, texts = frame_batch(random.Random("held-out"), 3 * n)
    seen, keep = set(), []
    for k, text in enumerate(texts):
        if text not in seen and len(keep) < n:
            seen.add(text)
            keep.append(k)
    return frames[keep], [texts[k] for k in keep]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return train_stand_in_clip(tmp_path_factory.mktemp("stand_in") / "clip", CLIP_SPEC)


@pytest.fixture(scope="module")
def captioner_folder(tmp_path_factory):
    return train_stand_in_captioner(tmp_path_factory.mktemp("stand_in") / "captioner", CAPTIONER_SPEC)


def test_trained_clip_ranks_a_frames_own_description_first_far_above_chance(clip_folder):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(clip_folder).eval()
    tokenizer, processor = AutoTokenizer.from_pretrained(clip_folder), AutoImageProcessor.from_pretrained(clip_folder)
    frames, texts = _held_out(64)
    with torch.no_grad():
        out = model(**tokenizer(texts, padding=True, return_tensors="pt"),
                    pixel_values=processor(images=list(frames), return_tensors="pt").pixel_values)
    logits = out.logits_per_image  # [frames, texts]
    top1 = (logits.argmax(dim=1) == torch.arange(len(texts))).float().mean().item()
    assert top1 > 10 / len(texts), top1  # chance is 1/64
    # the right background colour: the own description beats the same words on another background
    swapped = [t.rsplit(" ", 2)[0] + f" {next(c for c in COLOURS if c != t.split()[-2])} background" for t in texts]
    with torch.no_grad():
        both = model(**tokenizer(texts + swapped, padding=True, return_tensors="pt"),
                     pixel_values=processor(images=list(frames), return_tensors="pt").pixel_values).logits_per_image
    n = len(texts)
    wins = (both[torch.arange(n), torch.arange(n)] > both[torch.arange(n), n + torch.arange(n)]).float().mean()
    assert wins > 0.8, wins
    history = json.loads((clip_folder / "stand_in_training.json").read_text())["history"]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_trained_captioner_names_the_background_and_a_shape_colour_through_the_pipeline_captioner(captioner_folder):
    from pipeline.caption.captioner import Captioner, CaptionerConfig, check_captioner

    cfg = CaptionerConfig(captioner=str(captioner_folder), max_new_tokens=24, batch_size=16)
    assert check_captioner(cfg)["model_type"] == "vision-encoder-decoder"
    frames, texts = _held_out(48)
    captions = Captioner(cfg, device="cpu")(list(frames))
    background_right = sum(c.split()[-2:] == t.split()[-2:] for c, t in zip(captions, texts)) / len(texts)
    colour_right = sum(c.split()[1] == t.split()[1] for c, t in zip(captions, texts) if len(c.split()) > 1) / len(texts)
    assert all(c.endswith("background") and c.startswith("a ") for c in captions), captions[:5]
    assert background_right > 0.8, list(zip(captions, texts))[:5]
    assert colour_right > 0.3, list(zip(captions, texts))[:5]  # chance is 1/11


def test_same_seed_same_weights_and_the_cli_writes_a_loadable_folder(tmp_path, capsys):
    from safetensors.torch import load_file

    spec = StandInSpec(steps=3, batch_size=8)
    a = train_stand_in_clip(tmp_path / "a", spec)
    b = train_stand_in_clip(tmp_path / "b", spec)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert main(["captioner", "--output", str(tmp_path / "cap"), "--steps", "2", "--batch-size", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "captioner" and report["spec"]["steps"] == 2
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "preprocessor_config.json"):
        assert (tmp_path / "cap" / name).is_file(), name
