"""pipeline/text_db.py on real files: an LMDB written with the `lmdb` package in the reference's
layout (folder and single-file), the reference's JSON caption list, JSONL and parquet; untrusted
values (invalid UTF-8, control characters, huge values) and unreadable DBs."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.text_db import ClipText, decode_text, open_text_db
from tests.text_imports import INVALID_UTF8, write_lmdb
from vipstream.config import ConfigError

CAPTION = ("caption",)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lmdb_is_read_in_place_read_only_and_without_its_lock_file(tmp_path):
    db_dir = write_lmdb(tmp_path / "hdvila_ofa_captions_db", {
        "QMi8x8o55Ns.1.mp4": "a man is talking".encode(), "QMi8x8o55Ns.2.mp4": "ünïcode".encode(),
        "QMi8x8o55Ns.3.mp4": INVALID_UTF8, "QMi8x8o55Ns.4.mp4": b"  a\tcat\n\x00on a mat  "})
    (db_dir / "lock.mdb").unlink()  # lock=False: opening must not need (or create) it
    data_sha = _sha(db_dir / "data.mdb")
    with open_text_db(db_dir, CAPTION) as db:
        assert db.form == "lmdb" and db.num_keys == 4 and db.name == "hdvila_ofa_captions_db"
        assert db.lookup("QMi8x8o55Ns.1.mp4", 100) == ClipText("a man is talking")
        assert db.lookup("QMi8x8o55Ns.2.mp4", 100).text == "ünïcode"
        assert db.lookup("QMi8x8o55Ns.3.mp4", 100) == ClipText(None, "not valid UTF-8: byte 0xff at offset 3")
        assert db.lookup("QMi8x8o55Ns.4.mp4", 100).text == "a cat on a mat"
        assert db.lookup("QMi8x8o55Ns.9.mp4", 100) is None
        assert db.lookup("x" * 1000, 100) is None  # longer than any LMDB key: simply absent
        assert db.sample_keys(2) == ["QMi8x8o55Ns.1.mp4", "QMi8x8o55Ns.2.mp4"]
    assert not (db_dir / "lock.mdb").exists() and _sha(db_dir / "data.mdb") == data_sha
    with open_text_db(db_dir / "data.mdb", CAPTION) as single_file:  # the .mdb file itself (subdir=False)
        assert single_file.lookup("QMi8x8o55Ns.1.mp4", 100).text == "a man is talking"


def test_the_references_json_caption_list_keys_on_image_id_and_the_last_duplicate_wins(tmp_path):
    records = [{"image_id": "v1.1.mp4", "caption": "first"}, {"clip_id": "v1.2.mp4", "caption": "second"},
               {"image_id": "v1.1.mp4", "caption": "first, again"},  # the reference's dict keeps the last
               {"image_id": "v1.3.mp4"}, {"caption": "no key"}, "not an object", {"image_id": 7, "caption": "x"},
               {"image_id": "v1.4.mp4", "caption": None}]
    body = json.dumps(records, ensure_ascii=False).encode()
    # a raw invalid byte inside one caption costs that caption only
    body = body[:-1] + b', {"image_id": "v1.5.mp4", "caption": "bad \xff byte"}]'
    for name in ("captions.json", "captions.jsonl"):  # the reference json.load()s a .jsonl list too
        path = tmp_path / name
        path.write_bytes(body)
        with open_text_db(path, CAPTION) as db:
            assert db.form == "json" and db.num_keys == 4 and db.duplicate_keys == 1 and db.invalid_records == 4
            assert db.lookup("v1.1.mp4", 50).text == "first, again" and db.lookup("v1.2.mp4", 50).text == "second"
            assert db.lookup("v1.4.mp4", 50) == ClipText(None, "expected a string, found null")
            assert db.lookup("v1.5.mp4", 50) == ClipText(None, "not valid UTF-8: byte 0xff at character 4")
            assert db.lookup("v1.3.mp4", 50) is None


def test_jsonl_records_one_per_line_with_broken_lines_counted(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_bytes(b'{"clip_id": "a.1.mp4", "caption": "one"}\n\n{"clip_id": "a.2.mp4", "caption": "tw\n'
                     b'{"clip_id": "a.3.mp4", "caption": "caf\xc3\xa9"}\n'
                     b'{"clip_id": "a.4.mp4", "caption": "\xe9t\xe9"}\n')  # latin-1 bytes: not UTF-8
    with open_text_db(path, CAPTION) as db:
        assert db.form == "jsonl" and db.num_keys == 3 and db.invalid_records == 1
        assert db.lookup("a.3.mp4", 50).text == "café"
        assert db.lookup("a.4.mp4", 50).reason == "not valid UTF-8: byte 0xe9 at character 0"


def test_parquet_values_are_decoded_strictly_whatever_the_column_type(tmp_path):
    path = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"clip_id": pa.array([b"a.1.mp4", b"a.2.mp4", b"\xff.mp4", None], pa.binary()),
                             "caption": pa.array([b"plain", INVALID_UTF8, b"x", b"y"], pa.binary())}), path)
    with open_text_db(path, CAPTION) as db:
        assert db.form == "parquet" and db.num_keys == 2 and db.invalid_records == 2
        assert db.lookup("a.1.mp4", 50).text == "plain"
        assert db.lookup("a.2.mp4", 50).reason == "not valid UTF-8: byte 0xff at offset 3"
    strings = tmp_path / "strings.parquet"
    pq.write_table(pa.table({"image_id": ["b.1.mp4"], "caption": ["a dog"], "score": [0.5]}), strings)
    with open_text_db(strings, CAPTION) as db:
        assert db.lookup("b.1.mp4", 50).text == "a dog"
    pq.write_table(pa.table({"clip_id": ["b.1.mp4"], "text": ["a dog"]}), strings)
    with pytest.raises(ConfigError, match=r"expected columns clip_id\|image_id and caption, found \['clip_id', 'text'\]"):
        open_text_db(strings, CAPTION)
    pq.write_table(pa.table({"clip_id": ["b.1.mp4"], "caption": [3]}), strings)
    with pytest.raises(ConfigError, match="column 'caption' must hold strings, found int64"):
        open_text_db(strings, CAPTION)


def test_a_value_is_bounded_cut_and_flagged_and_only_its_prefix_is_decoded():
    assert decode_text(b"a " * 10, 5) == ClipText("a a", truncated=True)  # cut at a word (vipstream.text_bounds)
    assert decode_text("é" * 10, 10) == ClipText("é" * 10)
    # a cut that splits a multi-byte character drops it instead of calling the value invalid
    assert decode_text("é".encode() * 100, 10) == ClipText("é" * 10, truncated=True)
    assert decode_text(b" \t\n\x00 ", 10) == ClipText(None, "empty text")
    assert decode_text(12, 10) == ClipText(None, "expected a string, found int")
    assert decode_text("a\ud800b", 10).reason == "not valid Unicode text: lone surrogate U+D800 at character 1"
    # 100 MB with an invalid byte at the end: only the bounded prefix is decoded, so it is not seen
    huge = b"word " * (20 * 1024 * 1024) + b"\xff"
    assert decode_text(huge, 1000) == ClipText(("word " * 200).strip(), truncated=True)


def test_unreadable_or_unknown_dbs_are_config_errors_naming_the_path(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        open_text_db(tmp_path / "missing_db", CAPTION)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="no data.mdb inside"):
        open_text_db(tmp_path / "folder", CAPTION)
    (tmp_path / "db.zip").write_bytes(b"PK")
    with pytest.raises(ConfigError, match="unzip it"):
        open_text_db(tmp_path / "db.zip", CAPTION)
    (tmp_path / "garbage.mdb").write_bytes(b"x" * 8192)
    with pytest.raises(ConfigError, match="cannot open the LMDB .*garbage.mdb"):
        open_text_db(tmp_path / "garbage.mdb", CAPTION)
    (tmp_path / "bad.json").write_text('[{"image_id": "a", "caption": "b"')
    with pytest.raises(ConfigError, match="bad.json is not a valid JSON list"):
        open_text_db(tmp_path / "bad.json", CAPTION)
