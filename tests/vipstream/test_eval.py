"""`vipstream eval` end to end: a real retrieval set (built by `vipstream build --annotations`),
a tiny CLIP-ViP saved to disk, the CLI run as a user would; and the meanpool baseline."""

from __future__ import annotations

import json
import subprocess

import pytest

from model.clip_vip import CLIPViPModel
from tests.conftest import vipstream_cmd
from tests.retrieval_sets import COLOURS, CAPTION_TEMPLATES
from train.evaluate import evaluate_model
from vipstream.commands.eval import DSL_LABEL, format_table

METRICS = {"R@1", "R@5", "R@10", "MdR", "MnR"}


@pytest.fixture(scope="module")
def tiny_clip_vip(stand_in_clip, tmp_path_factory):
    return CLIPViPModel.from_clip(stand_in_clip).save_pretrained(tmp_path_factory.mktemp("ckpt") / "clip_vip")


def test_eval_cli_prints_the_table_and_writes_metrics_json(retrieval_set, tiny_clip_vip, tmp_path):
    out_dir, _ = retrieval_set
    output = tmp_path / "metrics.json"
    done = subprocess.run([*vipstream_cmd(), "eval", "--checkpoint", str(tiny_clip_vip), "--data", str(out_dir),
                           "--frames", "4", "--dsl", "--batch-size", "4", "--output", str(output), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(output.read_text())
    assert metrics["num_videos"] == len(COLOURS)
    assert metrics["num_texts"] == len(COLOURS) * len(CAPTION_TEMPLATES)
    for kind in ("plain", "dsl"):
        for direction in ("t2v", "v2t"):
            assert set(metrics[kind][direction]) == METRICS
            assert 0 <= metrics[kind][direction]["R@1"] <= 100
            assert 1 <= metrics[kind][direction]["MdR"] <= len(COLOURS) * len(CAPTION_TEMPLATES)
    # 6 videos: every text finds its video within the top 10
    assert metrics["plain"]["t2v"]["R@10"] == 100.0
    lines = done.stdout.splitlines()
    assert any(line.startswith("plain ") for line in lines)
    assert any(line.startswith(DSL_LABEL) for line in lines)
    assert "text->video" in done.stdout and "video->text" in done.stdout
    assert f"{metrics['plain']['t2v']['R@1']:.1f}" in next(line for line in lines if line.startswith("plain "))


def test_meanpool_baseline_and_a_plain_clip_without_it(retrieval_set, stand_in_clip, tmp_path):
    out_dir, _ = retrieval_set
    result = evaluate_model(stand_in_clip, out_dir, num_frames=4, batch_size=4, baseline="meanpool",
                            progress=False)
    assert result["baseline"] == "meanpool" and result["num_videos"] == len(COLOURS)
    assert set(result["plain"]["t2v"]) == METRICS and set(result["dsl"]["v2t"]) == METRICS
    assert DSL_LABEL not in format_table(result, dsl=False)
    done = subprocess.run([*vipstream_cmd(), "eval", "--checkpoint", str(stand_in_clip), "--data", str(out_dir),
                           "--output", str(tmp_path / "m.json"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--baseline meanpool" in done.stderr
