"""pipeline/fetch/inputs.py and urls.py: the four input forms, sanitised ids, duplicates, and the
http(s)-only rule applied before any request."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.fetch.inputs import read_fetch_input
from pipeline.fetch.urls import BadUrl, check_http_url, url_host, video_id_from_url, youtube_id

HDVILA_LINE = {"video_id": "--33Lscn6sk", "url": "https://www.youtube.com/watch?v=--33Lscn6sk",
               "clip": [{"clip_id": "--33Lscn6sk.1.mp4", "span": ["00:00:04.004", "00:00:10.010"]},
                        {"clip_id": "--33Lscn6sk.2.mp4", "span": ["00:00:10.010", "00:00:17.017"]}]}


def test_hdvila_meta_jsonl_is_read_as_is_with_its_clip_spans(tmp_path):
    path = tmp_path / "hdvila_part0.jsonl"
    path.write_text(json.dumps(HDVILA_LINE) + "\n\n" + "not json\n")
    listing = read_fetch_input(path)
    assert listing.form == "jsonl" and len(listing.entries) == 1
    entry = listing.entries[0]
    assert (entry.video_id, entry.url, entry.line) == ("--33Lscn6sk", HDVILA_LINE["url"], 1)
    assert entry.clips == HDVILA_LINE["clip"]
    assert [(e.stage, e.line) for e in listing.errors] == [("input", 3)]


def test_a_manifest_with_url_a_csv_and_a_parquet_are_read(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"video_id": "a", "url": "https://e.org/a.mp4",
                                    "clips": [{"clip_id": "a.0", "span": [1.0, 5.5]}]}) + "\n")
    assert read_fetch_input(manifest).entries[0].clips == [{"clip_id": "a.0", "span": [1.0, 5.5]}]
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("video_id,url\nx1,https://e.org/1.mp4\n,https://youtu.be/dQw4w9WgXcQ\n")
    entries = read_fetch_input(csv_path).entries
    assert [(e.video_id, e.url) for e in entries] == [("x1", "https://e.org/1.mp4"),
                                                      ("dQw4w9WgXcQ", "https://youtu.be/dQw4w9WgXcQ")]
    parquet_path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"video_id": ["p1"], "url": ["http://e.org/p1"]}), parquet_path)
    assert read_fetch_input(parquet_path).entries[0].video_id == "p1"
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("id,link\n1,https://e.org\n")
    with pytest.raises(ValueError, match="'url' column"):
        read_fetch_input(bad_csv)


def test_a_plain_url_list_derives_sanitised_unique_ids(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text("# a comment\nhttps://www.youtube.com/watch?v=dQw4w9WgXcQ&t=3\nhttps://a.org/x/clip.mp4\n"
                    "https://b.org/y/clip.mp4\nhttps://a.org/x/clip.mp4\nftp://c.org/z.mp4\n"
                    "https://d.org/../../etc/passwd%00.mp4\n")
    listing = read_fetch_input(path)
    ids = [e.video_id for e in listing.entries]
    assert ids[:2] == ["dQw4w9WgXcQ", "clip"] and ids[2].startswith("clip_") and ids[2] != "clip"
    assert all(set(i) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") for i in ids)
    assert [(e.stage, e.line) for e in listing.errors] == [("input", 5)]  # the same URL twice
    ftp = listing.entries[3]
    assert ftp.url_error and "scheme 'ftp'" in ftp.url_error


def test_ids_from_input_text_are_sanitised_and_duplicates_after_sanitising_are_errors(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"video_id": "../../etc/evil id", "url": "https://e.org/1"},
        {"video_id": "../../etc/evil_id", "url": "https://e.org/2"},
        {"video_id": "ok", "url": "file:///etc/passwd"},
        {"video_id": "no-url"},
    ]) + "\n")
    listing = read_fetch_input(path)
    assert [e.video_id for e in listing.entries] == ["etc_evil_id", "ok"]
    assert listing.entries[1].url_error and "only http(s)" in listing.entries[1].url_error
    assert [(e.line, e.reason.split()[0]) for e in listing.errors] == [(2, "duplicate"), (4, "missing")]


def test_only_absolute_http_urls_with_a_host_pass():
    assert check_http_url(" https://www.youtube.com/watch?v=x ") == "https://www.youtube.com/watch?v=x"
    for bad in ("file:///etc/passwd", "ytsearch:cats", "dQw4w9WgXcQ", "https://", "javascript:alert(1)",
                "http://a.org/x y", "ftp://a.org/x", None, ""):
        with pytest.raises(BadUrl):
            check_http_url(bad)
    assert url_host("https://WWW.YouTube.com:8443/x") == "www.youtube.com:8443"
    assert youtube_id("https://www.youtube.com/shorts/dQw4w9WgXcQ") == "dQw4w9WgXcQ"
    assert youtube_id("https://m.youtube.com/watch?v=short") is None
    assert video_id_from_url("https://e.org/") != "" and video_id_from_url("https://e.org/a b.mp4") == "a_b"
