"""tools/order_test.py: own video vs its time-reversed twin, per caption, through the checkpoints'
real loading paths (a plain CLIP folder with --baseline meanpool, a CLIP-ViP folder)."""

from __future__ import annotations

import json

import pytest

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
