"""pipeline/fetch/job.py: the real job (real yt-dlp, real Ray, a real HTTP server on 127.0.0.1) over
every misbehaviour at once; the status table, the files left, resumption, --retry-failed, and
fetch -> build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.fetch.job import run_fetch
from tests.pipeline.fetch.conftest import EXPECTED, fast_config, register_cases
from vipstream.config import ConfigError

pytestmark = pytest.mark.slow  # one real job over every case (~15-30 s), shared by the module

#: The page's clip spans, HD-VILA style (hh:mm:ss.mmm), handed on to build through manifest.jsonl.
PAGE_CLIPS = [{"clip_id": "page.0.mp4", "span": ["00:00:00.000", "00:00:01.500"]},
              {"clip_id": "page.1.mp4", "span": ["00:00:01.500", "00:00:03.000"]}]


def _write_input(folder: Path, urls: dict[str, str]) -> Path:
    path = folder / "hdvila_part0.jsonl"
    with open(path, "w") as handle:
        for case, url in urls.items():
            record = {"video_id": case, "url": url, "clip": PAGE_CLIPS if case == "page" else []}
            handle.write(json.dumps(record) + "\n")
        handle.write("{not json\n")
    return path


def _status(out_dir: Path) -> dict[str, dict]:
    return {r["video_id"]: r for r in pq.read_table(out_dir / "status.parquet").to_pylist()}


@pytest.fixture(scope="module")
def fetched(fetch_server, fetch_media, ray_local, tmp_path_factory):
    """One run of the job over every case: (out_dir, input, urls, summary)."""
    folder = tmp_path_factory.mktemp("fetch_job")
    urls = register_cases(fetch_server, fetch_media, "job")
    input_path = _write_input(folder, urls)
    out_dir = folder / "VIDEOS"
    summary = run_fetch(input_path, out_dir, fast_config(folder), progress=False)
    return out_dir, input_path, urls, summary


def test_every_case_gets_its_status_reason_and_http_status(fetched):
    out_dir, _, _, summary = fetched
    rows = _status(out_dir)
    assert {k: r["status"] for k, r in rows.items()} == EXPECTED
    assert rows["r429_once"]["attempts"] == 2 and rows["direct"]["attempts"] == 1
    assert rows["r429_twice"]["http_status"] == 429 and rows["r429_twice"]["attempts"] == 2
    assert rows["r403"]["http_status"] == 403 and rows["r403"]["attempts"] == 1  # not retried at once
    assert rows["r404"]["http_status"] == 404 and rows["r500"]["http_status"] == 500
    assert rows["r500"]["attempts"] == 2  # a 5xx backs off and retries
    assert "file:" in rows["to_file"]["reason"] and "not http(s)" in rows["to_file"]["reason"]
    assert "max_filesize" in rows["big"]["reason"] and "max_filesize" in rows["big_no_length"]["reason"]
    assert "timed out" in rows["stall"]["reason"]
    assert "not a readable video" in rows["garbage"]["reason"]
    for case, row in rows.items():
        assert (row["reason"] == "") == (row["status"] == "ok"), case
        assert row["retryable"] == (row["status"] in ("blocked", "timeout", "transient")), case
    assert summary["by_status"]["ok"] == 4 and summary["input_errors"] == 1
    errors = pq.read_table(out_dir / "errors.parquet").to_pylist()
    assert [(e["stage"], e["line"]) for e in errors] == [("input", len(EXPECTED) + 1)]


def test_subtitles_are_fetched_as_webvtt_and_a_subtitle_failure_keeps_the_video(fetched):
    out_dir, _, _, _ = fetched
    rows = _status(out_dir)
    assert rows["page"]["subtitle_status"] == "ok" and rows["page"]["subtitle_langs"] == ["en"]
    assert (out_dir / "page.en.vtt").read_text().startswith("WEBVTT")
    failed = rows["page_subtitle_404"]
    assert failed["status"] == "ok" and failed["subtitle_status"] == "failed" and "404" in failed["subtitle_reason"]
    assert (out_dir / "page_subtitle_404.mp4").is_file() and not (out_dir / "page_subtitle_404.en.vtt").exists()
    assert rows["direct"]["subtitle_status"] == "none"


def test_nothing_partial_remains_and_every_published_video_is_whole(fetched, fetch_media):
    out_dir, _, _, _ = fetched
    names = sorted(p.name for p in out_dir.iterdir())
    videos = [n for n in names if n.endswith(".mp4")]
    assert videos == sorted(f"{k}.mp4" for k, v in EXPECTED.items() if v == "ok")
    assert [n for n in names if n.endswith(".vtt")] == ["page.en.vtt"]
    leftovers = [p for p in out_dir.rglob("*") if p.suffix in (".part", ".ytdl", ".tmp") or ".part-" in p.name
                 or p.name.startswith(".") and p.name.endswith(".tmp")]
    assert leftovers == []
    assert list((out_dir / ".fetch" / "tmp").iterdir()) == []
    for name in videos:  # byte for byte what the server holds
        assert (out_dir / name).read_bytes() == fetch_media.small, name


def test_manifest_is_read_by_build_as_is_with_paths_subtitles_and_clips(fetched):
    from pipeline.builder.manifest import read_manifest

    out_dir, _, _, _ = fetched
    rows = [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]
    assert [r["video_id"] for r in rows] == ["direct", "page", "page_subtitle_404", "r429_once"]
    page = rows[1]
    assert page["path"] == "page.mp4" and page["subtitles"] == "page.en.vtt" and page["clips"] == PAGE_CLIPS
    assert page["title"].startswith("a test page") and page["duration"] == pytest.approx(3.0, abs=0.2)
    listing = read_manifest(out_dir / "manifest.jsonl")
    assert listing.errors == []
    entry = {e.video_id: e for e in listing.entries}["page"]
    assert entry.path == str(out_dir / "page.mp4") and entry.subtitles == str(out_dir / "page.en.vtt")
    assert [(c.clip_id, c.start, c.end) for c in entry.clips] == [(c["clip_id"], *c["span"]) for c in PAGE_CLIPS]


def test_fetch_then_build_gives_the_clips_of_the_given_spans(fetched, ray_local, tmp_path):
    from pipeline.builder.config import PipelineConfig
    from pipeline.builder.jobs import run_build

    out_dir, _, _, _ = fetched
    summary = run_build(out_dir / "manifest.jsonl", tmp_path / "OUT",
                        PipelineConfig(videos_per_shard=2, short_side_px=64), progress=False)
    clips = pq.read_table(tmp_path / "OUT" / "manifest.parquet").to_pylist()
    assert [(c["key"], c["clip_id"], c["start_s"], c["end_s"]) for c in clips] == [
        ("page_0000", "page.0.mp4", 0.0, 1.5), ("page_0001", "page.1.mp4", 1.5, 3.0)]
    assert clips[0]["subtitle"] == "a red square moves to the left"
    assert summary["clips"] == 2


def test_a_rerun_requests_nothing_and_keeps_the_tables(fetched, fetch_server, tmp_path):
    out_dir, input_path, _, _ = fetched
    copy = tmp_path / "VIDEOS"
    shutil.copytree(out_dir, copy)
    before = dict(fetch_server.counts)
    summary = run_fetch(input_path, copy, fast_config(tmp_path), progress=False)
    assert {k: v for k, v in fetch_server.counts.items() if k.startswith("/job/")} == \
        {k: v for k, v in before.items() if k.startswith("/job/")}
    assert summary["fetched_this_run"] == 0 and summary["skipped_as_done"] == 4
    assert summary["skipped_as_failed_before"] == len(EXPECTED) - 4
    assert _status(copy) == _status(out_dir)
    assert len(list((copy / ".fetch" / "logs").glob("*.jsonl"))) == 1  # compacted


def test_retry_failed_fetches_the_429_case_and_leaves_the_permanent_failures_alone(fetched, fetch_server, tmp_path):
    out_dir, input_path, _, _ = fetched
    copy = tmp_path / "VIDEOS"
    shutil.copytree(out_dir, copy)
    before = dict(fetch_server.counts)
    summary = run_fetch(input_path, copy, fast_config(tmp_path), retry_failed=True,
                        progress=False)
    rows = _status(copy)
    assert rows["r429_twice"]["status"] == "ok" and rows["r429_twice"]["attempts"] == 3
    assert (copy / "r429_twice.mp4").read_bytes() == (out_dir / "direct.mp4").read_bytes()
    for case in ("r404", "html", "garbage", "big", "big_no_length", "to_file"):  # permanent: not requested again
        assert fetch_server.counts[f"/job/{case}.mp4"] == before[f"/job/{case}.mp4"], case
        assert rows[case] == _status(out_dir)[case]
    assert rows["r403"]["status"] == "blocked" and rows["r403"]["attempts"] == 2  # retryable, still refused
    assert fetch_server.counts["/job/r429_twice.mp4"] > before["/job/r429_twice.mp4"]
    assert summary["fetched_this_run"] == 4  # r429_twice, r403, r500, stall
    manifest = [json.loads(line)["video_id"] for line in (copy / "manifest.jsonl").read_text().splitlines()]
    assert manifest == ["direct", "page", "page_subtitle_404", "r429_once", "r429_twice"]


def test_a_published_video_cut_short_after_the_fact_is_fetched_again(fetched, fetch_server, tmp_path):
    out_dir, input_path, _, _ = fetched
    copy = tmp_path / "VIDEOS"
    shutil.copytree(out_dir, copy)
    whole = (copy / "direct.mp4").read_bytes()
    (copy / "direct.mp4").write_bytes(whole[: len(whole) // 2])  # what a power cut can leave of a renamed file
    before = fetch_server.counts["/job/direct.mp4"]
    summary = run_fetch(input_path, copy, fast_config(tmp_path), progress=False)
    assert summary["fetched_this_run"] == 1 and fetch_server.counts["/job/direct.mp4"] > before
    assert (copy / "direct.mp4").read_bytes() == whole and _status(copy)["direct"]["attempts"] == 2


def test_a_resume_with_other_content_settings_is_refused(fetched, tmp_path):
    out_dir, input_path, _, _ = fetched
    copy = tmp_path / "VIDEOS"
    shutil.copytree(out_dir, copy)
    with pytest.raises(ConfigError, match="max_height"):
        run_fetch(input_path, copy, fast_config(tmp_path, max_height=360), progress=False)
