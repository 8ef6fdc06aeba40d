"""`vipstream build --subtitle-db` end to end on a real small corpus with given spans (the
`spans_build` fixture: a reference-layout LMDB lacking one key), and pipeline/builder/subtitle_db.py
on the other DB forms."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow.parquet as pq

from pipeline.builder.manifest import read_manifest
from pipeline.builder.subtitle_db import MAX_SUBTITLE_DB_CHARS, NO_SPANS_REASON, read_subtitle_db
from tests.text_imports import write_lmdb
from vipstream.cli import main
from vipstream.schema import ERRORS_FILENAME, MANIFEST_FILENAME, SUMMARY_FILENAME, shard_tar_path


def _clip_json(out_dir, shard: int) -> dict[str, dict]:
    """clip_id -> the json member of each sample of a shard."""
    with tarfile.open(shard_tar_path(out_dir, shard)) as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    return {m["clip_id"]: m for m in metas}


def test_clips_take_their_text_from_the_db_by_clip_id_not_from_subtitle_files(spans_build):
    out_dir, corpus, texts = spans_build
    manifest = {r["clip_id"]: r for r in pq.read_table(out_dir / MANIFEST_FILENAME).to_pylist()}
    assert sorted(manifest) == ["Bx2y3z4w5v6.1.mp4", "QMi8x8o55Ns.1.mp4", "QMi8x8o55Ns.2.mp4",
                                "QMi8x8o55Ns.4.mp4"]
    metas = _clip_json(out_dir, 0)
    for clip_id in ("QMi8x8o55Ns.1.mp4", "QMi8x8o55Ns.2.mp4", "Bx2y3z4w5v6.1.mp4"):
        expected = texts[clip_id].decode("utf-8")
        assert manifest[clip_id]["subtitle"] == expected and metas[clip_id]["subtitle"] == expected
    # QMi8x8o55Ns has a VTT beside it ("words from the vtt file"): with --subtitle-db it is not read
    assert not any("vtt" in r["subtitle"] for r in manifest.values())
    # the over-long text is cut to the bound (and counted), never kept whole
    long_text = manifest["QMi8x8o55Ns.4.mp4"]["subtitle"]
    assert 0 < len(long_text) <= MAX_SUBTITLE_DB_CHARS and long_text.startswith("long long")
    assert metas["QMi8x8o55Ns.2.mp4"]["span"] == [2.0, 5.0]


def test_a_clip_without_a_usable_text_is_an_error_row_and_the_job_goes_on(spans_build):
    out_dir, corpus, _ = spans_build
    errors = pq.read_table(out_dir / ERRORS_FILENAME).to_pylist()
    by_clip = {e["clip_id"]: e for e in errors if e["clip_id"]}
    missing = by_clip["Bx2y3z4w5v6.2.mp4"]
    assert missing["stage"] == "subtitles" and missing["video_id"] == "Bx2y3z4w5v6"
    assert missing["reason"] == "no text for this clip_id in the subtitle DB"
    invalid = by_clip["QMi8x8o55Ns.3.mp4"]
    assert invalid["stage"] == "subtitles" and "not valid UTF-8: byte 0xff at offset 3" in invalid["reason"]
    [no_spans] = [e for e in errors if e["video_id"] == corpus.no_spans_video]
    assert no_spans["stage"] == "subtitles" and no_spans["reason"] == NO_SPANS_REASON
    assert len(errors) == 3

    summary = json.loads((out_dir / SUMMARY_FILENAME).read_text())
    assert summary["clips"] == 4 and summary["clips_failed"] == 2 and summary["videos_failed"] == 1
    db = summary["subtitle_db"]
    assert db["form"] == "lmdb" and db["keys"] == 7 and db["clips"] == 6
    assert db["keys_matched"] == 5 and db["keys_unmatched"] == 2  # the two ZZextra0001 keys
    assert db["clips_without_text"] == 1 and db["texts_invalid"] == 1 and db["texts_truncated"] == 1
    assert summary["failures_by_reason"]["subtitles: no text for this clip_id in the subtitle DB"] == 1


def test_a_rerun_resumes_but_another_db_or_none_is_refused(spans_build, tmp_path):
    out_dir, corpus, texts = spans_build

    common = ["build", "--input", str(corpus.meta_path), "--video-root", str(corpus.video_root),
              "--output", str(out_dir), "--videos-per-shard", "2", "--short-side-px", "32", "--no-progress"]
    before = (out_dir / MANIFEST_FILENAME).read_bytes()
    db = json.loads((out_dir / SUMMARY_FILENAME).read_text())["subtitle_db"]["source"]
    assert main([*common, "--subtitle-db", db]) == 0  # every shard finished: nothing redone
    assert pq.read_table(out_dir / MANIFEST_FILENAME).equals(pq.read_table(io.BytesIO(before)))
    other = write_lmdb(tmp_path / "other_db", {k: v for k, v in texts.items()})
    assert main([*common, "--subtitle-db", str(other)]) == 2  # texts of another DB would mix
    assert main(common) == 2  # and so would the VTT texts


def test_jsonl_and_parquet_dbs_give_the_same_texts_as_the_lmdb(spans_build, tmp_path):
    import pyarrow as pa

    _, corpus, texts = spans_build
    entries = read_manifest(corpus.meta_path, corpus.video_root).entries
    good = {k: v.decode() for k, v in texts.items() if k != "QMi8x8o55Ns.3.mp4"}
    jsonl = tmp_path / "subtitles.jsonl"  # the reference's clip list form: {clip_id, text, ...}
    jsonl.write_text("".join(json.dumps({"clip_id": k, "text": v, "span": [0, 1]}) + "\n" for k, v in good.items()))
    parquet = tmp_path / "subtitles.parquet"
    pq.write_table(pa.table({"clip_id": list(good), "subtitle": list(good.values())}), parquet)
    for path in (jsonl, parquet):
        found = read_subtitle_db(path, entries)
        assert {k: t.text for k, t in found.texts.items()} == {
            k: v[:MAX_SUBTITLE_DB_CHARS].rstrip() for k, v in good.items() if not k.startswith("ZZ")}
        assert found.clips == 6 and found.clips_without_text == 2 and found.summary()["keys_unmatched"] == 2
