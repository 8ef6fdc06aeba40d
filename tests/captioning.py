"""Tiny captioners and caption-ready shards for tests and benchmarks: random-init BLIP and
VisionEncoderDecoder (ViT + GPT-2) built from configs and saved to disk (nothing is downloaded),
real ffmpeg clips, shards laid out as the corpus builder writes them."""

from __future__ import annotations

import json
from pathlib import Path


from tests.media import make_video
from vipstream.schema import clip_key, shard_stats_path, shard_tar_path

_BERT_WORDS = ("a the of and in on with at red blue green yellow cat dog man woman person car "
               "street video frame shape circle square moving small large two people sitting "
               "standing near field sky water table picture").split()


# ---------------------------------------------------------------------------------------------
# Builders (shared with the job, inspect and benchmark)


def save_tiny_blip(path: Path, *, seed: int = 1, hidden: int = 32, layers: int = 1,
                   image_size: int = 32, patch_size: int = 8) -> Path:
    """A random-init BlipForConditionalGeneration + BlipProcessor (tiny BERT vocab) at `path`.

    Seed 1 because seed 0's random decoder greedily emits only [UNK] (an empty caption)."""
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration,
                              BlipImageProcessor, BlipProcessor)

    path.mkdir(parents=True, exist_ok=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_BERT_WORDS]) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
                              tokenizer=tokenizer)
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden)
    config = BlipConfig(
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=64, bos_token_id=2,
                         sep_token_id=3, eos_token_id=3, pad_token_id=0, **common),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **common),
        projection_dim=hidden)
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).eval().save_pretrained(path)
    processor.save_pretrained(path)
    vocab.unlink()  # the saved tokenizer files carry it
    return path


def save_tiny_vit_gpt2(path: Path, *, seed: int = 0, hidden: int = 32, image_size: int = 32) -> Path:
    """A random-init VisionEncoderDecoderModel (ViT encoder + GPT-2 decoder) with a separate
    ViTImageProcessor and a byte-level GPT-2 tokenizer, as nlpconnect/vit-gpt2 ships (no
    combined processor)."""
    import torch
    from transformers import (GPT2Config, GPT2Tokenizer, ViTConfig, ViTImageProcessor,
                              VisionEncoderDecoderConfig, VisionEncoderDecoderModel)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path.mkdir(parents=True, exist_ok=True)
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = eos = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = GPT2Tokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    tokenizer.pad_token = tokenizer.eos_token
    encoder = ViTConfig(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, image_size=image_size, patch_size=8)
    decoder = GPT2Config(vocab_size=len(vocab), n_embd=hidden, n_layer=1, n_head=2, n_positions=64,
                         bos_token_id=eos, eos_token_id=eos)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = eos
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config).eval()
    model.generation_config.eos_token_id = None  # random weights: always produce max_new_tokens
    model.generation_config.pad_token_id = eos
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_clip_bytes(tmp_dir: Path, name: str, *, seconds: float = 2.0, fps: int = 3,
                    size: str = "398x224") -> bytes:
    """A real H.264 clip like the corpus builder writes (3 fps, short side 224, no audio)."""
    return make_video(tmp_dir / f"{name}.mp4", seconds=seconds, size=size, fps=fps, audio=False).read_bytes()


def write_caption_shards(out_dir: Path, clips_per_shard: list[int], *, clip: bytes,
                         corrupt: dict[int, set[int]] | None = None, unfinished: set[int] = frozenset(),
                         extra_clips: dict[tuple[int, int], bytes] | None = None) -> list[str]:
    """OUT/shards/{shard:06d}.tar (+ .stats.json) as the corpus builder writes them; returns keys.

    `corrupt[shard]` holds clip indices whose mp4 is replaced by garbage bytes; shards in
    `unfinished` get no stats file. Videos are named v{shard}{clip//2} so keys look real.
    """
    import webdataset as wds

    corrupt = corrupt or {}
    extra_clips = extra_clips or {}
    keys = []
    for shard, count in enumerate(clips_per_shard):
        tar = shard_tar_path(out_dir, shard)
        tar.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        with open(tar, "wb") as handle, wds.TarWriter(handle, mtime=0.0) as writer:
            for index in range(count):
                video_id = f"vid{shard}x{index // 2}"
                key = clip_key(video_id, index)
                data = extra_clips.get((shard, index), clip)
                if index in corrupt.get(shard, set()):
                    data = b"\x00\x00\x00\x18ftypmp42 this is not a video" * 8
                meta = {"clip_id": f"{video_id}.{index}.mp4", "video_id": video_id, "span": [0.0, 2.0],
                        "subtitle": f"clip {index}", "duration": 2.0, "fps": 3.0, "width": 398,
                        "height": 224, "num_frames": 6, "source": f"{video_id}.mp4"}
                writer.write({"__key__": key, "mp4": data, "json": json.dumps(meta).encode()})
                rows.append({"key": key})
                keys.append(key)
        if shard not in unfinished:
            shard_stats_path(out_dir, shard).write_text(json.dumps(
                {"shard": shard, "clips": count, "rows": rows, "errors": [], "clips_failed": 0}))
    return keys
