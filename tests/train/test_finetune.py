"""Fine-tuning (issue 9): configs/finetune_msrvtt.yaml's recipe (InfoNCE on one caption drawn per
video, validation keeping checkpoints/best/ by t2v R@1) on a tiny real retrieval set, in process,
through the real loader, trainer and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from model.clip_vip import CLIPViPModel
from train.config import load_setup
from train.evaluate import evaluate_model
from train.loop import run_training

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_finetuning_improves_r_at_1_on_a_tiny_set_over_the_starting_checkpoint(retrieval_set, stand_in_clip,
                                                                               tmp_path):
    out_dir, _ = retrieval_set
    init = CLIPViPModel.from_clip(stand_in_clip).save_pretrained(tmp_path / "init")
    evaluate = dict(num_frames=4, batch_size=6, max_text_length=16, progress=False)
    before = evaluate_model(str(init), out_dir, **evaluate)

    # The recipe, scaled to a random tiny model and six videos: a learning rate a random model
    # moves with, few steps, validation on the set itself (the test asks: does fine-tuning learn?).
    setup = load_setup(REPO_ROOT / "configs" / "finetune_msrvtt.yaml", {
        "init": str(init), "shards": str(out_dir), "val_data": str(out_dir), "lr": 2e-3,
        "warmup_fraction": 0.1, "max_steps": 30, "val_every": 10, "save_every": 30, "log_every": 10,
        "batch_size": 6, "val_batch_size": 6, "num_frames": 4, "max_text_length": 16, "num_workers": 0,
        "sample_shuffle": 0, "progress": False, "seed": 0})
    assert setup.train.loss == "infonce" and setup.data.text_source == "annotation"
    run_training(setup, tmp_path / "run")

    best = tmp_path / "run" / "checkpoints" / "best"
    info = json.loads((best / "best.json").read_text())
    after = evaluate_model(str(best), out_dir, **evaluate)
    assert info["metric"] == "t2v/R@1"
    assert after["plain"]["t2v"]["R@1"] > before["plain"]["t2v"]["R@1"], (before["plain"], after["plain"])
