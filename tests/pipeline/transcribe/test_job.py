"""pipeline/transcribe/job.py on a real local Ray with the tiny Whisper: one VTT per video that
needs one, error rows for the ones that cannot have one, a manifest the builder reads, reruns,
refusals. Real ffmpeg media: tones, silence, no audio stream, stereo, 5.1, opus-in-webm,
AAC-in-mp4, undecodable audio, a video with its own subtitles, one longer than a block."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from pipeline.builder.manifest import VideoEntry, read_manifest
from pipeline.builder.subtitles import load_subtitles
from pipeline.transcribe.asr import AsrLoadError
from pipeline.transcribe.config import TranscribeConfig
from pipeline.transcribe.job import run_transcribe_job
from pipeline.transcribe.writer import TranscriptWriter
from tests.conftest import REPO_ROOT
from tests.transcription import make_av, make_undecodable_audio, tiny_config
from vipstream.config import ConfigError
from vipstream.output_lock import TRANSCRIBE_LOCK_FILENAME, OutputLockedError
from vipstream.schema import ERROR_COLUMNS, asr_subtitle_path

#: Videos that get a VTT, and why the others do not.
TRANSCRIBED = {"tone", "stereo", "surround", "opus", "sweep"}
FAILED = {"silence": ("asr", "no speech: the audio is silent"), "mute": ("audio", "no audio stream"),
          "broken": ("audio", "cannot decode the audio stream")}
SWEEP_S = 62.0  # three blocks of 30 s overlapping by 5 s


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("asr_corpus")
    make_av(folder / "tone.mp4", 3.0)
    make_av(folder / "stereo.mkv", 3.0, channels=2)
    make_av(folder / "surround.mp4", 3.0, channels=6)
    make_av(folder / "opus.webm", 3.0)
    make_av(folder / "sweep.mp4", SWEEP_S, audio="aevalsrc=0.2*sin(2*PI*(150+12*t)*t)")
    make_av(folder / "silence.mp4", 3.0, audio="anullsrc")
    make_av(folder / "mute.mp4", 3.0, audio=None)
    make_undecodable_audio(folder / "broken.mkv", 3.0)
    make_av(folder / "subtitled.mp4", 3.0)
    (folder / "subtitled.en.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nMy own words.\n")
    return folder


@pytest.fixture(scope="module")
def first_run(corpus, tiny_whisper, ray_local, tmp_path_factory):
    listing_before = sorted(p.name for p in corpus.iterdir())
    out = tmp_path_factory.mktemp("asr_out") / "asr"
    summary = run_transcribe_job(corpus, out, tiny_config(tiny_whisper), progress=False)
    assert sorted(p.name for p in corpus.iterdir()) == listing_before, "nothing may be written next to the videos"
    return out, summary


def test_every_video_without_subtitles_and_with_sound_gets_a_vtt_the_builder_reads(corpus, first_run):
    out, summary = first_run
    assert {p.stem for p in (out / "subtitles").glob("*.vtt")} == TRANSCRIBED
    for video_id in TRANSCRIBED:
        cues = load_subtitles(asr_subtitle_path(out, video_id))
        assert cues and all(c.text for c in cues)
        duration = SWEEP_S if video_id == "sweep" else 3.0
        assert all(0.0 <= c.start_s <= c.end_s <= duration + 0.05 for c in cues)
        assert [c.start_s for c in cues] == sorted(c.start_s for c in cues)
        assert "Language: en" in asr_subtitle_path(out, video_id).read_text()
    assert summary["videos"] == 9 and summary["videos_to_transcribe"] == 8
    assert summary["videos_with_subtitles_left_alone"] == 1
    assert summary["videos_transcribed"] == 5 and summary["videos_failed"] == 3
    assert summary["languages"] == {"en": 5} and summary["audio_hours"] > SWEEP_S / 3600


def test_a_video_longer_than_a_block_is_stitched_from_all_its_blocks(first_run):
    out, _ = first_run
    cues = load_subtitles(asr_subtitle_path(out, "sweep"))
    # blocks start at 0, 25 and 50 s; each said something, timed in seconds of the video
    assert any(c.start_s < 25.0 for c in cues) and any(25.0 <= c.start_s < 50.0 for c in cues)
    assert any(50.0 <= c.start_s < SWEEP_S for c in cues)


def test_videos_that_cannot_have_subtitles_are_error_rows_with_their_reason(first_run):
    out, summary = first_run
    errors = pq.read_table(out / "errors.parquet")
    assert tuple(errors.column_names) == ERROR_COLUMNS
    rows = {r["video_id"]: r for r in errors.to_pylist()}
    assert set(rows) == set(FAILED)
    for video_id, (stage, words) in FAILED.items():
        assert rows[video_id]["stage"] == stage and words in rows[video_id]["reason"]
        assert rows[video_id]["source"].endswith(video_id + (".mkv" if video_id == "broken" else ".mp4"))
    assert summary["errors_by_stage"] == {"asr": 1, "audio": 2}


def test_the_manifest_is_the_inputs_rows_pointing_at_the_new_subtitles(corpus, first_run):
    out, _ = first_run
    rows = {r["video_id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert len(rows) == 9
    for video_id in TRANSCRIBED:
        assert rows[video_id]["subtitles"] == f"subtitles/{video_id}.vtt"
        assert rows[video_id]["subtitle_source"] == {"kind": "asr", "model": rows[video_id]["subtitle_source"]["model"],
                                                     "revision": None, "language": "en"}
    assert rows["subtitled"]["subtitles"] == str(corpus / "subtitled.en.vtt") and "subtitle_source" not in rows["subtitled"]
    assert rows["silence"]["subtitles"] is None and "no speech" in rows["silence"]["subtitle_source"]["error"]
    listing = read_manifest(out / "manifest.jsonl")  # the builder's reader takes it as is
    assert not listing.errors and {e.video_id for e in listing.entries} == set(rows)
    entries = {e.video_id: e for e in listing.entries}
    assert entries["tone"].subtitles == str(asr_subtitle_path(out, "tone"))
    assert entries["tone"].subtitle_source["model"].endswith("tiny-whisper")
    record = json.loads((out / "asr.json").read_text())
    assert record["model_type"] == "whisper" and record["generation"]["temperatures"] == [0.0]
    assert record["generation"]["no_speech_threshold"] == 0.6 and record["generation"]["language"] == "en"


def test_a_rerun_transcribes_nothing_done_or_failed_and_keeps_every_vtt_byte_for_byte(corpus, first_run,
                                                                                     tiny_whisper):
    out, _ = first_run
    before = {p.name: p.read_bytes() for p in (out / "subtitles").glob("*.vtt")}
    errors_before = pq.read_table(out / "errors.parquet").to_pylist()
    rerun = run_transcribe_job(corpus, out, tiny_config(tiny_whisper), progress=False)
    assert rerun["videos_skipped_as_done"] == 5 and rerun["videos_skipped_as_failed"] == 3
    assert rerun["videos_transcribed"] == 0 and rerun["job_s"] == 0  # no Ray work at all
    assert {p.name: p.read_bytes() for p in (out / "subtitles").glob("*.vtt")} == before
    assert pq.read_table(out / "errors.parquet").to_pylist() == errors_before  # rewritten, not appended
    assert len((out / "failed.jsonl").read_text().splitlines()) == 3


def test_hdvila_meta_and_vipstream_manifests_are_read_as_build_reads_them_spans_kept(corpus, first_run,
                                                                                    tiny_whisper, tmp_path,
                                                                                    monkeypatch):
    out = tmp_path / "asr"
    shutil.copytree(first_run[0], out)  # tone and opus are transcribed already: no model work below
    (out / TRANSCRIBE_LOCK_FILENAME).unlink()
    span = ["00:00:00.500", "00:00:02.500"]
    meta = tmp_path / "hdvila.jsonl"
    meta.write_text(json.dumps({"video_id": "tone", "url": "https://youtu.be/tone",
                                "clip": [{"clip_id": "tone.0.mp4", "span": span}]}) + "\n"
                    + json.dumps({"video_id": "gone", "url": "https://youtu.be/gone", "clip": []}) + "\n"
                    + "{not json\n")
    monkeypatch.chdir(corpus.parent)  # a --video-root typed relative to where the user stands
    summary = run_transcribe_job(meta, out, tiny_config(tiny_whisper), video_root=corpus.name, progress=False)
    assert summary["videos_skipped_as_done"] == 1 and summary["job_s"] == 0
    assert summary["videos_not_found"] == 1 and summary["manifest_errors"] == 1
    [row] = map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
    assert row == {"video_id": "tone", "path": str(corpus / "tone.mp4"), "subtitles": "subtitles/tone.vtt",
                   "subtitle_source": row["subtitle_source"], "clips": [{"clip_id": "tone.0.mp4", "span": span}]}
    errors = {(e["video_id"], e["stage"]) for e in pq.read_table(out / "errors.parquet").to_pylist()}
    assert errors == {("gone", "input"), (None, "manifest")}

    ours = tmp_path / "ours.jsonl"
    ours.write_text(json.dumps({"video_id": "opus", "path": str(corpus / "opus.webm")}) + "\n")
    assert run_transcribe_job(ours, out, tiny_config(tiny_whisper), progress=False)["videos_skipped_as_done"] == 1
    [row] = map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
    assert row["video_id"] == "opus" and row["subtitles"] == "subtitles/opus.vtt"


def test_the_builder_refuses_a_malformed_subtitle_source_in_a_manifest(tmp_path):
    rows = [{"video_id": "a", "path": "a.mp4", "subtitles": "a.vtt", "subtitle_source": "asr"},
            {"video_id": "b", "path": "b.mp4", "subtitle_source": {"kind": "asr", "model": "m"}},
            {"video_id": "c", "path": "c.mp4", "subtitles": None, "subtitle_source": {"kind": "asr", "error": "x"}}]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    listing = read_manifest(path)
    assert [(e.video_id, e.stage) for e in listing.errors] == [("a", "manifest"), ("b", "manifest")]
    assert "must be an object" in listing.errors[0].reason and "'subtitles' is not" in listing.errors[1].reason
    [entry] = listing.entries
    assert entry.video_id == "c" and entry.subtitle_source == {"kind": "asr", "error": "x"}
    # an entry without one serialises as before (build plans of outputs without ASR keep their fingerprint)
    assert "subtitle_source" not in VideoEntry("x", "x.mp4").as_dict()
    assert VideoEntry.from_dict(entry.as_dict()) == entry


def test_which_videos_a_run_takes_on(tmp_path):
    from pipeline.transcribe.job import plan_pending

    (tmp_path / "subtitles").mkdir()
    (tmp_path / "subtitles" / "done.vtt").write_text("WEBVTT\n")
    wanted = [VideoEntry(v, f"{v}.mp4") for v in ("done", "silent", "fetch", "new")]
    failed = {"silent": {"video_id": "silent", "stage": "asr"}, "fetch": {"video_id": "fetch", "stage": "fetch"}}
    pending, kept = plan_pending(wanted, tmp_path, failed, retry_failed=False)
    assert [e.video_id for e in pending] == ["fetch", "new"] and set(kept) == {"silent"}
    pending, kept = plan_pending(wanted, tmp_path, failed, retry_failed=True)
    assert [e.video_id for e in pending] == ["silent", "fetch", "new"] and not kept


def test_all_takes_videos_with_subtitles_and_other_settings_need_overwrite(corpus, tiny_whisper, ray_local,
                                                                          tmp_path):
    subset = tmp_path / "in"
    subset.mkdir()
    for name in ("tone.mp4", "silence.mp4", "subtitled.mp4", "subtitled.en.vtt"):
        (subset / name).symlink_to(corpus / name)
    out = tmp_path / "asr"
    first = run_transcribe_job(subset, out, tiny_config(tiny_whisper, max_new_tokens=8), progress=False)
    assert first["videos_transcribed"] == 1 and first["videos_failed"] == 1
    with pytest.raises(ConfigError, match="--overwrite"):
        run_transcribe_job(subset, out, tiny_config(tiny_whisper, all=True), progress=False)
    redo = run_transcribe_job(subset, out, tiny_config(tiny_whisper, all=True, overwrite=True), progress=False)
    assert redo["videos_to_transcribe"] == 3 and redo["videos_transcribed"] == 2
    assert redo["videos_skipped_as_done"] == 0 and redo["videos_failed_this_run"] == 1  # overwrite forgets failures
    rows = {r["video_id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert rows["subtitled"]["subtitles"] == "subtitles/subtitled.vtt" and rows["subtitled"]["subtitle_source"]
    assert json.loads((out / "asr.json").read_text())["generation"]["max_new_tokens"] == 16


def test_an_unloadable_or_wrong_model_fails_before_any_output(corpus, tiny_blip, tmp_path):
    for model, words in ((tmp_path / "no-such-model", "no such folder"), (tiny_blip, "not a Whisper-family")):
        with pytest.raises(AsrLoadError, match=words):
            run_transcribe_job(corpus, tmp_path / "asr", TranscribeConfig(asr=str(model)), progress=False)
    assert not (tmp_path / "asr").exists()


def test_a_second_run_on_a_locked_output_is_refused_at_once_naming_the_holder(corpus, tiny_whisper, tmp_path):
    out = tmp_path / "asr"
    code = textwrap.dedent(f"""
        import time
        from vipstream.output_lock import output_lock
        with output_lock({str(out / TRANSCRIBE_LOCK_FILENAME)!r}, "vipstream transcribe"):
            print("locked", flush=True)
            time.sleep(600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=f"vipstream transcribe on host .*, pid {holder.pid}"):
            run_transcribe_job(corpus, out, tiny_config(tiny_whisper), progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "asr.json").exists() and not list((out / "subtitles").glob("*"))


def test_blocks_re_emitted_by_a_retried_task_count_once_and_a_video_finishes_only_when_all_are_in(tmp_path,
                                                                                                 tiny_whisper):
    writer = TranscriptWriter(tmp_path, tiny_config(tiny_whisper), "en")

    def row(index, last, text):
        return {"video_id": "v", "source": "v.mp4", "line": 0, "block_index": index, "is_last": last,
                "start_s": 25.0 * index, "audio_s": 30.0 if not last else 10.0, "level_dbfs": -20.0, "silent": False,
                "segments": json.dumps([[1.0, 2.0, text]]), "language": "en", "error_stage": "", "error_reason": ""}

    assert writer.add([row(1, True, "second")]) == 0 and writer.incomplete() == {"v": (1, 2)}
    assert writer.add([row(1, True, "second again")]) == 0  # a retried task's copy
    assert writer.add([row(0, False, "first")]) == 1 and not writer.incomplete()
    cues = load_subtitles(asr_subtitle_path(tmp_path, "v"))
    assert [(c.start_s, c.text) for c in cues] == [(1.0, "first"), (26.0, "second")]
    assert writer.done["v"]["audio_s"] == 35.0


def test_asking_for_more_cpus_or_gpus_than_the_cluster_has_is_a_config_error(corpus, tiny_whisper, ray_local,
                                                                            tmp_path):
    for too_much, words in (({"concurrency": 2}, "need 3 CPUs"), ({"num_gpus": 1.0}, "need 1 GPUs")):
        with pytest.raises(ConfigError, match=words):
            run_transcribe_job(corpus, tmp_path / "asr", tiny_config(tiny_whisper, **too_much), progress=False)


def test_errors_name_every_config_mistake_before_running(corpus, tiny_whisper, tmp_path):
    with pytest.raises(ConfigError, match="neither a manifest file nor a folder"):
        run_transcribe_job(tmp_path / "nothing.jsonl", tmp_path / "asr", tiny_config(tiny_whisper), progress=False)
    with pytest.raises(ConfigError, match="block_s"):
        dataclasses.replace(tiny_config(tiny_whisper), block_s=10.0).validate()
