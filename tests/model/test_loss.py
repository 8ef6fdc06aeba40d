"""OCL losses against a loop-based reference, and the two-process gather against one process."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.loss import MAX_LOG_LOGIT_SCALE, OCLLoss, clamp_logit_scale_, infonce_loss, ocl_loss, parse_variant
from tests.model.loss_reference import SCALE, VARIANTS, reference_ocl, unit_features


@pytest.mark.parametrize("variant", VARIANTS)
def test_ocl_loss_equals_the_loop_reference(variant):
    video, subtitle, caption, frame = unit_features(6, 8, seed=0)
    loss = ocl_loss(video, subtitle, caption, frame, torch.tensor(SCALE, dtype=torch.float64), variant)
    expected = reference_ocl(video, subtitle, caption, frame, SCALE, variant)
    torch.testing.assert_close(loss, expected, atol=1e-10, rtol=1e-10)


def test_ocl_is_the_six_term_joint_loss_and_gradients_match_the_reference():
    feats = [f.requires_grad_() for f in unit_features(5, 8, seed=1)]
    ocl_loss(*feats, torch.tensor(SCALE, dtype=torch.float64), "ocl").backward()
    reference = [f.detach().clone().requires_grad_() for f in feats]
    reference_ocl(*reference, SCALE, "joint+fc").backward()
    for mine, theirs in zip(feats, reference):
        torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-10, rtol=1e-10)


def test_joint_softmax_excludes_the_clips_own_other_source_text():
    video, subtitle, caption, frame = unit_features(4, 8, seed=2)
    caption_equals_video = video.clone()  # the own caption would be a perfect negative if included
    with_own = ocl_loss(video, subtitle, caption_equals_video, frame, torch.tensor(50.0, dtype=torch.float64), "joint")
    other = ocl_loss(video, subtitle, caption, frame, torch.tensor(50.0, dtype=torch.float64), "joint")
    assert torch.isfinite(with_own) and torch.isfinite(other)
    expected = reference_ocl(video, subtitle, caption_equals_video, frame, 50.0, "joint")
    torch.testing.assert_close(with_own, expected, atol=1e-10, rtol=1e-10)


def test_infonce_is_the_symmetric_video_text_loss():
    video, text, _, _ = unit_features(5, 8, seed=3)
    scale = torch.tensor(SCALE, dtype=torch.float64)
    torch.testing.assert_close(infonce_loss(video, text, scale), ocl_loss(video, text, None, None, scale, "vs"))


@pytest.mark.parametrize("variant, names", [
    ("ocl", {"s2v", "c2v", "v2s_joint", "v2c_joint", "f2c", "c2f"}), ("vs", {"s2v", "v2s"}),
    ("vc+fc", {"c2v", "v2c", "f2c", "c2f"}), ("vs+vc", {"s2v", "c2v", "v2s", "v2c"})])
def test_returned_terms_are_the_variants_terms_and_sum_to_the_loss(variant, names):
    feats = unit_features(4, 8, seed=6)
    scale = torch.tensor(SCALE, dtype=torch.float64)
    loss, terms = ocl_loss(*feats, scale, variant, return_terms=True)
    assert set(terms) == names
    torch.testing.assert_close(sum(terms.values()), loss)
    torch.testing.assert_close(loss, ocl_loss(*feats, scale, variant))
    loss, terms = infonce_loss(feats[0], feats[1], scale, return_terms=True)
    assert set(terms) == {"v2t", "t2v"}
    torch.testing.assert_close(terms["v2t"] + terms["t2v"], loss)


def test_local_loss_on_one_process_equals_the_global_loss():
    feats = unit_features(4, 8, seed=4)
    scale = torch.tensor(SCALE, dtype=torch.float64)
    torch.testing.assert_close(ocl_loss(*feats, scale, local_loss=True), ocl_loss(*feats, scale))
    torch.testing.assert_close(OCLLoss("vs+vc")(*feats, scale), ocl_loss(*feats, scale, "vs+vc"))


def test_half_precision_features_give_a_float32_loss():
    feats = [f.to(torch.bfloat16) for f in unit_features(4, 8, seed=5, dtype=torch.float32)]
    loss = ocl_loss(*feats, torch.tensor(SCALE, dtype=torch.bfloat16))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_variant_names_are_parsed_and_bad_ones_refused():
    assert parse_variant("ocl") == parse_variant("joint+fc")
    terms = parse_variant("vs+vc")
    assert terms.video_subtitle and terms.video_caption and not terms.joint and not terms.frame_caption
    for bad in ("joint+vs", "fc", "vs+vs", "v-s", ""):
        with pytest.raises(ValueError):
            parse_variant(bad)
    with pytest.raises(ValueError, match="caption"):
        ocl_loss(*unit_features(2, 4, seed=0)[:2], None, None, torch.tensor(1.0), "vc")


def test_logit_scale_parameter_is_clamped_in_place_to_0_and_ln_200_outside_the_graph():
    for value, expected in ((7.0, MAX_LOG_LOGIT_SCALE), (-1.0, 0.0), (math.log(100.0), math.log(100.0))):
        parameter = torch.nn.Parameter(torch.tensor(value))
        returned = clamp_logit_scale_(parameter)
        assert returned is parameter and parameter.requires_grad and parameter.grad_fn is None
        assert parameter.item() == pytest.approx(expected, abs=1e-6)
    assert math.exp(MAX_LOG_LOGIT_SCALE) == pytest.approx(200.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_run_matches_one_process_on_the_concatenated_batch(tmp_path):
    world, per_rank = 2, 3
    video, subtitle, caption, frame = unit_features(world * per_rank, 8, seed=6)
    variants = [*VARIANTS, "infonce"]
    batch = {"video": video, "subtitle": subtitle, "caption": caption, "frame": frame,
             "log_scale": torch.tensor(SCALE, dtype=torch.float64).log(), "variants": variants}
    torch.save(batch, tmp_path / "batch.pt")
    worker = Path(__file__).with_name("dist_loss_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world),
                    "--master_port", str(_free_port()), str(worker), str(tmp_path / "batch.pt"), str(tmp_path)],
                   check=True, env=env, timeout=240, capture_output=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]

    for variant in variants:
        feats = [f.clone().requires_grad_() for f in (video, subtitle, caption, frame)]
        log_scale = batch["log_scale"].clone().requires_grad_()
        if variant == "infonce":
            single = infonce_loss(feats[0], feats[1], log_scale.exp())
        else:
            single = ocl_loss(*feats, log_scale.exp(), variant)
        single.backward()
        single_grads = torch.stack([f.grad if f.grad is not None else torch.zeros_like(f) for f in feats])
        for local_loss in (False, True):
            results = [rank[f"{variant}|{local_loss}"] for rank in ranks]
            losses = torch.stack([r["loss"] for r in results])
            if not local_loss:  # every rank computes the whole global loss
                for loss in losses:
                    torch.testing.assert_close(loss, single.detach())
            torch.testing.assert_close(losses.mean(), single.detach())
            # DDP averages gradients over ranks; the gather's backward sums over ranks.
            mean_scale_grad = torch.stack([r["scale_grad"] for r in results]).mean()
            torch.testing.assert_close(mean_scale_grad, log_scale.grad)
            for rank, result in enumerate(results):
                rows = slice(rank * per_rank, (rank + 1) * per_rank)
                torch.testing.assert_close(result["grads"] / world, single_grads[:, rows],
                                           msg=f"{variant} local_loss={local_loss} rank {rank}")
