"""Tiny random-init CLIP checkpoints for the model tests (nothing is downloaded)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

TINY_VOCAB = 100


def tiny_clip_config(layers: int = 2) -> CLIPConfig:
    """A CLIP with 32-wide towers, 32x32 images in 8x8 patches (P = 16), projection 16."""
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                vocab_size=TINY_VOCAB, max_position_embeddings=16, bos_token_id=TINY_VOCAB - 2,
                eos_token_id=TINY_VOCAB - 1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                  image_size=32, patch_size=8)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def tiny_clip(layers: int = 2, seed: int = 0) -> CLIPModel:
    """A random-init tiny CLIPModel in eval mode."""
    torch.manual_seed(seed)
    return CLIPModel(tiny_clip_config(layers)).eval()


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny CLIP saved as a Hugging Face checkpoint (safetensors) with stand-in tokenizer files."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    tiny_clip().save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 70}))
    (folder / "vocab.json").write_text(json.dumps({"a</w>": 0}))
    return folder


def text_batch(batch: int = 3, length: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ending with EOS then padding, and their attention mask: `[B, L]` each."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, TINY_VOCAB - 2, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(batch):
        end = length - 1 - row  # different lengths
        ids[row, end] = TINY_VOCAB - 1
        ids[row, end + 1:] = 1
        mask[row, end + 1:] = 0
    return ids, mask
