"""Checkpoint folders: atomic, `latest` pointer, last K kept, weights_only state, RNG round trip,
and the resume rules (same config and world size, or --resume-weights-only)."""

from __future__ import annotations

import logging
import random
import shutil

import numpy as np
import pytest
import torch

from model.clip_vip import CLIPViPModel
from train.checkpoint import (latest_checkpoint, load_trainer_state, remove_stale_temporaries, rng_state,
                              save_checkpoint, select_checkpoint, set_rng_state, step_checkpoints)
from vipstream.config import ConfigError


@pytest.fixture(scope="module")
def model(stand_in_clip):
    return CLIPViPModel.from_clip(stand_in_clip, num_proxies=2, temporal_size=4)


def _save(run, step, model, config=None, world=1):
    config = config or {"lr": 1.0}
    return save_checkpoint(run, step, model, {"step": step, "ranks": [{"rng": rng_state()}]},
                           {"world_size": world, "config_digest": str(sorted(config.items())), "config": config},
                           keep=2)


def test_latest_points_at_the_newest_and_only_the_last_k_are_kept(model, tmp_path):
    for step in (2, 4, 6):
        _save(tmp_path, step, model)
    assert [s for s, _ in step_checkpoints(tmp_path)] == [4, 6]
    assert latest_checkpoint(tmp_path).name == "step_00000006"
    assert CLIPViPModel.from_pretrained(latest_checkpoint(tmp_path)).config.num_proxies == 2  # usable as --init
    state = load_trainer_state(latest_checkpoint(tmp_path))  # weights_only=True inside
    assert state["step"] == 6 and isinstance(state["ranks"][0]["rng"]["torch"], torch.Tensor)


def test_a_half_written_checkpoint_is_ignored_and_cleaned(model, tmp_path):
    _save(tmp_path, 2, model)
    (tmp_path / "checkpoints" / ".step_00000004.abc.tmp").mkdir()  # killed mid-write
    (tmp_path / "checkpoints" / "latest").write_text("step_00000004\n")  # pointer ahead of the data
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    remove_stale_temporaries(tmp_path)
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_resume_rules(model, tmp_path):
    config = {"lr": 1.0, "seed": 0}
    digest = str(sorted(config.items()))
    assert select_checkpoint(tmp_path, config, digest, 1, resume=True, weights_only=False) is None  # nothing yet
    _save(tmp_path, 2, model, config)
    with pytest.raises(ConfigError, match="--resume"):
        select_checkpoint(tmp_path, config, digest, 1, resume=False, weights_only=False)
    assert select_checkpoint(tmp_path, config, digest, 1, resume=True, weights_only=False).name == "step_00000002"
    other = {"lr": 2.0, "seed": 0}
    with pytest.raises(ConfigError, match=r"lr: 1\.0 -> 2\.0.*--resume-weights-only"):
        select_checkpoint(tmp_path, other, str(sorted(other.items())), 1, resume=True, weights_only=False)
    with pytest.raises(ConfigError, match="same world size"):
        select_checkpoint(tmp_path, config, digest, 2, resume=True, weights_only=False)
    assert select_checkpoint(tmp_path, other, "x", 2, resume=False, weights_only=True).name == "step_00000002"


@pytest.mark.parametrize("pointer", [
    b"\xff\xfe\x00\x9c binary garbage",
    "ABSOLUTE",  # the absolute path of a complete step folder outside the run
    "../../elsewhere/checkpoints/step_00000009",
    "step_00000004/../../../elsewhere/checkpoints/step_00000009",
    "",
])
def test_latest_names_a_step_folder_inside_checkpoints_or_is_ignored(model, tmp_path, caplog, pointer):
    run = tmp_path / "run"
    for step in (2, 4):
        _save(run, step, model)
    outside = tmp_path / "elsewhere" / "checkpoints" / "step_00000009"  # complete, and newer
    shutil.copytree(run / "checkpoints" / "step_00000004", outside)
    raw = str(outside).encode() if pointer == "ABSOLUTE" else pointer if isinstance(pointer, bytes) else pointer.encode()
    (run / "checkpoints" / "latest").write_bytes(raw)
    with caplog.at_level(logging.WARNING, logger="train.checkpoint"):
        assert latest_checkpoint(run) == run / "checkpoints" / "step_00000004"
    assert "ignoring it" in caplog.text


def test_pruning_never_removes_the_last_good_checkpoint(model, tmp_path):
    """Steps after 2 were written after a non-finite step (`loss_finite` false in checkpoint.json):
    keep=1 keeps the newest and step 2, the way back."""
    for step, finite in ((2, True), (4, False), (6, False)):
        save_checkpoint(tmp_path, step, model, {"step": step, "ranks": [{"rng": rng_state()}]},
                        {"world_size": 1, "config_digest": "d", "config": {}, "loss_finite": finite}, keep=1)
    assert [s for s, _ in step_checkpoints(tmp_path)] == [2, 6]
    assert latest_checkpoint(tmp_path).name == "step_00000006"


def test_an_unreadable_checkpoint_json_passes_over_to_the_previous_step(model, tmp_path, caplog):
    config = {"lr": 1.0}
    digest = str(sorted(config.items()))
    for step in (2, 4):
        _save(tmp_path, step, model, config)
    (tmp_path / "checkpoints" / "step_00000004" / "checkpoint.json").write_bytes(b"\x00\xff{not json")
    with caplog.at_level(logging.WARNING, logger="train.checkpoint"):
        chosen = select_checkpoint(tmp_path, config, digest, 1, resume=True, weights_only=False)
    assert chosen.name == "step_00000002"
    assert "step_00000004" in caplog.text and "falling back to the previous complete checkpoint" in caplog.text
