"""CLIPViPModel: equivalence with CLIP, the frame-isolation rule, persistence, training helpers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from model.clip_vip import CLIPViPConfig, CLIPViPModel, PickledWeightsError
from model.loss import MAX_LOG_LOGIT_SCALE
from model.video_encoder import embed_video, interpolate_temporal
from tests.model.conftest import text_batch, tiny_clip


def _features(output) -> torch.Tensor:
    """transformers >= 5 returns a model output from get_*_features, older releases a tensor."""
    return getattr(output, "pooler_output", output)


def pixels(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("temporal_size", [1, 12])
def test_one_proxy_one_frame_equals_clip_image_encoder(temporal_size):
    clip = tiny_clip()
    model = CLIPViPModel.from_clip(clip, num_proxies=1, temporal_size=temporal_size)
    images = pixels(4, 1)[:, 0]
    with torch.no_grad():
        expected = F.normalize(_features(clip.get_image_features(pixel_values=images)), dim=-1)
        as_video = model.encode_video(images[:, None])
        as_image = model.encode_video(images)  # [B, 3, H, W] is a 1-frame video
    torch.testing.assert_close(as_video, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(as_image, as_video, atol=0, rtol=0)


def test_encode_text_equals_clip_text_features():
    clip = tiny_clip()
    model = CLIPViPModel.from_clip(clip)
    ids, mask = text_batch()
    with torch.no_grad():
        expected = F.normalize(_features(clip.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1)
        torch.testing.assert_close(model.encode_text(ids, mask), expected, atol=1e-6, rtol=0)


def test_forward_returns_unit_features_and_exp_of_the_unclamped_logit_scale():
    model = CLIPViPModel.from_clip(tiny_clip())
    ids, mask = text_batch(batch=2)
    with torch.no_grad():
        out = model(pixel_values=pixels(2, 3), input_ids=ids, attention_mask=mask)
        assert out.video_embeds.shape == out.text_embeds.shape == (2, 16)
        torch.testing.assert_close(out.video_embeds.norm(dim=-1), torch.ones(2))
        torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(2))
        assert model(input_ids=ids, attention_mask=mask).video_embeds is None
        model.clip.logit_scale.fill_(4.0)
        assert model.logit_scale.item() == pytest.approx(torch.tensor(4.0).exp().item())
        model.clip.logit_scale.fill_(6.0)  # no clamp in the forward: exp(6), not 200
        assert model.logit_scale.item() == pytest.approx(torch.tensor(6.0).exp().item())
    assert MAX_LOG_LOGIT_SCALE == pytest.approx(5.298317, abs=1e-6)


def test_past_ln_200_the_logit_scale_still_has_a_gradient_and_the_in_place_clamp_brings_it_back():
    """A clamp inside the forward has zero gradient once s > ln 200 (s could never return); the
    reference clamps the parameter in place instead, which `clamp_logit_scale_` does."""
    model = CLIPViPModel.from_clip(tiny_clip(layers=1))
    with torch.no_grad():
        model.clip.logit_scale.fill_(6.0)
    ids, mask = text_batch(batch=3)
    out = model(pixel_values=pixels(3, 2), input_ids=ids, attention_mask=mask)
    logits = out.logit_scale * out.video_embeds @ out.text_embeds.t()
    F.cross_entropy(logits, torch.arange(3)).backward()
    assert model.clip.logit_scale.grad is not None and model.clip.logit_scale.grad.abs() > 0
    assert model.clamp_logit_scale_() is model
    assert model.clip.logit_scale.item() == pytest.approx(MAX_LOG_LOGIT_SCALE, abs=1e-6)
    with torch.no_grad():
        model.clip.logit_scale.fill_(-0.5)
    model.clamp_logit_scale_()
    assert model.clip.logit_scale.item() == 0.0 and model.clip.logit_scale.requires_grad


def test_loading_clamps_the_logit_scale_and_from_clip_can_set_the_reference_init(tiny_clip_dir, tmp_path):
    model = CLIPViPModel.from_clip(tiny_clip_dir)
    assert model.clip.logit_scale.item() == pytest.approx(tiny_clip().logit_scale.item())  # CLIP's own
    assert CLIPViPModel.from_clip(tiny_clip_dir, logit_scale_init=4.6).clip.logit_scale.item() == pytest.approx(4.6)
    with torch.no_grad():
        model.clip.logit_scale.fill_(7.5)  # drifted past ln 200 (as a forward-clamped run could)
    model.save_pretrained(tmp_path / "drifted")
    loaded = CLIPViPModel.from_pretrained(tmp_path / "drifted")
    assert loaded.clip.logit_scale.item() == pytest.approx(MAX_LOG_LOGIT_SCALE, abs=1e-6)


def test_video_sequence_layout_proxies_positions_and_temporal_embedding():
    model = CLIPViPModel.from_clip(tiny_clip(), num_proxies=4, temporal_size=12)
    embeddings = model.clip.vision_model.embeddings
    with torch.no_grad():
        model.temporal_embedding.copy_(torch.randn(12, 32))
        video = pixels(2, 12)
        tokens = embed_video(embeddings, model.extra_proxies, model.temporal_embedding, video)
        assert tokens.shape == (2, 4 + 12 * 16, 32)
        position = embeddings.position_embedding.weight
        torch.testing.assert_close(tokens[0, 0], embeddings.class_embedding + position[0])
        torch.testing.assert_close(tokens[1, 1:4], model.extra_proxies + position[0])
        patch = embeddings.patch_embedding(video[:, 5]).flatten(2).transpose(1, 2)  # frame 5: [B, P, D]
        expected = patch + position[1:] + model.temporal_embedding[5]
        torch.testing.assert_close(tokens[:, 4 + 5 * 16: 4 + 6 * 16], expected, atol=1e-6, rtol=0)


def test_temporal_embedding_is_linearly_interpolated_to_any_frame_count():
    table = torch.arange(12.0).unsqueeze(1).repeat(1, 3)  # row i = i
    assert interpolate_temporal(table, 12) is table
    torch.testing.assert_close(interpolate_temporal(table, 1), torch.full((1, 3), 5.5))  # rows 5, 6 averaged
    torch.testing.assert_close(interpolate_temporal(table, 6)[:, 0], torch.arange(6) * 2 + 0.5)
    assert interpolate_temporal(table, 32).shape == (32, 3)
    model = CLIPViPModel.from_clip(tiny_clip(layers=1))
    with torch.no_grad():
        for frames in (1, 5, 12, 32):
            assert model.encode_video(pixels(1, frames)).shape == (1, 16)


def test_frame_patches_see_other_frames_only_through_the_proxies():
    video = pixels(1, 3)
    changed = video.clone()
    changed[:, 2] = torch.randn(3, 32, 32)  # frame 2 only
    frame_0 = slice(4, 4 + 16)
    with torch.no_grad():
        one_layer = CLIPViPModel.from_clip(tiny_clip(layers=1))
        before, after = one_layer.video_hidden_states(video), one_layer.video_hidden_states(changed)
        # after one layer the proxies' inputs do not depend on any frame: frame 0 is untouched
        torch.testing.assert_close(after[:, frame_0], before[:, frame_0], atol=0, rtol=0)
        assert not torch.allclose(after[:, :4], before[:, :4])  # the proxies saw frame 2
        two_layers = CLIPViPModel.from_clip(tiny_clip(layers=2))
        before, after = two_layers.video_hidden_states(video), two_layers.video_hidden_states(changed)
        # in layer 2 frame 0 reads the proxies, which carry frame 2
        assert not torch.allclose(after[:, frame_0], before[:, frame_0])


def test_save_pretrained_from_pretrained_round_trip_is_exact(tiny_clip_dir, tmp_path):
    model = CLIPViPModel.from_clip(tiny_clip_dir, num_proxies=3, temporal_size=6)
    with torch.no_grad():
        model.temporal_embedding.normal_()
    model.save_pretrained(tmp_path / "vip")
    saved = json.loads((tmp_path / "vip" / "config.json").read_text())
    assert saved["clip_vip"]["num_proxies"] == 3 and saved["clip_vip"]["temporal_size"] == 6
    assert saved["clip_config"]["vision_config"]["hidden_size"] == 32
    for name in ("tokenizer_config.json", "vocab.json"):  # tokenizer files of the source kept beside
        assert (tmp_path / "vip" / name).read_bytes() == (tiny_clip_dir / name).read_bytes()

    loaded = CLIPViPModel.from_pretrained(tmp_path / "vip")
    assert loaded.config == model.config == CLIPViPConfig(num_proxies=3, temporal_size=6)
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, reloaded[name]), name
    ids, mask = text_batch()
    with torch.no_grad():
        assert torch.equal(model.encode_video(pixels(2, 4)), loaded.encode_video(pixels(2, 4)))
        assert torch.equal(model.encode_text(ids, mask), loaded.encode_text(ids, mask))
    loaded.save_pretrained(tmp_path / "again")  # a second generation keeps the tokenizer files
    assert (tmp_path / "again" / "vocab.json").exists()


def test_from_clip_on_a_folder_keeps_clip_weights_and_starts_new_parameters_neutral(tiny_clip_dir):
    model = CLIPViPModel.from_clip(tiny_clip_dir)
    clip = tiny_clip()  # same seed as the saved one
    for name, tensor in clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], tensor), name
    assert model.extra_proxies.shape == (3, 32) and model.extra_proxies.abs().sum() > 0
    assert model.temporal_embedding.shape == (12, 32) and model.temporal_embedding.abs().sum() == 0
    assert not model.training


def test_loading_refuses_pickled_weights(tiny_clip_dir, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_clip_dir / "config.json").read_text())
    torch.save(tiny_clip().state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(PickledWeightsError, match="pytorch_model.bin"):
        CLIPViPModel.from_pretrained(pickled)
    with pytest.raises(PickledWeightsError, match="never loaded"):
        CLIPViPModel.from_clip(pickled)


def test_from_pretrained_on_a_plain_clip_folder_points_to_from_clip(tiny_clip_dir):
    with pytest.raises(ValueError, match="from_clip"):
        CLIPViPModel.from_pretrained(tiny_clip_dir)


def test_parameter_groups_exclude_biases_norms_proxies_temporal_and_logit_scale():
    model = CLIPViPModel.from_clip(tiny_clip(layers=1))
    decay, no_decay = model.parameter_groups(0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(param): name for name, param in model.named_parameters()}
    decay_names = {names[id(param)] for param in decay["params"]}
    no_decay_names = {names[id(param)] for param in no_decay["params"]}
    assert decay_names.isdisjoint(no_decay_names)
    assert decay_names | no_decay_names == set(names.values())
    for name in ("extra_proxies", "temporal_embedding", "clip.logit_scale",
                 "clip.vision_model.embeddings.class_embedding",
                 "clip.vision_model.encoder.layers.0.self_attn.q_proj.bias",
                 "clip.vision_model.encoder.layers.0.layer_norm1.weight", "clip.vision_model.pre_layrnorm.weight",
                 "clip.text_model.final_layer_norm.bias"):
        assert name in no_decay_names, name
    for name in ("clip.vision_model.encoder.layers.0.self_attn.q_proj.weight",
                 "clip.vision_model.encoder.layers.0.mlp.fc1.weight", "clip.visual_projection.weight",
                 "clip.vision_model.embeddings.patch_embedding.weight"):
        assert name in decay_names, name
    torch.optim.AdamW(model.parameter_groups(0.05), lr=1e-6, betas=(0.9, 0.98))


def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients(monkeypatch):
    import model.video_encoder as video_encoder

    calls = []
    original = video_encoder.checkpoint
    monkeypatch.setattr(video_encoder, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    grads = []
    for checkpointing in (False, True):
        model = CLIPViPModel.from_clip(tiny_clip(), num_proxies=2).train()
        model.set_gradient_checkpointing(checkpointing)
        ids, mask = text_batch(batch=2)
        out = model(pixel_values=pixels(2, 3), input_ids=ids, attention_mask=mask)
        (out.video_embeds * out.text_embeds).sum().backward()
        grads.append({name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None})
    assert len(calls) == 2  # the two vision layers, only when switched on
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("device,dtype", [("cpu", torch.bfloat16), ("cuda", torch.float16)])
def test_runs_under_autocast(device, dtype):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = CLIPViPModel.from_clip(tiny_clip()).to(device).train()
    video, (ids, mask) = pixels(2, 3).to(device), text_batch(batch=2)
    with torch.no_grad():
        reference = model(pixel_values=video, input_ids=ids.to(device), attention_mask=mask.to(device))
    with torch.autocast(device, dtype=dtype):
        out = model(pixel_values=video, input_ids=ids.to(device), attention_mask=mask.to(device))
        (out.video_embeds * out.text_embeds).sum().backward()
    assert torch.isfinite(out.video_embeds).all() and torch.isfinite(out.text_embeds).all()
    assert F.cosine_similarity(out.video_embeds.float(), reference.video_embeds).min() > 0.99
    assert all(torch.isfinite(param.grad).all() for param in model.parameters() if param.grad is not None)
    assert model.extra_proxies.grad is not None and model.temporal_embedding.grad is not None


def test_model_package_imports_nothing_from_pipeline_train_or_vipstream():
    import re
    from pathlib import Path

    import model

    for source in Path(model.__file__).parent.glob("*.py"):
        text = source.read_text()
        assert not re.search(r"^\s*(from|import)\s+(pipeline|train|vipstream)\b", text, re.M), source.name
