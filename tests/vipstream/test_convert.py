"""`vipstream convert` both ways and `vipstream eval --checkpoint CKPT.pt --clip`, run as a user
would, on a reference-layout .pt made from a tiny CLIP (the released files' layout: issue 14)."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from model.clip_vip import CLIPViPModel
from tests.conftest import vipstream_cmd
from train.evaluate import evaluate_model


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*vipstream_cmd(), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference_pt(stand_in_clip, tmp_path_factory):
    """A float16 reference-layout checkpoint (as apex O2 saved the released ones) of a tiny CLIP-ViP
    on the stand-in CLIP, with a trained-looking temporal embedding: (path, the state dict)."""
    model = CLIPViPModel.from_clip(stand_in_clip, temporal_size=12)
    with torch.no_grad():
        model.temporal_embedding.normal_(std=0.02)
    state = model.to_xpretrain_state_dict(dtype=torch.float16)
    path = tmp_path_factory.mktemp("xpretrain") / "pretrain_clipvip_tiny.pt"
    torch.save(state, path)
    return path, state


def test_convert_from_and_back_to_the_reference_layout(reference_pt, stand_in_clip, tmp_path):
    path, state = reference_pt
    folder = tmp_path / "converted"
    done = run("convert", "--from-xpretrain", str(path), "--clip", str(stand_in_clip), "--output", str(folder))
    assert done.returncode == 0, done.stderr[-2000:]
    model = CLIPViPModel.from_pretrained(folder)
    for key, tensor in model.clip.state_dict().items():
        assert torch.equal(tensor, state["clipmodel." + key].float()), key
    pixels = json.loads((folder / "preprocessor_config.json").read_text())
    assert pixels["size"] == {"height": 32, "width": 32} and pixels["resample"] == 3  # the reference's resize
    assert (folder / "tokenizer.json").is_file()  # the CLIP's tokenizer rides along

    back = tmp_path / "back.pt"
    done = run("convert", "--to-xpretrain", str(folder), "--output", str(back), "--dtype", "float16")
    assert done.returncode == 0, done.stderr[-2000:]
    exported = torch.load(back, weights_only=True)
    assert set(exported) == set(state)
    for key, tensor in state.items():
        assert exported[key].dtype == tensor.dtype and torch.equal(exported[key], tensor), key



def test_convert_refuses_to_overwrite_needs_clip_and_names_the_broken_key(reference_pt, stand_in_clip, tmp_path,
                                                                          capsys):
    from vipstream.cli import main

    path, state = reference_pt
    (tmp_path / "taken").mkdir()
    assert main(["convert", "--from-xpretrain", str(path), "--clip", str(stand_in_clip),
                 "--output", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", "--from-xpretrain", str(path), "--output", str(tmp_path / "x")]) == 2
    assert "--clip" in capsys.readouterr().err
    broken = dict(state)
    del broken["clipmodel.text_projection.weight"]
    torch.save(broken, tmp_path / "broken.pt")
    assert main(["convert", "--from-xpretrain", str(tmp_path / "broken.pt"), "--clip", str(stand_in_clip),
                 "--output", str(tmp_path / "y")]) == 2
    assert "1 missing: clipmodel.text_projection.weight" in capsys.readouterr().err
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".y.*"))


def test_eval_takes_the_reference_pt_directly_with_the_reference_pixels(reference_pt, stand_in_clip, retrieval_set,
                                                                        tmp_path):
    out_dir, _ = retrieval_set
    path, _ = reference_pt
    output = tmp_path / "metrics.json"
    done = run("eval", "--checkpoint", str(path), "--clip", str(stand_in_clip), "--data", str(out_dir),
               "--frames", "4", "--dsl", "--batch-size", "4", "--output", str(output), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    from_pt = json.loads(output.read_text())
    # the same model as a converted folder, evaluated in process: the same numbers
    converted = CLIPViPModel.from_xpretrain(path, stand_in_clip).save_pretrained(tmp_path / "converted")
    from_folder = evaluate_model(str(converted), out_dir, num_frames=4, batch_size=4, progress=False)
    assert from_pt["plain"] == from_folder["plain"] and from_pt["dsl"] == from_folder["dsl"]
    no_clip = run("eval", "--checkpoint", str(path), "--data", str(out_dir), "--output", str(tmp_path / "m.json"))
    assert no_clip.returncode == 2 and "--clip" in no_clip.stderr
