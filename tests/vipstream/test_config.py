"""vipstream/config.py: defaults < YAML < flags, typed, unknown keys refused."""

from __future__ import annotations

import argparse

import pytest

from pipeline.builder.config import PipelineConfig
from vipstream.config import ConfigError, add_config_arguments, load_config, overrides_from_args


def test_yaml_overrides_defaults_and_flags_override_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("fps: 5\nshort_side_px: 112\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, PipelineConfig)
    args = parser.parse_args(["--short-side-px", "96", "--keep-audio", "yes"])
    cfg = load_config(PipelineConfig, path, overrides_from_args(args, PipelineConfig))
    assert (cfg.fps, cfg.short_side_px, cfg.keep_audio, cfg.crf) == (5.0, 96, True, 23)


def test_unknown_key_is_an_error_that_lists_known_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("fsp: 5\n")
    with pytest.raises(ConfigError, match="unknown config keys \\['fsp'\\].*'fps'"):
        load_config(PipelineConfig, path)


def test_wrong_type_and_invalid_value_are_errors():
    with pytest.raises(ConfigError, match="expected int, found 'abc'"):
        load_config(PipelineConfig, None, {"crf": "abc"})
    with pytest.raises(ConfigError, match="even number"):
        load_config(PipelineConfig, None, {"short_side_px": 225})


def test_shipped_pipeline_yaml_equals_the_defaults():
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "configs" / "pipeline.yaml"
    assert load_config(PipelineConfig, shipped) == PipelineConfig()


BAD_YAML = "fps: 5\nshort_side_px: [112\ncrf: 23\n"  # an unclosed flow sequence


@pytest.mark.parametrize("contents, message", [
    (BAD_YAML, "is not valid YAML at line"),
    (b"fps: \xff\xfe 5\n", "is not UTF-8 text"),
])
def test_malformed_yaml_is_a_config_error_naming_the_file_and_the_place(tmp_path, contents, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(contents if isinstance(contents, bytes) else contents.encode())
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(PipelineConfig, path)
    assert str(path) in str(refused.value)


@pytest.mark.parametrize("job", ["build", "caption", "train"])
def test_every_job_given_malformed_yaml_exits_2_without_a_traceback(tmp_path, capsys, job):
    from vipstream.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    out = tmp_path / "out"
    argv = {"build": ["build", "--input", str(tmp_path / "m.jsonl"), "--output", str(out)],
            "caption": ["caption", "--shards", str(out), "--captioner-id", "x"],
            "train": ["train", "--output", str(tmp_path / "run")]}[job]
    assert main([*argv, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"config file {path} is not valid YAML at line 3" in err and "Traceback" not in err
