"""pipeline/caption/captioner.py on its own: middle frames from real ffmpeg clips, captioner ids, and tiny
random-init BLIP / VisionEncoderDecoder (ViT + GPT-2) captioners built from configs, saved to
disk and loaded by path (nothing is downloaded).

The model and shard builders live in tests/captioning.py, the fixtures in tests/pipeline/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.caption.captioner import (Captioner, CaptionerConfig, CaptionerLoadError, check_captioner,
                              derive_captioner_id, middle_frame, resolve_captioner_id)
from pipeline.errors import StageError
from tests.media import ffprobe_json
from vipstream.config import ConfigError, load_config
from vipstream.schema import middle_frame_index

REPO_ROOT = Path(__file__).resolve().parents[3]

# ---------------------------------------------------------------------------------------------
# middle_frame


def test_middle_frame_is_frame_n_half_of_the_decoded_clip_with_its_time(clip_mp4, tmp_path):
    (tmp_path / "c.mp4").write_bytes(clip_mp4)
    stream = ffprobe_json(tmp_path / "c.mp4")["streams"][0]
    num_frames = int(stream["nb_read_frames"])
    frame, index, time_s = middle_frame(clip_mp4)
    assert frame.shape == (224, 398, 3) and frame.dtype == np.uint8
    assert index == middle_frame_index(num_frames) == num_frames // 2
    assert time_s == pytest.approx(index / 3.0, abs=1e-3)  # 3 fps, first frame at 0


def test_middle_frame_of_garbage_or_empty_bytes_is_a_decode_stage_error():
    for data in (b"not a video" * 20, b""):
        with pytest.raises(StageError) as caught:
            middle_frame(data)
        assert caught.value.stage == "decode"
        assert f"{len(data)} bytes" in caught.value.reason


# ---------------------------------------------------------------------------------------------
# ids and config


def test_derived_captioner_id_names_the_model_and_the_generation_settings():
    blip = CaptionerConfig(captioner="Salesforce/blip-image-captioning-base")
    assert derive_captioner_id(blip) == "blip-image-captioning-base-greedy-t30"
    beam = CaptionerConfig(captioner="./models/My Captioner/", num_beams=3, max_new_tokens=20)
    assert derive_captioner_id(beam) == "my_captioner-beam3-t20"
    prompted = CaptionerConfig(captioner="x/blip", prompt="a picture of")
    assert derive_captioner_id(prompted).startswith("blip-greedy-t30-p")
    assert derive_captioner_id(prompted) != derive_captioner_id(CaptionerConfig(captioner="x/blip", prompt="a"))
    assert resolve_captioner_id(CaptionerConfig(captioner="x/blip", captioner_id="mine")) == "mine"


def test_caption_yaml_loads_and_bad_values_are_config_errors():
    cfg = load_config(CaptionerConfig, REPO_ROOT / "configs" / "caption.yaml", {"batch_size": 4})
    assert cfg.batch_size == 4 and cfg.num_beams == 1 and cfg.max_new_tokens == 30
    with pytest.raises(ConfigError, match="num_beams"):
        load_config(CaptionerConfig, None, {"num_beams": 0})
    with pytest.raises(ConfigError, match="captioner_id"):
        load_config(CaptionerConfig, None, {"captioner_id": "a/b"})


# ---------------------------------------------------------------------------------------------
# loading and captioning


def test_a_missing_or_non_captioning_model_fails_fast_naming_it(tmp_path):
    with pytest.raises(CaptionerLoadError, match="nope-model"):
        check_captioner(CaptionerConfig(captioner=str(tmp_path / "nope-model")))
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8)).save_pretrained(tmp_path / "a-bert")
    with pytest.raises(CaptionerLoadError, match=r"a-bert.*not an image-to-text model"):
        check_captioner(CaptionerConfig(captioner=str(tmp_path / "a-bert")))
    (tmp_path / "a-bert" / "model.safetensors").unlink()  # a half-copied folder
    with pytest.raises(CaptionerLoadError, match=r"a-bert.*holds no weights"):
        check_captioner(CaptionerConfig(captioner=str(tmp_path / "a-bert")))


@pytest.mark.parametrize("builder", ["tiny_blip", "tiny_vit_gpt2"])
def test_tiny_captioner_loaded_by_path_captions_a_batch_deterministically(builder, request, clip_mp4):
    path = request.getfixturevalue(builder)
    cfg = CaptionerConfig(captioner=str(path), max_new_tokens=6)
    record = check_captioner(cfg)
    assert record["auto_class"] == "AutoModelForImageTextToText"
    frame = middle_frame(clip_mp4)[0]
    frames = [frame, frame[:, ::-1].copy(), np.zeros((50, 70, 3), np.uint8)]
    captioner = Captioner(cfg)
    captions = captioner(frames)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert any(captions), "a random model still emits some tokens"
    assert captioner(frames) == captions  # greedy decoding: same frames, same captions
    assert captioner([frames[1]]) == [captions[1]]  # batching does not change a caption
    assert captioner([]) == []


def test_blip_prompt_is_passed_to_the_processor_and_vit_gpt2_refuses_one(tiny_blip, tiny_vit_gpt2, clip_mp4):
    frame = middle_frame(clip_mp4)[0]
    prompted = Captioner(CaptionerConfig(captioner=str(tiny_blip), prompt="a picture of", max_new_tokens=4))
    assert prompted([frame])[0].startswith("a picture of")
    with pytest.raises(ConfigError, match="prompt"):
        check_captioner(CaptionerConfig(captioner=str(tiny_vit_gpt2), prompt="a picture of"))
