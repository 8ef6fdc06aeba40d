"""`vipstream caption --import DB` (pipeline/caption/imports.py): a sidecar from a real LMDB
written in the test in the reference's layout (and from JSON/JSONL/parquet), with missing and
extra keys, on a real small build (`spans_build`); the training loader then joins it."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.caption.captioner import CaptionerConfig, middle_frame
from pipeline.caption.imports import run_caption_import
from pipeline.caption.job import CAPTIONER_FILENAME
from pipeline.caption.sidecars import CAPTION_SCHEMA
from tests.captioning import write_caption_shards
from tests.text_imports import INVALID_UTF8, write_lmdb
from tests.train.loader_support import batches, data_config, per_key, summed_counts
from vipstream.cli import main
from vipstream.output_lock import CAPTION_LOCK_FILENAME, OutputLockedError, output_lock
from vipstream.schema import (ERROR_COLUMNS, ERRORS_FILENAME, SUMMARY_FILENAME, caption_sidecar_path,
                              captions_dir, middle_frame_index, shard_tar_path)
from vipstream.text_bounds import cut_text

ID = "ofa-hdvila"
LONG_CAPTION = "a " * 800 + "long caption"
CAPTIONS = {"QMi8x8o55Ns.1.mp4": "a man is talking to the camera".encode(),
            "QMi8x8o55Ns.2.mp4": LONG_CAPTION.encode(),
            "QMi8x8o55Ns.4.mp4": INVALID_UTF8,
            # Bx2y3z4w5v6.1.mp4 (a built clip): no caption
            "QMi8x8o55Ns.3.mp4": b"a clip the build could not keep",  # no such clip in the shards
            "nope0000000.1.mp4": b"a clip of another corpus"}


def _import(out_dir, db, *extra: str, captioner_id: str = ID) -> int:
    return main(["caption", "--shards", str(out_dir), "--import", str(db), "--captioner-id", captioner_id,
                 "--no-progress", *extra])


def _sidecar(out_dir, shard: int, captioner_id: str = ID) -> list[dict]:
    return pq.read_table(caption_sidecar_path(out_dir, captioner_id, shard)).to_pylist()


def _summary(out_dir, captioner_id: str = ID) -> dict:
    return json.loads((captions_dir(out_dir, captioner_id) / SUMMARY_FILENAME).read_text())


@pytest.fixture(scope="module")
def imported(spans_build, tmp_path_factory):
    """A copy of the spans build with the LMDB of CAPTIONS imported under ID: (out_dir, db)."""
    root = tmp_path_factory.mktemp("caption_import")
    out_dir = root / "out"
    shutil.copytree(spans_build[0], out_dir)
    db = write_lmdb(root / "hdvila_ofa_captions_db", CAPTIONS)
    assert _import(out_dir, db) == 0
    return out_dir, db


def _keys_by_clip_id(out_dir) -> dict[str, str]:
    rows = pq.read_table(out_dir / "manifest.parquet", columns=["key", "clip_id"]).to_pylist()
    return {r["clip_id"]: r["key"] for r in rows}


def test_the_import_writes_an_ordinary_sidecar_row_for_each_captioned_clip(imported):
    out_dir, db = imported
    keys = _keys_by_clip_id(out_dir)
    table = pq.read_table(caption_sidecar_path(out_dir, ID, 0))
    assert table.schema.equals(CAPTION_SCHEMA)  # the generated sidecar's schema, column for column
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == [keys["QMi8x8o55Ns.1.mp4"], keys["QMi8x8o55Ns.2.mp4"]]
    assert rows[0]["caption"] == "a man is talking to the camera" and rows[0]["captioner"] == ID
    assert rows[1]["caption"] == cut_text(" ".join(LONG_CAPTION.split()), 1000)  # max_caption_chars
    assert _sidecar(out_dir, 1) == []  # the shard of the video without spans holds no clip: done, empty
    info = json.loads((captions_dir(out_dir, ID) / CAPTIONER_FILENAME).read_text())
    assert info["model"] == "import:hdvila_ofa_captions_db" and info["import"]["form"] == "lmdb"
    summary = _summary(out_dir)
    assert summary["shards_captioned"] == 2 and summary["captions"] == 2 and summary["errors"] == 2


def test_the_paired_frame_is_the_middle_frame_the_trainer_decodes(imported):
    out_dir, _ = imported
    with tarfile.open(shard_tar_path(out_dir, 0)) as tar:
        clips = {m.name[:-4]: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".mp4")}
    manifest = {r["key"]: r for r in pq.read_table(out_dir / "manifest.parquet").to_pylist()}
    rows = _sidecar(out_dir, 0)
    assert len({r["frame_index"] for r in rows}) == 2  # 6- and 9-frame clips: two middles
    for row in rows:
        _, index, time_s = middle_frame(clips[row["key"]])  # what a captioning run records
        assert row["frame_index"] == index == middle_frame_index(manifest[row["key"]]["num_frames"])
        assert row["frame_time_s"] == pytest.approx(time_s, abs=1e-3)


def test_clips_without_a_usable_caption_are_listed_and_keys_naming_no_clip_counted(imported):
    out_dir, _ = imported
    keys = _keys_by_clip_id(out_dir)
    errors = pq.read_table(captions_dir(out_dir, ID) / ERRORS_FILENAME)
    assert tuple(errors.column_names) == ERROR_COLUMNS
    by_key = {e["clip_id"]: e for e in errors.to_pylist()}
    missing, invalid = by_key[keys["Bx2y3z4w5v6.1.mp4"]], by_key[keys["QMi8x8o55Ns.4.mp4"]]
    assert missing["stage"] == "import" and missing["video_id"] == "Bx2y3z4w5v6"
    assert missing["reason"] == "no caption for clip_id 'Bx2y3z4w5v6.1.mp4' in hdvila_ofa_captions_db"
    assert missing["source"] == f"shards/000000.tar#{keys['Bx2y3z4w5v6.1.mp4']}"
    assert invalid["reason"].endswith("is unusable: not valid UTF-8: byte 0xff at offset 3")
    block = _summary(out_dir)["import"]
    assert block["form"] == "lmdb" and block["keys"] == 5 and block["clips"] == 4
    assert block["keys_matched"] == 3 and block["keys_unmatched"] == 2
    assert block["clips_with_caption"] == 2 and block["clips_without_caption"] == 1
    assert block["captions_invalid"] == 1 and block["captions_truncated"] == 1


def test_the_training_loader_joins_the_imported_sidecar(imported, stand_in_clip):
    from transformers import AutoTokenizer

    out_dir, _ = imported
    keys = _keys_by_clip_id(out_dir)
    got = batches(data_config(out_dir, captioner_id=ID, mode="eval", text_source="both"), stand_in_clip)
    has_caption = per_key(got, "has_caption")
    assert {k: bool(v) for k, v in has_caption.items()} == {
        keys["QMi8x8o55Ns.1.mp4"]: True, keys["QMi8x8o55Ns.2.mp4"]: True,
        keys["QMi8x8o55Ns.4.mp4"]: False, keys["Bx2y3z4w5v6.1.mp4"]: False}
    tokenizer = AutoTokenizer.from_pretrained(stand_in_clip)
    caption_ids = per_key(got, "caption_ids")
    expected = tokenizer("a man is talking to the camera", max_length=70, truncation=True,
                         padding="max_length")["input_ids"]
    assert caption_ids[keys["QMi8x8o55Ns.1.mp4"]].tolist() == expected
    # the two clips without a caption fall back to their subtitle; no middle frame disagrees
    assert summed_counts(got) == {"caption_fallback": 2}


def test_a_rerun_skips_imported_shards_and_a_lost_sidecar_is_redone(imported):
    out_dir, db = imported
    before = {s: caption_sidecar_path(out_dir, ID, s).read_bytes() for s in (0, 1)}
    first = _summary(out_dir)
    assert _import(out_dir, db) == 0
    again = _summary(out_dir)
    assert again["shards_skipped_as_done"] == 2 and again["captions"] == 0
    assert again["import"] == first["import"]  # the import block covers every finished shard
    assert {s: caption_sidecar_path(out_dir, ID, s).read_bytes() for s in (0, 1)} == before
    caption_sidecar_path(out_dir, ID, 0).unlink()  # as if a run had been killed before writing it
    assert _import(out_dir, db) == 0
    assert _summary(out_dir)["shards_captioned"] == 1 and _summary(out_dir)["captions"] == 2
    assert pq.read_table(caption_sidecar_path(out_dir, ID, 0)).drop(["created"]).equals(
        pq.read_table(io.BytesIO(before[0])).drop(["created"]))
    assert len(pq.read_table(captions_dir(out_dir, ID) / ERRORS_FILENAME)) == 2  # not duplicated


def test_another_source_under_the_same_id_is_refused_unless_overwritten_and_the_lock_is_held(
        imported, tmp_path):
    out_dir, db = imported
    other = tmp_path / "captions.json"
    other.write_text(json.dumps([{"image_id": "Bx2y3z4w5v6.1.mp4", "caption": "two circles"}]))
    assert _import(out_dir, other, captioner_id="ofa-json") == 0
    assert _import(out_dir, db, captioner_id="ofa-json") == 2  # two sources would mix under one id
    with output_lock(captions_dir(out_dir, "ofa-json") / CAPTION_LOCK_FILENAME, "another import"):
        with pytest.raises(OutputLockedError, match="another import"):
            run_caption_import(out_dir, db, CaptionerConfig(captioner_id="ofa-json", overwrite=True),
                               progress=False)
    assert _import(out_dir, db, "--overwrite", captioner_id="ofa-json") == 0
    assert [r["caption"] for r in _sidecar(out_dir, 0, "ofa-json")][0] == "a man is talking to the camera"


def test_json_jsonl_and_parquet_imports_on_shards_whose_stats_carry_no_manifest_rows(tmp_path, clip_mp4):
    out_dir = tmp_path / "out"
    keys = write_caption_shards(out_dir, [3, 2], clip=clip_mp4)  # stats rows hold only the key
    clip_ids = {k: f"{k.rsplit('_', 1)[0]}.{int(k.rsplit('_', 1)[1])}.mp4" for k in keys}
    captions = {clip_ids[k]: f"caption {i}" for i, k in enumerate(keys) if i != 1}  # keys[1]: missing
    captions["vid9x9.0.mp4"] = "no such clip"
    json_list = tmp_path / "captions.json"
    json_list.write_text(json.dumps([{"image_id": c, "caption": t} for c, t in captions.items()]))
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text("".join(json.dumps({"clip_id": c, "caption": t}) + "\n" for c, t in captions.items()))
    parquet = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"clip_id": list(captions), "caption": list(captions.values())}), parquet)
    for form, path in (("json", json_list), ("jsonl", jsonl), ("parquet", parquet)):
        assert _import(out_dir, path, captioner_id=form) == 0
        rows = _sidecar(out_dir, 0, form) + _sidecar(out_dir, 1, form)
        assert [(r["key"], r["caption"]) for r in rows] == [(k, f"caption {i}") for i, k in enumerate(keys) if i != 1]
        # the clip json says 6 frames at 3 fps: the middle frame is index 3, at 1.0 s
        assert {(r["frame_index"], r["frame_time_s"]) for r in rows} == {(3, 1.0)}
        [error] = pq.read_table(captions_dir(out_dir, form) / ERRORS_FILENAME).to_pylist()
        assert error["clip_id"] == keys[1] and error["reason"].startswith(f"no caption for clip_id '{clip_ids[keys[1]]}'")
        block = _summary(out_dir, form)["import"]
        assert block["form"] == form and block["keys_unmatched"] == 1 and block["clips_without_caption"] == 1


def test_an_import_whose_keys_match_no_clip_exits_1_showing_what_its_keys_look_like(imported, tmp_path, capsys):
    out_dir, _ = imported
    db = write_lmdb(tmp_path / "keyed_by_video", {"QMi8x8o55Ns": b"a caption per video, not per clip"})
    assert _import(out_dir, db, captioner_id="by-video") == 1
    assert "its keys look like ['QMi8x8o55Ns']" in capsys.readouterr().err


def test_import_needs_a_captioner_id_and_no_captioner(imported, tmp_path):
    out_dir, db = imported
    assert main(["caption", "--shards", str(out_dir), "--import", str(db), "--no-progress"]) == 2
    assert _import(out_dir, db, "--captioner", "some/model", captioner_id="x") == 2
    assert _import(out_dir, tmp_path / "missing_db") == 2
