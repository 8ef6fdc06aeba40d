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
