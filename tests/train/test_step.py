"""Exact contrastive accumulation: accum_freq=k at batch b gives the gradients of one batch k*b."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.clip_vip import CLIPViPModel
from tests.train.trainer_helpers import batch_of, make_pool
from train.config import loss_features
from train.step import FeatureModel, accumulate_gradients, make_loss_fn, model_inputs


def _gradients(model: CLIPViPModel, micro_batches, loss: str, features) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    value, _ = accumulate_gradients(FeatureModel(model), micro_batches, make_loss_fn(loss, features, False))
    return float(value), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss, text_source", [("ocl", "both"), ("infonce", "mixed"), ("vc+fc", "caption")])
def test_accum_freq_2_at_batch_b_gives_the_gradients_of_accum_1_at_batch_2b(stand_in_clip, loss, text_source):
    torch.manual_seed(0)
    model = CLIPViPModel.from_clip(stand_in_clip, num_proxies=4, temporal_size=4).train()
    with torch.no_grad():  # a non-zero temporal embedding, so its gradient path is exercised too
        model.temporal_embedding.normal_(std=0.02)
    pool = make_pool(stand_in_clip, 8, num_frames=4)
    features = loss_features(loss, text_source)
    index = torch.arange(8)
    whole = [model_inputs(batch_of(pool, index, text_source), features)]
    halves = [model_inputs(batch_of(pool, part, text_source), features) for part in index.chunk(2)]
    quarters = [model_inputs(batch_of(pool, part, text_source), features) for part in index.chunk(4)]

    loss_whole, grads_whole = _gradients(model, whole, loss, features)
    for micro in (halves, quarters):
        loss_accum, grads_accum = _gradients(model, micro, loss, features)
        assert loss_accum == pytest.approx(loss_whole, rel=1e-5)
        assert grads_accum.keys() == grads_whole.keys()
        for name, grad in grads_whole.items():
            torch.testing.assert_close(grads_accum[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert grads_whole["clip.logit_scale"].abs() > 0  # counted once, not once per micro-batch


def test_two_process_ddp_accumulation_gives_the_one_process_gradients_of_the_global_batch(stand_in_clip, tmp_path):
    worker = Path(__file__).with_name("dist_accum_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(stand_in_clip), str(tmp_path)], env=env, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    torch.manual_seed(0)
    model = CLIPViPModel.from_clip(stand_in_clip, num_proxies=4, temporal_size=4).train()
    features = loss_features("ocl", "both")
    pool = make_pool(stand_in_clip, 8, num_frames=4)
    expected_loss, expected = _gradients(model, [model_inputs(batch_of(pool, torch.arange(8)), features)], "ocl",
                                         features)
    for rank in (0, 1):
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name in ("whole", "accum2"):
            assert float(results[name]["loss"]) == pytest.approx(expected_loss, rel=1e-5)
            for param, grad in expected.items():
                torch.testing.assert_close(results[name]["grads"][param], grad, atol=1e-5, rtol=1e-4,
                                           msg=f"rank {rank} {name} {param}")
