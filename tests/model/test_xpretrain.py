"""The reference implementation's checkpoints (XPretrain's `VidCLIP.state_dict()` .pt files): strict
loading onto our layout, export back, both round trips, refusals naming the key, fp16 (apex O2).

The reference layout is built here from a tiny CLIP and the key names of issue 14 alone (the
contract), not with the code under test."""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict

import pytest
import torch

from model.clip_vip import CLIPViPModel
from model.loss import MAX_LOG_LOGIT_SCALE
from model.xpretrain import XPretrainCheckpointError
from tests.model.conftest import text_batch, tiny_clip

DIM = 32  # tiny_clip's vision width
VISION_POSITIONS = 17  # 1 + 16 patches
TEXT_POSITIONS = 16


def reference_state(seed: int = 0, logit_scale: float = 4.6) -> OrderedDict:
    """What XPretrain's trainer saves for the tiny CLIP: `clipmodel.` + every CLIP key, added_cls
    [3, D], temporal_embedding [1, 12, D], the two position_ids buffers [1, N] = 0..N-1."""
    generator = torch.Generator().manual_seed(seed)
    clip = tiny_clip(seed=seed)
    state = OrderedDict(("clipmodel." + key, value.clone()) for key, value in clip.state_dict().items())
    state["clipmodel.logit_scale"] = torch.tensor(logit_scale)
    state["clipmodel.vision_model.embeddings.added_cls"] = torch.randn(3, DIM, generator=generator)
    state["clipmodel.vision_model.embeddings.temporal_embedding"] = torch.randn(1, 12, DIM, generator=generator)
    state["clipmodel.vision_model.embeddings.position_ids"] = torch.arange(VISION_POSITIONS).unsqueeze(0)
    state["clipmodel.text_model.embeddings.position_ids"] = torch.arange(TEXT_POSITIONS).unsqueeze(0)
    return state


@pytest.fixture()
def reference_pt(tmp_path):
    path = tmp_path / "pretrain_clipvip_tiny.pt"
    torch.save(reference_state(), path)
    return path


def pixels(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_a_reference_checkpoint_loads_key_by_key_onto_our_layout(reference_pt, tiny_clip_dir):
    model = CLIPViPModel.from_xpretrain(reference_pt, tiny_clip_dir)
    state = reference_state()
    assert not model.training and model.config.num_proxies == 4 and model.config.temporal_size == 12
    for key, tensor in model.clip.state_dict().items():
        assert torch.equal(tensor, state["clipmodel." + key]), key
    assert torch.equal(model.extra_proxies, state["clipmodel.vision_model.embeddings.added_cls"])
    assert torch.equal(model.temporal_embedding, state["clipmodel.vision_model.embeddings.temporal_embedding"][0])
    assert model.extra_proxies.dtype == torch.float32
    # the CLIP folder's tokenizer files are carried; the CLIP's weights were not needed
    assert model.processor_files["vocab.json"] == (tiny_clip_dir / "vocab.json").read_bytes()


def test_reference_to_ours_to_reference_is_exact(reference_pt, tiny_clip_dir):
    exported = CLIPViPModel.from_xpretrain(reference_pt, tiny_clip_dir).to_xpretrain_state_dict()
    original = reference_state()
    assert set(exported) == set(original)
    for key, tensor in original.items():
        assert exported[key].dtype == tensor.dtype and torch.equal(exported[key], tensor), key


def test_ours_to_reference_to_ours_keeps_every_weight_and_output(tiny_clip_dir, tmp_path):
    model = CLIPViPModel.from_clip(tiny_clip_dir)
    with torch.no_grad():
        model.temporal_embedding.normal_()
    torch.save(model.to_xpretrain_state_dict(), tmp_path / "ours.pt")
    back = CLIPViPModel.from_xpretrain(tmp_path / "ours.pt", tiny_clip_dir)
    assert back.state_dict().keys() == model.state_dict().keys()
    for key, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key
    ids, mask = text_batch()
    with torch.no_grad():
        assert torch.equal(back.encode_video(pixels(2, 12)), model.encode_video(pixels(2, 12)))
        assert torch.equal(back.encode_text(ids, mask), model.encode_text(ids, mask))


def _removed(state):
    del state["clipmodel.visual_projection.weight"]
    return "clipmodel.visual_projection.weight"


def _added(state):
    state["clipmodel.vision_model.embeddings.extra_head.weight"] = torch.zeros(4, 4)
    return "clipmodel.vision_model.embeddings.extra_head.weight"


def _reshaped(state):
    state["clipmodel.vision_model.encoder.layers.1.mlp.fc1.weight"] = torch.zeros(64, 31)
    return "clipmodel.vision_model.encoder.layers.1.mlp.fc1.weight"


def _temporal_without_leading_one(state):
    state["clipmodel.vision_model.embeddings.temporal_embedding"] = torch.zeros(12, DIM)
    return "clipmodel.vision_model.embeddings.temporal_embedding"


def _position_ids_shuffled(state):
    state["clipmodel.vision_model.embeddings.position_ids"] = torch.arange(VISION_POSITIONS).flip(0).unsqueeze(0)
    return "clipmodel.vision_model.embeddings.position_ids"


@pytest.mark.parametrize("break_it,kind", [(_removed, "missing"), (_added, "unexpected"),
                                           (_reshaped, "shape mismatch"),
                                           (_temporal_without_leading_one, "shape mismatch"),
                                           (_position_ids_shuffled, "position_ids")])
def test_a_checkpoint_with_one_key_wrong_is_refused_naming_that_key(break_it, kind, tiny_clip_dir, tmp_path):
    state = reference_state()
    key = break_it(state)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(XPretrainCheckpointError) as caught:
        CLIPViPModel.from_xpretrain(tmp_path / "broken.pt", tiny_clip_dir)
    message = str(caught.value)
    assert f"1 {kind}: {key}" in message and "broken.pt" in message


def test_every_problem_is_named_at_once_and_a_foreign_state_dict_is_explained(tiny_clip_dir):
    state = reference_state()
    removed, added, reshaped = _removed(state), _added(state), _reshaped(state)
    with pytest.raises(XPretrainCheckpointError) as caught:
        CLIPViPModel.from_xpretrain(state, tiny_clip_dir)
    assert all(key in str(caught.value) for key in (removed, added, reshaped))
    with pytest.raises(XPretrainCheckpointError, match="no key starts with 'clipmodel.'"):
        CLIPViPModel.from_xpretrain(tiny_clip().state_dict(), tiny_clip_dir)  # a plain HF CLIP state dict
    with pytest.raises(XPretrainCheckpointError, match=r"added_cls: expected \[1, 32\], found \[3, 32\]"):
        CLIPViPModel.from_xpretrain(reference_state(), tiny_clip_dir, num_proxies=2)


def test_an_fp16_checkpoint_as_apex_o2_saved_it_loads_as_float32(tiny_clip_dir, tmp_path):
    state = reference_state()
    half = OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in state.items())
    torch.save(half, tmp_path / "fp16.pt")
    model = CLIPViPModel.from_xpretrain(tmp_path / "fp16.pt", tiny_clip_dir)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for key, tensor in model.clip.state_dict().items():
        assert torch.equal(tensor, half["clipmodel." + key].float()), key
    full = CLIPViPModel.from_xpretrain(state, tiny_clip_dir)
    with torch.no_grad():
        video = pixels(2, 12)
        difference = (model.encode_video(video) - full.encode_video(video)).abs().max()
    assert 0 < difference < 1e-2  # fp16 rounding of the weights, nothing more


def test_the_reference_restore_file_and_its_clamp_and_a_pickled_object(tiny_clip_dir, tmp_path):
    # the reference's restore.pt nests the weights under model_state_dict (with optimizer state beside)
    torch.save({"global_step": 10, "model_state_dict": reference_state(logit_scale=6.0),
                "optim_state_dict": {"state": {}}}, tmp_path / "restore.pt")
    model = CLIPViPModel.from_xpretrain(tmp_path / "restore.pt", tiny_clip_dir)
    assert model.clip.logit_scale.item() == pytest.approx(MAX_LOG_LOGIT_SCALE, abs=1e-6)  # clamped on load
    torch.save({"weights": reference_state(), "note": _NotATensor()}, tmp_path / "pickled.pt")
    with pytest.raises(XPretrainCheckpointError, match="weights_only=True"):
        CLIPViPModel.from_xpretrain(tmp_path / "pickled.pt", tiny_clip_dir)


class _NotATensor:
    """An arbitrary object: unpickling it needs weights_only=False, which is never used."""


def test_a_converted_model_carries_the_reference_pixels_and_clip_init_keeps_clips(stand_in_clip, tmp_path):
    from transformers import AutoImageProcessor

    reference = CLIPViPModel.from_clip(stand_in_clip).to_xpretrain_state_dict()
    model = CLIPViPModel.from_xpretrain(reference, stand_in_clip)
    saved = model.save_pretrained(tmp_path / "converted")
    processor = AutoImageProcessor.from_pretrained(saved, backend="pil")
    assert (processor.size.height, processor.size.width, processor.size.shortest_edge) == (32, 32, None)
    assert (processor.crop_size.height, processor.crop_size.width) == (32, 32)
    assert int(processor.resample) == 3 and processor.do_center_crop  # bicubic, no-op crop
    # transformers 5's CLIPProcessor layout (image processor nested in processor_config.json, read
    # first): the nested one is replaced too
    nested = tmp_path / "nested_clip"
    shutil.copytree(stand_in_clip, nested)
    inner = json.loads((nested / "preprocessor_config.json").read_text())
    (nested / "processor_config.json").write_text(json.dumps({"image_processor": inner,
                                                              "processor_class": "CLIPProcessor"}))
    (nested / "preprocessor_config.json").unlink()
    converted = CLIPViPModel.from_xpretrain(reference, nested).save_pretrained(tmp_path / "converted_nested")
    assert AutoImageProcessor.from_pretrained(converted, backend="pil").size.height == 32
    # reference_pixels=False and from_clip keep CLIP's short side + crop
    plain = CLIPViPModel.from_xpretrain(reference, stand_in_clip, reference_pixels=False)
    assert plain.processor_files["preprocessor_config.json"] == (stand_in_clip / "preprocessor_config.json").read_bytes()
