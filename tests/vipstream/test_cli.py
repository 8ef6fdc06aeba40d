"""The `vipstream` command as a user runs it."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import vipstream_cmd


def test_help_says_what_the_tool_does_and_lists_the_verbs_in_the_order_they_are_used():
    result = subprocess.run([*vipstream_cmd(), "--help"], capture_output=True, text=True, check=True)
    usage, description = result.stdout.split("\n\n")[:2]
    assert " ".join(description.split()).startswith("Turn subtitled web videos into WebDataset shards")
    assert "subcommand" not in result.stdout.lower()  # not the module's developer docstring
    verbs = usage[usage.index("{") + 1:usage.index("}")].split(",")
    expected = ["synth", "fetch", "transcribe", "build", "caption", "inspect", "train", "eval", "convert", "demo"]
    assert verbs == [v for v in expected if v in verbs] and {"synth", "build", "caption", "inspect", "demo"} <= set(verbs)
    assert "exit codes" in result.stdout


def test_transcribe_help_documents_every_config_key():
    import dataclasses

    from pipeline.transcribe.config import TranscribeConfig

    result = subprocess.run([*vipstream_cmd(), "transcribe", "--help"], capture_output=True, text=True, check=True)
    for f in dataclasses.fields(TranscribeConfig):
        assert f"--{f.name.replace('_', '-')}" in result.stdout


def test_build_help_documents_every_config_key():
    import dataclasses

    from pipeline.builder.config import PipelineConfig

    result = subprocess.run([*vipstream_cmd(), "build", "--help"], capture_output=True, text=True, check=True)
    for f in dataclasses.fields(PipelineConfig):
        assert f"--{f.name.replace('_', '-')}" in result.stdout


def test_synth_writes_an_hdvila_corpus_the_build_accepts(tmp_path):
    result = subprocess.run([*vipstream_cmd(), "synth", "--output", str(tmp_path), "--num-videos", "1",
                             "--min-duration-s", "30", "--max-duration-s", "30"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    (line,) = (tmp_path / "meta.jsonl").read_text().splitlines()
    meta = json.loads(line)
    assert listing["videos"] == [meta["video_id"]] and meta["clip"]
    from pipeline.builder.manifest import read_manifest

    (entry,) = read_manifest(tmp_path / "meta.jsonl", video_root=listing["video_root"]).entries
    assert entry.path and entry.subtitles and entry.subtitles.endswith(".vtt")
