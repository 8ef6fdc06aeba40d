"""A broken caption sidecar costs only its shard's captions, counted and named, in training and
in the trainer's preflight (issue 15.3; train/data/text.py, train/preflight.py, through the real
loader with a DataLoader worker)."""

from __future__ import annotations

import logging
import shutil

import pytest

from tests.sidecar_damage import DAMAGES, damage_sidecar
from tests.train.loader_support import batches, copy_output, data_config, per_key, summed_counts
from train.config import load_setup
from train.preflight import check_inputs
from vipstream.schema import caption_sidecar_path, shard_stats_path, shard_tar_path

DAMAGED = sorted(DAMAGES)  # shards 1..6 carry one damage each; shard 0 keeps its good sidecar


@pytest.fixture(scope="module")
def damaged_corpus(captioned_corpus, tmp_path_factory):
    """A copy of the captioned corpus with shard 0's tar also copied as shards 1..6 (same keys:
    eval reads each once), whose sidecars are shard 0's, each damaged one way: (out_dir, keys of
    shard 0, clips of shard 0)."""
    source, captioner = captioned_corpus
    out_dir = copy_output(source, tmp_path_factory.mktemp("damaged") / "out")
    for extra in sorted(shard_tar_path(out_dir, 0).parent.glob("00000[1-9].*")):
        extra.unlink()
    for path in caption_sidecar_path(out_dir, captioner, 0).parent.glob("00000[1-9].parquet"):
        path.unlink()
    for shard, damage in enumerate(DAMAGED, start=1):
        shutil.copy(shard_tar_path(out_dir, 0), shard_tar_path(out_dir, shard))
        shutil.copy(shard_stats_path(out_dir, 0), shard_stats_path(out_dir, shard))
        shutil.copy(caption_sidecar_path(out_dir, captioner, 0), caption_sidecar_path(out_dir, captioner, shard))
        damage_sidecar(caption_sidecar_path(out_dir, captioner, shard), damage)
    return out_dir, captioner


def test_each_broken_sidecar_is_a_counted_named_skip_and_its_clips_fall_back(damaged_corpus, stand_in_clip, caplog):
    out_dir, captioner = damaged_corpus
    caplog.set_level(logging.WARNING)
    got = batches(data_config(out_dir, mode="eval", text_source="both", num_workers=0,
                              skip_warnings_in_full=len(DAMAGED)), stand_in_clip)  # each named in full
    has_caption = [flag for b in got for flag in b.has_caption.tolist()]
    clips = len(has_caption) // (len(DAMAGED) + 1)  # the clips of shard 0, read once per copy
    assert clips > 0 and len(has_caption) == clips * (len(DAMAGED) + 1)  # every clip of every shard came
    assert sum(has_caption) == clips  # only shard 0's clips have their captions
    assert summed_counts(got) == {"bad_sidecar": len(DAMAGED), "caption_fallback": clips * len(DAMAGED)}
    for shard, damage in enumerate(DAMAGED, start=1):
        named = [r.getMessage() for r in caplog.records if str(caption_sidecar_path(out_dir, captioner, shard)) in r.getMessage()]
        assert named and DAMAGES[damage] in named[0], damage


def test_with_missing_caption_skip_their_clips_are_skipped_in_train_mode_from_a_worker(damaged_corpus, stand_in_clip):
    out_dir, _ = damaged_corpus
    got = batches(data_config(out_dir, mode="train", text_source="both", missing_caption="skip", num_workers=1,
                              batch_size=3), stand_in_clip, limit=6)
    assert all(bool(b.has_caption.all()) for b in got)
    counts = summed_counts(got)
    assert counts["bad_sidecar"] >= 1 and counts["missing_caption"] >= 1 and "caption_fallback" not in counts


def test_preflight_warns_about_each_broken_sidecar_before_training(damaged_corpus, stand_in_clip, tmp_path, caplog):
    out_dir, captioner = damaged_corpus
    setup = load_setup(None, {"init": str(stand_in_clip), "shards": str(out_dir), "captioner_id": captioner,
                              "batch_size": 2})
    caplog.set_level(logging.WARNING, logger="train.preflight")
    found = check_inputs(setup, tmp_path / "run", 1, resume=False, weights_only=False)
    assert found["shards"] == len(DAMAGED) + 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "train.preflight"]
    for shard, damage in enumerate(DAMAGED, start=1):
        path = str(caption_sidecar_path(out_dir, captioner, shard))
        assert any(path in w and DAMAGES[damage] in w for w in warnings), (damage, warnings)
    assert not any(str(caption_sidecar_path(out_dir, captioner, 0)) in w for w in warnings)
