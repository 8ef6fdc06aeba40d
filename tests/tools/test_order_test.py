"""tools/order_test.py: own video vs its time-reversed twin, per caption, through the checkpoints'
real loading paths (a plain CLIP folder with --baseline meanpool, a CLIP-ViP folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tools.demo_data import DEMO_WORDS, make_retrieval_set
from tools.order_test import main, order_test
from tools.stand_in_models import save_tiny_clip


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    return make_retrieval_set(tmp_path_factory.mktemp("twins"), num_pairs=2, seed=3)


def test_every_caption_is_scored_against_its_twin_for_clip_meanpool_and_clip_vip(twins, tmp_path):
    from model.clip_vip import CLIPViPModel

    clip = save_tiny_clip(tmp_path / "clip", words=DEMO_WORDS)
    captions = sum(len(v.captions) for v in twins.videos)
    meanpool = order_test(clip, twins.annotations_path, baseline="meanpool")
    assert meanpool["captions"] == captions and 0.0 <= meanpool["accuracy"] <= 100.0
    CLIPViPModel.from_clip(str(clip)).save_pretrained(tmp_path / "clip_vip")
    video = order_test(tmp_path / "clip_vip", twins.annotations_path)
    assert video["captions"] == captions and 0.0 <= video["accuracy"] <= 100.0


def test_cli_prints_and_writes_the_result(twins, tmp_path, capsys):
    clip = save_tiny_clip(tmp_path / "clip", words=DEMO_WORDS)
    out = tmp_path / "order.json"
    assert main(["--checkpoint", str(clip), "--baseline", "meanpool", "--annotations", str(twins.annotations_path),
                 "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text()) and printed["captions"] > 0


def test_cli_loads_a_clip_vip_checkpoint_as_eval_does_without_transformers_model_type_warning(twins, tmp_path):
    from model.clip_vip import CLIPViPModel

    clip = save_tiny_clip(tmp_path / "clip", words=DEMO_WORDS)
    checkpoint = CLIPViPModel.from_clip(str(clip)).save_pretrained(tmp_path / "clip_vip")
    done = subprocess.run([sys.executable, "-m", "tools.order_test", "--checkpoint", str(checkpoint),
                           "--annotations", str(twins.annotations_path)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "You are using a model of type" not in done.stderr and "clip_vip" not in done.stderr, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == order_test(checkpoint, twins.annotations_path)
