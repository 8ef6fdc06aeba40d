"""`vipstream demo --fast` end to end, as a user runs it: every step's command is printed, the real
commands run (synth, stand-in training, build, caption, build --annotations, train vs/ocl, eval x3,
the time-order test x3),
and the table, report.md and report.png come out."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import vipstream_cmd


@pytest.mark.slow
def test_demo_fast_runs_the_whole_mission_and_writes_the_report(tmp_path):
    work = tmp_path / "demo"
    result = subprocess.run([*vipstream_cmd(), "demo", "--fast", "--workdir", str(work), "--seed", "0"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "numerics: portable" in out  # not the CPU's instruction-set level's table (vipstream/numerics.py)
    for command in ("$ vipstream synth", "--subtitle-style asr", "$ python -m tools.stand_in_training clip",
                    "$ python -m tools.stand_in_training captioner", "$ vipstream build --input",
                    "$ vipstream caption", "$ vipstream build --annotations", "--loss vs", "--loss ocl",
                    "--baseline meanpool"):
        assert command in out, command
    assert out.count("$ vipstream eval") == 3 and out.count("$ vipstream train") == 2
    for name in ("meanpool", "vs", "ocl"):
        order = json.loads((work / "eval" / f"{name}_order.json").read_text())
        assert order["captions"] >= 36 and 0.0 <= order["accuracy"] <= 100.0
        metrics = json.loads((work / "eval" / f"{name}.json").read_text())
        assert metrics["num_videos"] == 12 and metrics["num_texts"] >= 36
        assert 0.0 <= metrics["plain"]["t2v"]["R@1"] <= 100.0
    for name in ("vs", "ocl"):
        rows = [json.loads(line) for line in (work / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        assert rows and rows[-1]["step"] <= 12
    assert "CLIP-ViP, subtitles + captions (OCL)" in out and "CLIP4Clip-meanP" in out
    report = (work / "report.md").read_text()
    assert "seed 0" in report and "vipstream train" in report
    digests = json.loads((work / "digests.json").read_text())  # one per stage, for comparing machines
    assert len(digests) == 8 and None not in digests.values()
    assert "## Stage digests" in report and all(f"`{value}`" in report for value in digests.values())
    assert (work / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sidecar = work / "out" / "captions" / "stand-in-captioner"
    assert json.loads((sidecar / "summary.json").read_text())["captions"] > 0

    # a rerun of the same plan skips every finished step
    again = subprocess.run([*vipstream_cmd(), "demo", "--fast", "--workdir", str(work), "--seed", "0"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("(done already") == 14


def test_demo_refuses_a_workdir_that_is_not_a_demos(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run([*vipstream_cmd(), "demo", "--fast", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not a demo's folder" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
