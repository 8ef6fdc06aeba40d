"""Bad samples and shards cost only themselves, are counted, and nothing is ever unpickled
(train/data/members.py through the loader)."""

from __future__ import annotations

import pickle

import webdataset as wds

from tests.train.loader_support import batches, data_config, summed_counts


class _Payload:
    """Unpickling this creates a file: proof that a `.pickle` member was (not) unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_corrupt_mp4_missing_json_pickle_member_and_broken_shards_are_skipped_and_counted(
        captioned_corpus, stand_in_clip, tmp_path):
    out_dir, _ = captioned_corpus
    samples = list(wds.WebDataset(str(out_dir / "shards" / "000000.tar"), shardshuffle=False))
    marker = tmp_path / "unpickled"
    bad = tmp_path / "bad.tar"
    with wds.TarWriter(str(bad)) as writer:
        for index, sample in enumerate(samples):
            members = {"__key__": sample["__key__"], "mp4": sample["mp4"], "json": sample["json"]}
            if index == 0:
                members["mp4"] = b"\x00\x00\x00\x18ftypmp42 not a video" * 8
            elif index == 1:
                del members["json"]
            elif index == 2:
                members["pickle"] = pickle.dumps(_Payload(str(marker)))
            writer.write(members)
    whole = (out_dir / "shards" / "000001.tar").read_bytes()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(whole[: len(whole) // 2])
    shards = f"{tmp_path / 'missing.tar'},{truncated},{bad}"  # a comma-separated list of tars

    got = batches(data_config(shards, captioner_id=None, mode="eval", text_source="subtitle", num_workers=0),
                  stand_in_clip)
    keys = [k for b in got for k in b.keys]
    good = [s["__key__"] for s in samples[3:]]
    assert keys[-len(good):] == good  # every other sample of the bad shard arrives, in order
    truncated_keys = [s["__key__"] for s in wds.WebDataset(str(out_dir / "shards" / "000001.tar"),
                                                           shardshuffle=False)]
    read_before_break = keys[: -len(good)]
    assert read_before_break == truncated_keys[: len(read_before_break)]
    counts = summed_counts(got)
    assert counts.pop("missing_member", 0) in (1, 2)  # the json-less sample (+ the one cut by truncation)
    assert counts == {"shard_open_error": 1, "shard_read_error": 1, "corrupt_video": 1, "forbidden_member": 1}
    assert not marker.exists()
