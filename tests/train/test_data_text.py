"""Batches of real built shards + a real caption sidecar: shapes, dtypes and which text each clip
carries for every text source (train/data/text.py, batch.py, pixels.py through the loader)."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds

from tests.train.loader_support import (batches, copy_output, data_config, manifest_subtitles, per_key,
                                        sidecar_rows, summed_counts)
from train.data.seeding import sample_rng
from vipstream.schema import caption_sidecar_path


@pytest.fixture(scope="module")
def tokenizer(stand_in_clip):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(stand_in_clip)


def _ids(tokenizer, text: str, max_length: int = 70) -> list[int]:
    return tokenizer(text, max_length=max_length, truncation=True, padding="max_length")["input_ids"]


def test_both_gives_every_clip_its_manifest_subtitle_its_sidecar_caption_and_clip_pixels(
        captioned_corpus, stand_in_clip, tokenizer):
    import decord
    from PIL import Image
    from transformers import CLIPImageProcessor

    out_dir, captioner = captioned_corpus
    got = batches(data_config(out_dir, mode="eval", text_source="both", pixel_dtype="bfloat16"), stand_in_clip)
    first = got[0]
    assert first.video.shape == (4, 3, 3, 32, 32) and first.video.dtype == torch.bfloat16
    assert first.frame.shape == (4, 3, 32, 32) and first.frame.dtype == torch.bfloat16
    for name in ("subtitle_ids", "subtitle_mask", "caption_ids", "caption_mask"):
        assert getattr(first, name).shape == (4, 70) and getattr(first, name).dtype == torch.long
    assert first.text_ids is None and first.text_is_caption is None and first.captions == [[]] * 4
    assert summed_counts(got) == {}  # no skip, no fallback, no middle-frame mismatch

    subtitles, captions = manifest_subtitles(out_dir), sidecar_rows(out_dir, captioner)
    subtitle_ids, caption_ids = per_key(got, "subtitle_ids"), per_key(got, "caption_ids")
    assert sorted(subtitle_ids) == sorted(subtitles)
    for key in subtitles:
        assert subtitle_ids[key].tolist() == _ids(tokenizer, subtitles[key]), key
        assert caption_ids[key].tolist() == _ids(tokenizer, captions[key]["caption"]), key
    assert all(per_key(got, "has_caption").values())

    # F is the clip's middle frame (the captioned one), preprocessed as CLIPImageProcessor would.
    key, frame = first.keys[0], first.frame[0].float()
    sample = next(s for s in wds.WebDataset(str(out_dir / "shards" / "000000.tar"), shardshuffle=False)
                  if s["__key__"] == key)
    reader = decord.VideoReader(io.BytesIO(sample["mp4"]), num_threads=1)
    middle = reader[captions[key]["frame_index"]].asnumpy()
    reference = CLIPImageProcessor.from_pretrained(stand_in_clip)(images=Image.fromarray(middle),
                                                                   return_tensors="np")["pixel_values"][0]
    difference = (frame - torch.from_numpy(np.asarray(reference))).abs()
    assert difference.mean() < 0.02 and difference.max() < 0.3  # bicubic in torch vs PIL, bf16

    # uint8 pixels cross processes as bytes and arrive normalised: the float32 batch, exactly
    plain = batches(data_config(out_dir, mode="eval", text_source="both", batch_size=6), stand_in_clip)[0]
    raw = batches(data_config(out_dir, mode="eval", text_source="both", batch_size=6, pixel_dtype="uint8"),
                  stand_in_clip)[0]
    assert raw.video.dtype == torch.uint8 and raw.keys == plain.keys
    arrived = raw.to("cpu")
    assert arrived.video.dtype == torch.float32 and arrived.pixel_affine is None
    assert torch.allclose(arrived.video, plain.video, atol=1e-5) and torch.allclose(arrived.frame, plain.frame, atol=1e-5)
    # float32 from a worker (handed over as uint8, normalised in the main process) equals float32
    # made without worker processes (normalised in place where it is decoded)
    inline = batches(data_config(out_dir, mode="eval", text_source="both", batch_size=6, num_workers=0),
                     stand_in_clip)[0]
    assert plain.video.dtype == inline.video.dtype == torch.float32 and plain.pixel_affine is None
    assert inline.keys == plain.keys
    assert torch.allclose(inline.video, plain.video, atol=1e-6) and torch.allclose(inline.frame, plain.frame, atol=1e-6)


def test_long_texts_are_truncated_keeping_the_end_token(captioned_corpus, stand_in_clip, tokenizer):
    out_dir, _ = captioned_corpus
    got = batches(data_config(out_dir, mode="eval", text_source="subtitle", max_text_length=6), stand_in_clip)
    ids, mask = got[0].subtitle_ids, got[0].subtitle_mask
    assert ids.shape[1] == 6 and got[0].caption_ids is None
    lengths = mask.sum(dim=1)
    assert (lengths == 6).any()  # synthetic subtitles are longer than 6 tokens
    for row, length in zip(ids, lengths):
        assert row[0] == tokenizer.bos_token_id and row[length - 1] == tokenizer.eos_token_id


@pytest.mark.parametrize("ratio", [0.0, 1.0, 0.5])
def test_mixed_draws_the_caption_with_caption_ratio_seeded_per_clip(captioned_corpus, stand_in_clip, tokenizer, ratio):
    out_dir, captioner = captioned_corpus
    got = batches(data_config(out_dir, mode="eval", text_source="mixed", caption_ratio=ratio), stand_in_clip, seed=3)
    assert got[0].subtitle_ids is None and got[0].caption_ids is None
    subtitles, captions = manifest_subtitles(out_dir), sidecar_rows(out_dir, captioner)
    is_caption, text_ids = per_key(got, "text_is_caption"), per_key(got, "text_ids")
    assert sorted(is_caption) == sorted(subtitles)
    for key, flag in is_caption.items():
        expected = captions[key]["caption"] if flag else subtitles[key]
        assert text_ids[key].tolist() == _ids(tokenizer, expected), key
    drawn = sum(bool(flag) for flag in is_caption.values())
    seeded = sum(sample_rng(3, 0, key, "mixed").random() < ratio for key in subtitles)
    assert drawn == seeded
    if ratio == 0.5:
        assert 0 < drawn < len(subtitles)
    else:
        assert drawn == ratio * len(subtitles)


@pytest.fixture(scope="module")
def caption_row_removed(captioned_corpus, tmp_path_factory):
    """A copy of the captioned corpus whose first sidecar lost one row: (out_dir, removed key)."""
    source, captioner = captioned_corpus
    out_dir = copy_output(source, tmp_path_factory.mktemp("uncaptioned") / "out")
    path = caption_sidecar_path(out_dir, captioner, 0)
    table = pq.read_table(path)
    removed = table.column("key")[0].as_py()
    pq.write_table(table.filter(pa.compute.not_equal(table.column("key"), removed)), path)
    return out_dir, removed


def test_a_clip_without_caption_row_falls_back_to_its_subtitle_flagged_and_counted(
        caption_row_removed, stand_in_clip):
    out_dir, removed = caption_row_removed
    got = batches(data_config(out_dir, mode="eval", text_source="both"), stand_in_clip)
    has_caption = per_key(got, "has_caption")
    assert not has_caption[removed] and sum(map(bool, has_caption.values())) == len(has_caption) - 1
    assert per_key(got, "caption_ids")[removed].tolist() == per_key(got, "subtitle_ids")[removed].tolist()
    assert summed_counts(got) == {"caption_fallback": 1}


def test_missing_caption_skip_drops_the_clip_in_train_mode_and_counts_it(caption_row_removed, stand_in_clip):
    out_dir, removed = caption_row_removed
    cfg = data_config(out_dir, mode="train", text_source="both", missing_caption="skip", batch_size=3)
    got = batches(cfg, stand_in_clip, limit=14)  # 42 clips: the 21 usable ones, twice around
    keys = [k for b in got for k in b.keys]
    assert removed not in keys and len(set(keys)) == len(manifest_subtitles(out_dir)) - 1
    counts = summed_counts(got)  # counted when read: twice, or 3 times if read ahead into round 3
    assert set(counts) == {"missing_caption"} and counts["missing_caption"] >= 2
    assert all(bool(b.has_caption.all()) for b in got)


def test_annotation_draws_one_reference_sentence_per_clip_reproducibly(captioned_corpus, stand_in_clip,
                                                                        tokenizer, tmp_path):
    """A retrieval-set shard: the clip json carries `captions`; eval also hands them all out."""
    out_dir, _ = captioned_corpus
    retrieval = tmp_path / "retrieval.tar"
    references = {}
    with wds.TarWriter(str(retrieval)) as writer:
        for sample in wds.WebDataset(str(out_dir / "shards" / "000000.tar"), shardshuffle=False):
            meta = json.loads(sample["json"])
            references[sample["__key__"]] = meta["captions"] = [f"{meta['subtitle']} number {i}" for i in range(4)]
            writer.write({"__key__": sample["__key__"], "mp4": sample["mp4"], "json": json.dumps(meta).encode()})

    runs = [batches(data_config(str(retrieval), captioner_id=None, mode="eval", text_source="annotation"),
                    stand_in_clip, seed=5) for _ in range(2)]
    assert per_key(runs[0], "captions") == references
    first, second = (per_key(run, "text_ids") for run in runs)
    assert sorted(first) == sorted(references)
    assert {k: v.tolist() for k, v in first.items()} == {k: v.tolist() for k, v in second.items()}
    picks = set()
    for key, ids in first.items():
        pick = int(sample_rng(5, 0, key, "annotation").integers(4))
        assert ids.tolist() == _ids(tokenizer, references[key][pick])
        picks.add(pick)
    assert len(picks) > 1
    assert not any(per_key(runs[0], "text_is_caption").values())

    # eval reads every clip once: a clip without reference sentences still comes (a candidate
    # video with "" as text and [] as captions), counted
    without = str(out_dir / "shards" / "000001.tar")
    got = batches(data_config(f"{retrieval},{without}", captioner_id=None, mode="eval",
                              text_source="annotation"), stand_in_clip)
    captions = per_key(got, "captions")
    assert len(captions) == len(manifest_subtitles(out_dir))
    assert summed_counts(got) == {"missing_text": len(captions) - len(references)}
    assert all(captions[key] == [] for key in set(captions) - set(references))


def test_a_40_mb_subtitle_is_skipped_unread_and_a_long_one_is_cut_before_the_tokenizer(
        captioned_corpus, stand_in_clip, tokenizer, tmp_path):
    """Issue 15.6: a 40 MB subtitle took 54 s and 4.7 GB to tokenise at max_text_length 32."""
    from train.data import make_train_loader
    from train.data.text import text_char_budget
    from vipstream.schema import MAX_META_JSON_BYTES

    out_dir, _ = captioned_corpus
    samples = list(wds.WebDataset(str(out_dir / "shards" / "000000.tar"), shardshuffle=False))[:3]
    metas = [json.loads(s["json"]) for s in samples]
    words = metas[1]["subtitle"] + " "
    metas[0]["subtitle"] = (words * (40 * 1024 ** 2 // len(words) + 1))[:40 * 1024 ** 2]  # the 40 MB
    metas[1]["subtitle"] = (words * (600 * 1024 // len(words) + 1)).strip()  # 600 KB: under the json bound
    shard = tmp_path / "long.tar"
    with wds.TarWriter(str(shard)) as writer:
        for sample, meta in zip(samples, metas):
            writer.write({"__key__": sample["__key__"], "mp4": sample["mp4"], "json": json.dumps(meta).encode()})
    assert len(json.dumps(metas[0])) > MAX_META_JSON_BYTES > len(json.dumps(metas[1]))

    cfg = data_config(str(shard), captioner_id=None, mode="eval", text_source="subtitle", num_workers=0,
                      max_text_length=32)
    loader = make_train_loader(cfg, str(stand_in_clip))
    real, seen = loader.dataloader.dataset.tokenizer, []

    def recording(texts, **kwargs):  # the real tokenizer, noting the longest text it is handed
        seen.extend(len(t) for t in texts)
        return real(texts, **kwargs)

    loader.dataloader.dataset.tokenizer = recording
    got = list(loader)
    keys = [k for b in got for k in b.keys]
    assert keys == [s["__key__"] for s in samples[1:]]  # the 40 MB one skipped, the others kept in order
    assert summed_counts(got) == {"oversized_json": 1}
    assert seen and max(seen) <= text_char_budget(32) < 1000  # the tokenizer never saw more than the budget
    ids = per_key(got, "subtitle_ids")
    # cutting at the budget changed nothing: the same 32 tokens as the whole 600 KB text gives
    assert ids[samples[1]["__key__"]].tolist() == _ids(tokenizer, metas[1]["subtitle"], max_length=32)
    assert ids[samples[2]["__key__"]].tolist() == _ids(tokenizer, metas[2]["subtitle"], max_length=32)
