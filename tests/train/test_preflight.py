"""train/preflight.py on hostile inputs, through `vipstream train` as a user runs it: each is an
exit 2 with a message naming what is wrong, before any model, data or process is started, never
a traceback."""

from __future__ import annotations

import shutil

import pytest

from tests.train.loader_support import copy_output
from tests.train.test_launch import _train_args
from vipstream.cli import main


@pytest.fixture(scope="module")
def garbage_stats_out(captioned_corpus, tmp_path_factory):
    """A copy of the captioned corpus whose first shard's stats file is binary garbage."""
    out_dir, captioner = captioned_corpus
    copy = copy_output(out_dir, tmp_path_factory.mktemp("garbage_stats") / "out")
    (copy / "shards" / "000000.stats.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff garbage")
    return copy, captioner


@pytest.fixture(scope="module")
def pickled_init(stand_in_clip, tmp_path_factory):
    """A CLIP folder (config, tokenizer) whose weights are only a pickled pytorch_model.bin."""
    folder = tmp_path_factory.mktemp("pickled") / "clip"
    shutil.copytree(stand_in_clip, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle we will never open")
    return folder


def _refused(capsys, args, message):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err[-2000:]
    assert "Traceback" not in err
    return err


def test_a_garbage_stats_file_is_named(garbage_stats_out, stand_in_clip, tmp_path, capsys):
    out_dir, _ = garbage_stats_out
    _refused(capsys, _train_args(garbage_stats_out, stand_in_clip, tmp_path / "run"),
             f"{out_dir / 'shards' / '000000.stats.json'}: the stats file of shard 000000.tar is not valid JSON")


def test_max_text_length_beyond_the_models_positions(captioned_corpus, stand_in_clip, tmp_path, capsys):
    _refused(capsys, _train_args(captioned_corpus, stand_in_clip, tmp_path / "run", "--max-text-length", "1000"),
             f"max_text_length 1000 is beyond the 77 text positions of the model ({stand_in_clip / 'config.json'})")


def test_an_init_folder_of_only_pickled_weights(captioned_corpus, pickled_init, tmp_path, capsys):
    _refused(capsys, _train_args(captioned_corpus, pickled_init, tmp_path / "run"),
             f"--init {pickled_init}: {pickled_init}: expected safetensors weights (*.safetensors), found only "
             f"pickled weights ['pytorch_model.bin']")
