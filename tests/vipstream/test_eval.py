"""`vipstream eval` end to end: a real retrieval set (built by `vipstream build --annotations`),
a tiny CLIP-ViP saved to disk, the CLI run as a user would; the meanpool baseline; an output
checked before the work and written after the table; and the encoded set checked against the
manifest on real damaged copies (an undecodable clip, a truncated shard, a shard copied twice)."""

from __future__ import annotations

import io
import json
import resource
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from model.clip_vip import CLIPViPModel
from tests.conftest import vipstream_cmd
from tests.retrieval_sets import COLOURS, CAPTION_TEMPLATES
from train.evaluate import evaluate_model
from vipstream.cli import main
from vipstream.commands.eval import DSL_LABEL, format_table

METRICS = {"R@1", "R@5", "R@10", "MdR", "MnR"}


@pytest.fixture(scope="module")
def tiny_clip_vip(stand_in_clip, tmp_path_factory):
    return CLIPViPModel.from_clip(stand_in_clip).save_pretrained(tmp_path_factory.mktemp("ckpt") / "clip_vip")


def test_eval_cli_prints_the_table_and_writes_metrics_json(retrieval_set, tiny_clip_vip, tmp_path):
    out_dir, _ = retrieval_set
    output = tmp_path / "metrics.json"
    done = subprocess.run([*vipstream_cmd(), "eval", "--checkpoint", str(tiny_clip_vip), "--data", str(out_dir),
                           "--frames", "4", "--dsl", "--batch-size", "4", "--output", str(output), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(output.read_text())
    assert metrics["num_videos"] == len(COLOURS)
    assert metrics["num_texts"] == len(COLOURS) * len(CAPTION_TEMPLATES)
    for kind in ("plain", "dsl"):
        for direction in ("t2v", "v2t"):
            assert set(metrics[kind][direction]) == METRICS
            assert 0 <= metrics[kind][direction]["R@1"] <= 100
            assert 1 <= metrics[kind][direction]["MdR"] <= len(COLOURS) * len(CAPTION_TEMPLATES)
    # 6 videos: every text finds its video within the top 10
    assert metrics["plain"]["t2v"]["R@10"] == 100.0
    lines = done.stdout.splitlines()
    assert any(line.startswith("plain ") for line in lines)
    assert any(line.startswith(DSL_LABEL) for line in lines)
    assert "text->video" in done.stdout and "video->text" in done.stdout
    assert f"{metrics['plain']['t2v']['R@1']:.1f}" in next(line for line in lines if line.startswith("plain "))


def test_meanpool_baseline_and_a_plain_clip_without_it(retrieval_set, stand_in_clip, tmp_path):
    out_dir, _ = retrieval_set
    result = evaluate_model(stand_in_clip, out_dir, num_frames=4, batch_size=4, baseline="meanpool",
                            progress=False)
    assert result["baseline"] == "meanpool" and result["num_videos"] == len(COLOURS)
    assert set(result["plain"]["t2v"]) == METRICS and set(result["dsl"]["v2t"]) == METRICS
    assert DSL_LABEL not in format_table(result, dsl=False)
    done = subprocess.run([*vipstream_cmd(), "eval", "--checkpoint", str(stand_in_clip), "--data", str(out_dir),
                           "--output", str(tmp_path / "m.json"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--baseline meanpool" in done.stderr


# ------------------------------------------------------------------ the output, checked first (issue 15.7)
def _eval_args(checkpoint, data, output, *extra):
    return ["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--frames", "4", "--batch-size", "4",
            "--output", str(output), "--no-progress", *extra]


def test_an_unwritable_output_is_refused_before_any_work(retrieval_set, tiny_clip_vip, tmp_path, capsys):
    out_dir, _ = retrieval_set
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for output in (Path("/sys/vipstream-eval/metrics.json"), a_file / "metrics.json", tmp_path):
        started = time.monotonic()
        assert main(_eval_args(tiny_clip_vip, out_dir, output)) == 2, output
        captured = capsys.readouterr()
        assert f"--output {output}: cannot write there" in captured.err and "nothing was evaluated" in captured.err
        assert "Traceback" not in captured.err and "text->video" not in captured.out
        assert time.monotonic() - started < 10  # refused up front, not after encoding the set


def test_the_table_is_printed_before_the_write_and_a_failed_write_leaves_no_partial_file(retrieval_set, tiny_clip_vip,
                                                                                         tmp_path):
    """Storage that takes the check's empty probe but refuses the metrics (a file-size limit, as a
    quota would): the table is on stdout, exit 1, and no partial or temporary file is left."""
    out_dir, _ = retrieval_set
    output = tmp_path / "results" / "metrics.json"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead

    done = subprocess.run([*vipstream_cmd(), *_eval_args(tiny_clip_vip, out_dir, output)], capture_output=True,
                          text=True, timeout=300, preexec_fn=limit_file_size)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "text->video" in done.stdout and any(line.startswith("plain ") for line in done.stdout.splitlines())
    assert f"the metrics above could not be written to {output}" in done.stderr
    assert list(output.parent.iterdir()) == []  # neither a partial metrics.json nor a temporary


# ------------------------------------------------- the encoded set against the manifest (issue 15.4)
def _copy_set(out_dir: Path, dest: Path) -> tuple[Path, dict[str, list[str]]]:
    """A private copy of a built retrieval set, and its manifest's keys per shard."""
    copy = shutil.copytree(out_dir, dest)
    keys: dict[str, list[str]] = {}
    for row in pq.read_table(copy / "manifest.parquet", columns=["key", "shard"]).to_pylist():
        keys.setdefault(row["shard"], []).append(row["key"])
    return copy, keys


def _replace_member(tar_path: Path, name: str, payload: bytes) -> None:
    """Rewrite a real tar with member `name` holding `payload` (everything else as it was)."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]
    with tarfile.open(tar_path, "w") as tar:
        for member, data in members:
            if member.name == name:
                data, member.size = payload, len(payload)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)


def _metrics(capsys, argv) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_undecodable_clip_is_an_error_unless_allow_missing_which_reports_the_drop(retrieval_set, tiny_clip_vip,
                                                                                   tmp_path, capsys):
    out_dir, _ = retrieval_set
    data, keys = _copy_set(out_dir, tmp_path / "set")
    broken = keys["000000"][1]
    _replace_member(data / "shards" / "000000.tar", f"{broken}.mp4", b"\x89PNG\r\n\x1a\n not a video at all")
    output = tmp_path / "m.json"
    code, out, err = _metrics(capsys, _eval_args(tiny_clip_vip, data, output))
    assert code == 1 and f"1 of the {len(COLOURS)} videos of manifest.parquet could not be read ({broken}" in err
    assert "--allow-missing" in err and not output.exists() and "text->video" not in out

    code, out, err = _metrics(capsys, _eval_args(tiny_clip_vip, data, output, "--allow-missing"))
    assert code == 0, err[-2000:]
    result = json.loads(output.read_text())
    assert result["num_videos"] == len(COLOURS) - 1 and result["expected_videos"] == len(COLOURS)
    assert result["dropped"] == {"videos": 1, "captions": len(CAPTION_TEMPLATES), "videos_unknown_captions": 0,
                                 "keys": [broken]}
    assert result["num_texts"] == (len(COLOURS) - 1) * len(CAPTION_TEMPLATES)
    assert (f"dropped (--allow-missing): 1 of {len(COLOURS)} videos and {len(CAPTION_TEMPLATES)} captions"
            in out)


def test_a_truncated_shard_is_an_error_unless_allow_missing_which_counts_what_is_lost(retrieval_set, tiny_clip_vip,
                                                                                    tmp_path, capsys):
    out_dir, _ = retrieval_set
    data, keys = _copy_set(out_dir, tmp_path / "set")
    shard = data / "shards" / "000000.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a copy cut short
    output = tmp_path / "m.json"
    code, _, err = _metrics(capsys, _eval_args(tiny_clip_vip, data, output))
    assert code == 1 and "could not be read" in err and not output.exists()

    code, out, err = _metrics(capsys, _eval_args(tiny_clip_vip, data, output, "--allow-missing"))
    assert code == 0, err[-2000:]
    result = json.loads(output.read_text())
    dropped = result["dropped"]
    assert dropped["videos"] >= 1 and result["num_videos"] + dropped["videos"] == len(COLOURS)
    assert set(dropped["keys"]) <= set(keys["000000"])
    # Every dropped video's captions are counted, or the video is counted as of unknown captions.
    assert dropped["captions"] == len(CAPTION_TEMPLATES) * (dropped["videos"] - dropped["videos_unknown_captions"])
    assert f"dropped (--allow-missing): {dropped['videos']} of {len(COLOURS)} videos" in out


def test_a_shard_copied_twice_is_refused_even_with_allow_missing(retrieval_set, tiny_clip_vip, tmp_path, capsys):
    out_dir, _ = retrieval_set
    data, keys = _copy_set(out_dir, tmp_path / "set")
    shards = data / "shards"
    shutil.copy(shards / "000001.tar", shards / "000002.tar")
    shutil.copy(shards / "000001.stats.json", shards / "000002.stats.json")
    for extra in ([], ["--allow-missing"]):
        code, out, err = _metrics(capsys, _eval_args(tiny_clip_vip, data, tmp_path / "m.json", *extra))
        assert code == 2, err[-2000:]
        assert f"{len(keys['000001'])} videos were read more than once ({', '.join(sorted(keys['000001']))})" in err
        assert "text->video" not in out and not (tmp_path / "m.json").exists()


def test_a_bad_checkpoint_or_text_length_is_refused_from_its_config_before_any_work(retrieval_set, tiny_clip_vip,
                                                                                   stand_in_clip, tmp_path, capsys):
    out_dir, _ = retrieval_set
    pickled = shutil.copytree(stand_in_clip, tmp_path / "pickled_clip")
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle we never open")
    cases = [
        ([tiny_clip_vip, "--max-text-length", "1000"],
         f"--max-text-length 1000 is beyond the 77 text positions of the model ({tiny_clip_vip / 'config.json'})"),
        ([pickled, "--baseline", "meanpool"], "found only pickled weights ['pytorch_model.bin']"),
    ]
    for (checkpoint, *extra), message in cases:
        started = time.monotonic()
        code = main(_eval_args(checkpoint, out_dir, tmp_path / "m.json", *extra))
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, err[-2000:]
        assert time.monotonic() - started < 10
