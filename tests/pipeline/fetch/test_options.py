"""pipeline/fetch/options.py: the options handed to yt-dlp, checked through yt-dlp's own format and
subtitle selection (YoutubeDL.process_ie_result on a YouTube-like info dict, offline: real
YouTube cannot be reached from the test machines), and for what no config can reach."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yt_dlp

from pipeline.fetch.classify import classify
from pipeline.fetch.config import FetchConfig
from pipeline.fetch.options import ALLOWED_POSTPROCESSORS, format_selector, subtitle_options, video_options


def _format(format_id, ext, height=None, vcodec="none", acodec="none", tbr=None):
    return {"format_id": format_id, "ext": ext, "height": height, "width": height and height * 16 // 9,
            "vcodec": vcodec, "acodec": acodec, "tbr": tbr, "protocol": "https",
            "url": f"https://rr1---sn.googlevideo.com/videoplayback?itag={format_id}"}


#: A YouTube-like format list: muxed 360p mp4, video-only mp4 / webm up to 1080p, m4a and opus audio.
YOUTUBE_FORMATS = [
    _format("18", "mp4", 360, "avc1.42001E", "mp4a.40.2", 600),
    _format("135", "mp4", 480, "avc1.4d401e", tbr=1000),
    _format("136", "mp4", 720, "avc1.4d401f", tbr=2200),
    _format("247", "webm", 720, "vp9", tbr=2000),
    _format("137", "mp4", 1080, "avc1.640028", tbr=4300),
    _format("248", "webm", 1080, "vp9", tbr=4000),
    _format("140", "m4a", acodec="mp4a.40.2", tbr=129),
    _format("251", "webm", acodec="opus", tbr=150),
]


def _info(formats=YOUTUBE_FORMATS, subtitles=None, automatic_captions=None):
    return {"id": "dQw4w9WgXcQ", "title": "a video", "duration": 212, "formats": [dict(f) for f in formats],
            "subtitles": subtitles or {}, "automatic_captions": automatic_captions or {},
            "webpage_url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ", "extractor": "youtube",
            "extractor_key": "Youtube"}


def _selected(cfg: FetchConfig, info: dict, tmp_path, subtitles: bool = False) -> dict:
    build = subtitle_options if subtitles else (lambda *a, **k: video_options(*a, progress_hook=lambda d: None, **k))
    options = build(cfg, tmp_path, logger=_Quiet())
    with yt_dlp.YoutubeDL(options) as ydl:
        return ydl.process_ie_result(info, download=False)


class _Quiet:
    def debug(self, msg): pass
    info = warning = error = debug


@pytest.mark.parametrize("max_height, expected", [(720, "136+140"), (1080, "137+140"), (480, "135+140"),
                                                  (360, "18")])  # muxed: its own audio
def test_format_is_the_best_mp4_at_most_max_height_with_m4a_audio_merged(max_height, expected, tmp_path):
    processed = _selected(FetchConfig(max_height=max_height), _info(), tmp_path)
    assert processed["format_id"] == expected
    assert processed["ext"] == "mp4"  # merge_output_format


def test_without_m4a_the_height_wins_over_the_container_and_the_result_is_mp4(tmp_path):
    formats = [f for f in YOUTUBE_FORMATS if f["format_id"] not in ("140", "136", "135")]
    processed = _selected(FetchConfig(max_height=720), _info(formats), tmp_path)
    assert processed["format_id"] == "247+251" and processed["ext"] == "mp4"


def test_a_single_file_of_unknown_height_is_taken(tmp_path):
    direct = [{"format_id": "0", "ext": "mp4", "url": "https://example.org/v.mp4", "protocol": "https"}]
    processed = _selected(FetchConfig(), _info(direct), tmp_path)
    assert processed["format_id"] == "0"


def test_no_format_within_max_height_is_an_error_not_a_bigger_video(tmp_path):
    formats = [f for f in YOUTUBE_FORMATS if (f["height"] or 0) >= 720 or f["vcodec"] == "none"]
    with pytest.raises(yt_dlp.utils.YoutubeDLError, match="Requested format is not available") as raised:
        _selected(FetchConfig(max_height=480), _info(formats), tmp_path)
    assert classify(str(raised.value)).status == "unavailable"


def test_automatic_captions_are_taken_as_webvtt_when_no_uploaded_subtitles_exist(tmp_path):
    auto = {lang: [{"ext": ext, "url": f"https://www.youtube.com/api/timedtext?lang={lang}&fmt={ext}"}
                   for ext in ("json3", "srv1", "srv3", "ttml", "vtt")] for lang in ("en", "fr", "de")}
    uploaded = {"de": [{"ext": "vtt", "url": "https://www.youtube.com/api/timedtext?lang=de&kind=uploaded"}]}
    processed = _selected(FetchConfig(subtitles=("en", "de")), _info(subtitles=uploaded, automatic_captions=auto),
                          tmp_path, subtitles=True)
    requested = processed["requested_subtitles"]
    assert sorted(requested) == ["de", "en"]
    assert requested["en"]["ext"] == "vtt" and "lang=en&fmt=vtt" in requested["en"]["url"]
    assert "kind=uploaded" in requested["de"]["url"]  # the uploaded subtitles win over the ASR ones
    without_auto = _selected(FetchConfig(subtitles=("en", "de"), auto_subtitles=False),
                             _info(subtitles=uploaded, automatic_captions=auto), tmp_path, subtitles=True)
    assert sorted(without_auto["requested_subtitles"]) == ["de"]


def _all_keys(value, found=None):
    found = set() if found is None else found
    if isinstance(value, dict):
        for key, item in value.items():
            found.add(key)
            _all_keys(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _all_keys(item, found)
    return found


def test_no_exec_hook_external_program_file_url_or_extra_output_is_reachable(tmp_path):
    hook = lambda d: None  # noqa: E731
    for cfg in (FetchConfig(), FetchConfig(max_height=144, subtitles=(), auto_subtitles=False, max_filesize="0",
                                           proxy="socks5://127.0.0.1:1080", cookies="/x/cookies.txt")):
        for options in (video_options(cfg, tmp_path, logger=_Quiet(), progress_hook=hook),
                        subtitle_options(cfg, tmp_path, logger=_Quiet())):
            assert {pp["key"] for pp in options["postprocessors"]} <= ALLOWED_POSTPROCESSORS
            assert not _all_keys(options) & {"exec_cmd", "Exec", "postprocessor_args", "external_downloader_args",
                                              "postprocessor_hooks", "load_info_filename", "paths",
                                              "download_archive", "batchfile", "ffmpeg_location", "plugin_dirs"}
            assert options["js_runtimes"] == {cfg.js_runtime: {}}
            assert options["enable_file_urls"] is False and options["external_downloader"] == {"default": "native"}
            assert options["writethumbnail"] is False and options["getcomments"] is False
            assert options["writeinfojson"] is False and options["writedescription"] is False
            assert options["outtmpl"]["default"] == str(tmp_path / "%(vipstream_folder)s/%(vipstream_id)s.%(ext)s")
            assert options.get("progress_hooks", [hook]) == [hook]
    # The config has no free-form field through which yt-dlp options could be passed.
    for f in dataclasses.fields(FetchConfig):
        assert typing.get_origin(f.type) is not dict and "dict" not in str(f.type), f.name
    assert format_selector(720).count("height<=?720") == 3
