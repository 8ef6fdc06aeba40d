"""pipeline/fetch/task.py, one group in this process (real yt-dlp, real ffprobe, real server, no
Ray): the finish of a video (its ffprobe, publication and log line) overlaps the next video's
download, and rows still come out in input order, each logged once."""

from __future__ import annotations

from pipeline.fetch.inputs import FetchEntry
from pipeline.fetch.state import FetchLayout, read_log
from pipeline.fetch.task import fetch_group
from tests.pipeline.fetch.conftest import fast_config


def test_the_next_download_starts_before_the_previous_video_is_probed_and_published(fetch_server, fetch_media,
                                                                                      tmp_path):
    names = [f"overlap{i}" for i in range(4)]
    urls = [fetch_server.add(f"/task/{name}.mp4", body=fetch_media.small) for name in names]
    layout = FetchLayout(tmp_path / "VIDEOS")
    layout.prepare()
    entries = [FetchEntry(name, url, line=i + 1).as_dict() for i, (name, url) in enumerate(zip(names, urls))]

    rows = list(fetch_group(entries, fast_config(tmp_path), str(layout.out_dir), "g0", {}))

    assert [row["video_id"] for row in rows] == names and {row["status"] for row in rows} == {"ok"}, rows
    # In line, a video's row is made (after its ffprobe and publication) before the next video is
    # requested, every time. Overlapped, the next request goes out while the ~50 ms ffprobe runs.
    requested = [fetch_server.first_request_at[f"/task/{name}.mp4"] for name in names]
    overlapped = [requested[k + 1] < rows[k]["finished_at"] for k in range(len(names) - 1)]
    assert any(overlapped), (requested, [row["finished_at"] for row in rows])
    logged = read_log(layout.logs / "g0.jsonl")
    assert sorted(row["video_id"] for row in logged) == names  # each once, by the finisher
    assert all(layout.video(name).read_bytes() == fetch_media.small for name in names)
    assert list(layout.tmp.iterdir()) == []


def test_a_failure_of_our_own_in_the_finisher_is_that_videos_error_row_and_the_group_goes_on(
        fetch_server, fetch_media, tmp_path):
    names = ["blocked_target", "fine"]
    urls = [fetch_server.add(f"/task/{name}.mp4", body=fetch_media.small) for name in names]
    layout = FetchLayout(tmp_path / "VIDEOS")
    layout.prepare()
    layout.video("blocked_target").mkdir()  # the mp4 cannot be renamed onto a folder
    entries = [FetchEntry(name, url, line=i + 1).as_dict() for i, (name, url) in enumerate(zip(names, urls))]

    rows = list(fetch_group(entries, fast_config(tmp_path), str(layout.out_dir), "g0", {}))

    assert [row["status"] for row in rows] == ["error", "ok"], rows
    assert rows[0]["reason"].startswith("internal: IsADirectoryError") and rows[0]["retryable"] is False
    assert set(rows[0]) == set(rows[1]) - {"video_bytes"}  # every status has every column of status.parquet
    assert sorted(row["video_id"] for row in read_log(layout.logs / "g0.jsonl")) == names
    assert list(layout.tmp.iterdir()) == []
