"""One key rule for the caption job and the trainer (issue 15.10; vipstream.schema.split_member_name):
a tar member named a/b/KEY.mp4 is sample a/b/KEY to both, so its caption reaches training. Real
tar, the real `vipstream caption` job (tiny BLIP on a local Ray), the real loader."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import webdataset as wds

from pipeline.caption.captioner import CaptionerConfig
from pipeline.caption.job import run_caption_job
from tests.train.loader_support import batches, data_config, per_key, summed_counts
from vipstream.schema import caption_sidecar_path, shard_stats_path, shard_tar_path

KEYS = ["a/b/vid0_0000", "a/b/vid0_0001", "c/vid1_0000", "vid2_0000"]


def test_a_member_inside_directories_gets_its_caption_in_training(clip_mp4, tiny_blip, ray_local, stand_in_clip,
                                                                    tmp_path):
    out_dir = tmp_path / "out"
    tar = shard_tar_path(out_dir, 0)
    tar.parent.mkdir(parents=True)
    with wds.TarWriter(str(tar)) as writer:
        for key in KEYS:
            meta = {"clip_id": key, "video_id": key.rsplit("_", 1)[0], "span": [0.0, 2.0], "subtitle": f"clip {key}",
                    "duration": 2.0, "fps": 3.0, "width": 398, "height": 224, "num_frames": 6, "source": "x.mp4"}
            writer.write({"__key__": key, "mp4": clip_mp4, "json": json.dumps(meta).encode()})
    shard_stats_path(out_dir, 0).write_text(json.dumps({"shard": 0, "clips": len(KEYS), "rows": [], "errors": []}))

    summary = run_caption_job(out_dir, CaptionerConfig(captioner=str(tiny_blip), captioner_id="blip", batch_size=4,
                                                       max_new_tokens=8), progress=False)
    assert summary["captions"] == len(KEYS)
    rows = pq.read_table(caption_sidecar_path(out_dir, "blip", 0)).to_pylist()
    assert [r["key"] for r in rows] == KEYS  # directories kept, as webdataset keys the samples
    captions = {r["key"]: r["caption"] for r in rows}

    got = batches(data_config(out_dir, captioner_id="blip", mode="eval", text_source="both"), stand_in_clip)
    has_caption = per_key(got, "has_caption")
    assert sorted(has_caption) == sorted(KEYS)
    assert {k: bool(v) for k, v in has_caption.items()} == {k: bool(c.strip()) for k, c in captions.items()}
    assert any(has_caption.values())
    assert "caption_fallback" not in summed_counts(got) or not all(c.strip() for c in captions.values())
