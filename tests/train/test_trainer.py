"""The training loop in one process on in-memory batches: logs, checkpoints, exact resume, refusals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tests.train.trainer_helpers import memory_loader
from train.checkpoint import latest_checkpoint, load_trainer_state
from train.config import load_setup
from train.loop import run_training
from train.metrics import read_metrics
from vipstream.config import ConfigError


def _setup(init: Path, **overrides):
    values = {"init": str(init), "num_frames": 4, "batch_size": 4, "max_text_length": 16, "lr": 1e-3,
              "max_steps": 6, "log_every": 1, "save_every": 3, "keep_checkpoints": 1, "warmup_fraction": 0.2,
              "temporal_size": 4, "progress": False, "captioner_id": "memory", "shards": "memory"}
    return load_setup(None, {**values, **overrides})


class _Crash(RuntimeError):
    pass


def _crashing_loader(after_batches: int):
    """The memory loader, raising once this process has drawn `after_batches` batches."""
    inner = memory_loader()

    def make(data_cfg, **kwargs):
        for number, batch in enumerate(inner(data_cfg, **kwargs)):
            if number == after_batches:
                raise _Crash("simulated crash")
            yield batch

    return make


def test_run_logs_every_term_checkpoints_without_pickle_and_resumes_exactly(stand_in_clip, tmp_path):
    setup = _setup(stand_in_clip)
    whole = run_training(setup, tmp_path / "whole", make_loader=memory_loader())
    rows = read_metrics(tmp_path / "whole")
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    ocl_terms = {"loss/s2v", "loss/c2v", "loss/v2s_joint", "loss/v2c_joint", "loss/f2c", "loss/c2f"}
    assert ocl_terms <= set(rows[0]) and not {"loss/v2s", "loss/v2t"} & set(rows[0])
    for row in rows:
        assert row["loss"] == pytest.approx(sum(row[t] for t in ocl_terms), rel=1e-5)
        assert row["skipped"] == {"no_caption": row["step"]}  # one per batch, summed
        assert 0.0 <= row["data_wait_fraction"] <= 1.0 and row["samples_per_s"] > 0 and row["grad_norm"] > 0
    assert rows[0]["lr"] < rows[1]["lr"] and rows[-1]["lr"] < rows[1]["lr"]  # warm-up then cosine
    assert whole["steps"] == 6 and whole["samples"] == 24
    assert json.loads((tmp_path / "whole" / "summary.json").read_text())["steps"] == 6
    assert list((tmp_path / "whole" / "tensorboard").glob("events.out.tfevents.*"))

    # Checkpoints: latest pointer, last K kept, no file that needs weights_only=False.
    checkpoint = latest_checkpoint(tmp_path / "whole")
    assert checkpoint.name == "step_00000006"
    assert (tmp_path / "whole" / "checkpoints" / "latest").read_text().strip() == "step_00000006"
    assert sorted(p.name for p in (tmp_path / "whole" / "checkpoints").iterdir()) == ["latest", "step_00000006"]
    for path in checkpoint.iterdir():
        assert path.suffix in {".safetensors", ".json", ".txt", ".pt"}, path
        if path.suffix == ".pt":
            torch.load(path, weights_only=True)
    state = load_trainer_state(checkpoint)
    assert state["step"] == 6 and state["micro_batches"] == 6

    # Crash after the step-3 checkpoint, resume: steps 4..6 log the same numbers.
    with pytest.raises(_Crash):
        run_training(setup, tmp_path / "resumed", make_loader=_crashing_loader(after_batches=5))
    assert latest_checkpoint(tmp_path / "resumed").name == "step_00000003"
    with pytest.raises(ConfigError, match="--resume"):
        run_training(setup, tmp_path / "resumed", make_loader=memory_loader())
    run_training(setup, tmp_path / "resumed", resume=True, make_loader=memory_loader())
    resumed = read_metrics(tmp_path / "resumed")
    assert [row["step"] for row in resumed] == [1, 2, 3, 4, 5, 6]
    for mine, theirs in zip(resumed, rows):
        for key in ("loss", "loss/s2v", "loss/f2c", "lr", "grad_norm", "logit_scale", "skipped"):
            assert mine[key] == theirs[key], (mine["step"], key)

    again = run_training(setup, tmp_path / "resumed", resume=True, make_loader=memory_loader())
    assert again["steps"] == 6 and again["final"]  # a finished run resumed: nothing to do, summary kept

    # Another config is refused on --resume, accepted with --resume-weights-only.
    other = _setup(stand_in_clip, lr=5e-4, max_steps=7)
    with pytest.raises(ConfigError, match=r"lr: 0\.001 -> 0\.0005"):
        run_training(other, tmp_path / "resumed", resume=True, make_loader=memory_loader())
    summary = run_training(other, tmp_path / "resumed", resume_weights_only=True, make_loader=memory_loader())
    assert summary["start_step"] == 6 and summary["steps"] == 7


@pytest.mark.parametrize("loss, text_source, terms", [
    ("vs", "subtitle", {"s2v", "v2s"}),
    ("vc+fc", "caption", {"c2v", "v2c", "f2c", "c2f"}),
    ("vs+vc", "both", {"s2v", "c2v", "v2s", "v2c"}),
    ("joint", "both", {"s2v", "c2v", "v2s_joint", "v2c_joint"}),
    ("infonce", "mixed", {"v2t", "t2v"}),
])
def test_each_loss_variant_and_text_source_trains_on_real_shards_and_logs_its_own_terms(
        captioned_corpus, stand_in_clip, tmp_path, loss, text_source, terms):
    out_dir, captioner = captioned_corpus
    setup = _setup(stand_in_clip, loss=loss, text_source=text_source, max_steps=2, save_every=100,
                   accum_freq=2, batch_size=2, shards=str(out_dir), captioner_id=captioner, num_workers=0,
                   sample_shuffle=4, sample_shuffle_initial=2)
    run_training(setup, tmp_path / "run")  # the real streaming loader
    rows = read_metrics(tmp_path / "run")
    assert [row["step"] for row in rows] == [1, 2]
    assert {key[5:] for key in rows[-1] if key.startswith("loss/")} == terms
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in rows)


@pytest.mark.parametrize("loss, text_source, message", [
    ("ocl", "subtitle", "needs \\['caption'\\] texts"),
    ("infonce", "both", "needs one text per clip"),
    ("vs", "mixed", "use loss infonce"),
    ("nope", "both", "loss variant 'nope'"),
])
def test_a_loss_the_text_source_cannot_feed_is_refused_at_load(loss, text_source, message):
    with pytest.raises(ConfigError, match=message):
        load_setup(None, {"loss": loss, "text_source": text_source, "captioner_id": "x"})


class _Planted:
    """A pickle that would create `marker` if it were ever unpickled (a hostile trainer_state.pt)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_step_whose_files_fail_to_load_falls_back_to_the_previous_one_naming_both(stand_in_clip, tmp_path,
                                                                                    caplog):
    setup = _setup(stand_in_clip, keep_checkpoints=2)
    run_training(setup, tmp_path / "whole", make_loader=memory_loader())
    whole = {row["step"]: row for row in read_metrics(tmp_path / "whole")}
    checkpoints = tmp_path / "whole" / "checkpoints"
    weights = checkpoints / "step_00000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a truncated copy
    with caplog.at_level(logging.WARNING, logger="train.checkpoint"):
        summary = run_training(setup, tmp_path / "whole", resume=True, make_loader=memory_loader())
    assert f"checkpoint {checkpoints / 'step_00000006'} cannot be loaded" in caplog.text
    assert f"falling back to the previous complete checkpoint {checkpoints / 'step_00000003'}" in caplog.text
    assert summary["start_step"] == 3 and summary["steps"] == 6
    resumed = {row["step"]: row for row in read_metrics(tmp_path / "whole")}
    for step in (4, 5, 6):  # exactly the steps of the uninterrupted run
        assert resumed[step]["loss"] == whole[step]["loss"], step
    assert latest_checkpoint(tmp_path / "whole").name == "step_00000006"  # rewritten, loadable again
    load_trainer_state(latest_checkpoint(tmp_path / "whole"))


def test_a_hostile_trainer_state_is_refused_in_our_words_never_loaded(stand_in_clip, tmp_path, caplog):
    setup = _setup(stand_in_clip, keep_checkpoints=2)
    run = tmp_path / "run"
    run_training(setup, run, make_loader=memory_loader())
    marker = tmp_path / "pwned"

    def plant(step: str) -> None:
        torch.save({"format": 1, "step": _Planted(marker)}, run / "checkpoints" / step / "trainer_state.pt")

    plant("step_00000006")  # the previous step is intact: used, with our warning
    with caplog.at_level(logging.WARNING, logger="train.checkpoint"):
        assert run_training(setup, run, resume=True, make_loader=memory_loader())["start_step"] == 3
    plant("step_00000006"), plant("step_00000003")  # none intact: a ConfigError (exit 2), same words
    with pytest.raises(ConfigError) as refused:
        run_training(setup, run, resume=True, make_loader=memory_loader())
    assert refused.value.__cause__ is None and refused.value.__context__ is None  # no torch text chained
    for said in (caplog.text, str(refused.value)):
        assert "refused: not a tensor-only file" in said and "never loaded" in said, said
        assert "weights_only=False" not in said
    assert not marker.exists()
