"""vipstream/caption_sidecar.py: the one sidecar check of training, caption and inspect, on
sidecars written by the caption job's own SidecarWriter and then damaged; and the shared key rule
of vipstream/schema.py against webdataset's."""

from __future__ import annotations

import pytest
from webdataset.tariterators import base_plus_ext

from pipeline.caption.sidecars import SidecarWriter
from pipeline.caption.stages import SAMPLE
from tests.sidecar_damage import DAMAGES, damage_sidecar
from vipstream.caption_sidecar import SidecarError, read_sidecar, sidecar_problem
from vipstream.schema import caption_sidecar_path, split_member_name


def _write(out_dir, captions: list[str], max_caption_chars: int | None = None) -> SidecarWriter:
    caption_sidecar_path(out_dir, "cap", 0).parent.mkdir(parents=True, exist_ok=True)
    writer = SidecarWriter(out_dir, "cap", max_caption_chars)
    writer.add([{"shard": 0, "shard_total": len(captions), "sample_index": i, "kind": SAMPLE, "key": f"k{i}",
                 "video_id": "v", "clip_id": f"k{i}", "caption": c, "frame_index": 2 + i, "frame_time_s": 0.5,
                 "error_stage": "", "error_reason": ""} for i, c in enumerate(captions)])
    return writer


def test_a_written_sidecar_reads_back_with_empty_captions_left_out_and_long_ones_cut(tmp_path):
    _write(tmp_path, ["a red square", "", "x" * 50])
    path = caption_sidecar_path(tmp_path, "cap", 0)
    assert sidecar_problem(path) is None
    whole = read_sidecar(path)
    assert whole.captions == {"k0": ("a red square", 2), "k2": ("x" * 50, 4)} and whole.rows == 3 and whole.cut == 0
    cut = read_sidecar(path, max_caption_chars=20)
    assert cut.captions == {"k0": ("a red square", 2), "k2": ("x" * 20, 4)} and cut.cut == 1
    assert sidecar_problem(tmp_path / "nope.parquet") == "missing"
    with pytest.raises(FileNotFoundError):
        read_sidecar(tmp_path / "nope.parquet")


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_each_damaged_sidecar_is_refused_with_its_file_and_reason(tmp_path, damage):
    _write(tmp_path, ["a red square", "a blue circle"])
    path = caption_sidecar_path(tmp_path, "cap", 0)
    damage_sidecar(path, damage)
    with pytest.raises(SidecarError, match=DAMAGES[damage]) as caught:
        read_sidecar(path)
    assert str(path) in str(caught.value)
    assert DAMAGES[damage] in sidecar_problem(path)


def test_the_caption_job_writes_captions_over_max_caption_chars_cut_and_counts_them(tmp_path):
    writer = _write(tmp_path, ["short", "word " * 100], max_caption_chars=42)
    captions = read_sidecar(caption_sidecar_path(tmp_path, "cap", 0)).captions
    assert captions["k0"][0] == "short" and len(captions["k1"][0]) <= 42 and captions["k1"][0].endswith("word")
    assert writer.captions_cut == 1


@pytest.mark.parametrize("name", ["KEY.mp4", "a/b/KEY.mp4", "a/b/KEY.x.JSON", "a.b/c/KEY_0001.mp4",
                                  "KEY", "dir/", "__key__", "x/__meta__.json", "v_0001.seg.2.mp4"])
def test_the_member_key_rule_is_webdatasets(name):
    key, ext = base_plus_ext(name)
    assert split_member_name(name) == (key, ext.lower() if ext is not None else None)
