"""The logit scale in training (issue 14.5): clamped in place to [0, ln 200] after each optimizer
step, as the reference does (not inside the forward), and started at the reference's 4.60 only
when training starts from a plain CLIP."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from model.clip_vip import CLIPViPModel
from model.loss import MAX_LOG_LOGIT_SCALE
from tests.train.trainer_helpers import batch_of, make_pool
from train.config import load_setup
from train.loop import load_model, run_training
from train.metrics import read_metrics
from vipstream.config import ConfigError

#: Just under ln 200 (5.2983): one AdamW step of lr 0.1 upwards takes it past.
START = 5.25


def _aligned_init(stand_in_clip, folder):
    """A CLIP-ViP checkpoint whose video and subtitle features of a 4-sample pool are the same unit
    vectors (cos a_i, sin a_i) at angles a_i = 0, .1, .2, .3 rad (rank-2 projections): every
    positive pair has similarity 1 and every negative less, so the contrastive loss always wants a
    larger logit scale. Returns (folder, the fixed batch)."""
    model = CLIPViPModel.from_clip(stand_in_clip, temporal_size=4)
    pool = make_pool(stand_in_clip, 4, num_frames=4, image_size=32, max_length=16)
    batch = batch_of(pool, torch.arange(4), text_source="subtitle")
    angles = torch.tensor([0.0, 0.1, 0.2, 0.3])
    target = torch.stack([angles.cos(), angles.sin()], dim=1)  # [4, 2]
    basis = torch.eye(32)[:2]  # u1, u2
    with torch.no_grad():
        model.clip.visual_projection.weight.copy_(torch.eye(32))
        model.clip.text_projection.weight.copy_(torch.eye(32))
        video = model.encode_video(batch.video)  # [4, 32] unit pooled features
        text = model.encode_text(batch.subtitle_ids, batch.subtitle_mask)
        # W p = sum_k u_k (w_k . p) with w_k . v_i = target[i, k]: 4 equations, 32 unknowns each
        model.clip.visual_projection.weight.copy_(basis.T @ (torch.linalg.pinv(video) @ target).T)
        model.clip.text_projection.weight.copy_(basis.T @ (torch.linalg.pinv(text) @ target).T)
        model.clip.logit_scale.fill_(START)
        similarity = model.encode_video(batch.video) @ model.encode_text(batch.subtitle_ids, batch.subtitle_mask).T
    torch.testing.assert_close(similarity, target @ target.T, atol=1e-4, rtol=0)
    return model.save_pretrained(folder), batch


def test_a_step_that_pushes_the_logit_scale_past_ln_200_leaves_it_at_ln_200(stand_in_clip, tmp_path):
    init, batch = _aligned_init(stand_in_clip, tmp_path / "aligned")

    def fixed_loader(data_cfg, *, processor_dir, rank, world_size, seed, start_batch):
        while True:
            yield batch

    setup = load_setup(None, {"init": str(init), "loss": "vs", "text_source": "subtitle", "num_frames": 4,
                              "batch_size": 4, "max_text_length": 16, "lr": 0.1, "weight_decay": 0.0,
                              "warmup_fraction": 0.0, "max_steps": 1, "log_every": 1, "save_every": 1,
                              "progress": False, "captioner_id": "memory", "shards": "memory"})
    run_training(setup, tmp_path / "run", make_loader=fixed_loader)
    # the saved parameter itself (read raw: loading would clamp it again)
    saved = load_file(str(tmp_path / "run" / "checkpoints" / "step_00000001" / "model.safetensors"))
    assert saved["clip.logit_scale"].item() == pytest.approx(MAX_LOG_LOGIT_SCALE, abs=1e-6)  # not START + 0.1
    (row,) = read_metrics(tmp_path / "run")
    assert row["logit_scale"] == pytest.approx(200.0, rel=1e-5)


def test_logit_scale_init_applies_only_when_starting_from_a_plain_clip(stand_in_clip, tmp_path):
    cfg = load_setup(None, {"init": str(stand_in_clip), "shards": "memory", "captioner_id": "memory"}).train
    assert cfg.logit_scale_init == pytest.approx(4.60)  # the reference's value, the default
    from_clip = load_model(stand_in_clip, cfg)
    assert from_clip.clip.logit_scale.item() == pytest.approx(4.60)
    with torch.no_grad():
        from_clip.clip.logit_scale.fill_(3.0)
    folder = from_clip.save_pretrained(tmp_path / "clip_vip")
    assert load_model(folder, cfg).clip.logit_scale.item() == pytest.approx(3.0)  # a CLIP-ViP init keeps its own
    other = load_setup(None, {"init": str(stand_in_clip), "shards": "memory", "captioner_id": "memory",
                              "logit_scale_init": "2.5"}).train  # a flag's string
    assert load_model(stand_in_clip, other).clip.logit_scale.item() == pytest.approx(2.5)
    with pytest.raises(ConfigError, match="logit_scale_init"):
        load_setup(None, {"shards": "memory", "captioner_id": "memory", "logit_scale_init": 6.0})
    assert math.log(200.0) == pytest.approx(MAX_LOG_LOGIT_SCALE)
