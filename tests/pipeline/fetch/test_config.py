"""pipeline/fetch/config.py: the shipped YAML is the defaults, rates and sizes parse, bad values are
errors, and the secrets (cookies, proxy) never survive into what is logged or saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.fetch.config import FetchConfig, parse_rate, parse_size, redacted_config, scrub, secrets_of
from vipstream.config import ConfigError, load_config

SHIPPED = Path(__file__).resolve().parents[3] / "configs" / "fetch.yaml"


def test_shipped_fetch_yaml_equals_the_defaults():
    assert load_config(FetchConfig, SHIPPED) == FetchConfig()


def test_rates_and_sizes_parse_with_their_units():
    assert parse_rate("2/s") == 2.0 and parse_rate("120/min") == 2.0 and parse_rate("0.5") == 0.5
    assert parse_rate("3600/h") == 1.0 and parse_rate("0") == 0.0 and parse_rate("") == 0.0
    assert parse_size("4G") == 4 * 1024 ** 3 and parse_size("500M") == 500 * 1024 ** 2
    assert parse_size("200K") == 200 * 1024 and parse_size("123") == 123 and parse_size("0") == 0
    with pytest.raises(ConfigError, match="rate_per_host"):
        parse_rate("fast")
    with pytest.raises(ConfigError, match="max_filesize"):
        parse_size("huge")


@pytest.mark.parametrize("overrides, message", [
    ({"max_height": 0}, "max_height"), ({"concurrency": 0}, "concurrency"),
    ({"download_timeout_s": 0}, "download_timeout_s"), ({"subtitles": "en,../x"}, "subtitles"),
    ({"backoff_base_s": 10, "backoff_max_s": 1}, "backoff"), ({"proxy": "ftp://h"}, "proxy"),
    ({"rate_per_host": "lots"}, "rate_per_host"), ({"js_runtime": "/bin/sh"}, "js_runtime"),
])
def test_bad_values_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(FetchConfig, None, overrides)


def test_secrets_are_redacted_from_the_config_and_scrubbed_from_text():
    cfg = FetchConfig(proxy="http://alice:s3cr3t-pw@proxy.example:3128", cookies="/home/alice/yt-cookies.txt")
    shown = redacted_config(cfg)
    assert shown["proxy"] == "<redacted>" and shown["cookies"] == "<redacted>"
    assert "s3cr3t" not in str(shown) and "alice" not in str(shown)
    text = "Unable to connect to proxy http://alice:s3cr3t-pw@proxy.example:3128 (auth alice:s3cr3t-pw)"
    cleaned = scrub(text, secrets_of(cfg))
    assert "s3cr3t-pw" not in cleaned and "<redacted>" in cleaned
    assert redacted_config(FetchConfig())["proxy"] == ""  # nothing to hide: shown as unset


def test_fetch_help_documents_every_config_key_and_auto_subtitles_is_a_bare_flag():
    import dataclasses
    import subprocess

    from tests.conftest import vipstream_cmd
    from vipstream.cli import build_parser
    from vipstream.config import overrides_from_args

    result = subprocess.run([*vipstream_cmd(), "fetch", "--help"], capture_output=True, text=True, check=True)
    for f in dataclasses.fields(FetchConfig):
        assert f"--{f.name.replace('_', '-')}" in result.stdout
    args = build_parser().parse_args(["fetch", "--input", "x.jsonl", "--output", "V", "--max-height", "480",
                                      "--subtitles", "en,de", "--no-auto-subtitles", "--rate-per-host", "1/s"])
    cfg = load_config(FetchConfig, None, overrides_from_args(args, FetchConfig))
    assert (cfg.max_height, cfg.subtitles, cfg.auto_subtitles, cfg.rate_per_host_per_s) == (480, ("en", "de"), False, 1.0)
    args = build_parser().parse_args(["fetch", "--input", "x", "--output", "V", "--auto-subtitles", "--retry-failed"])
    assert args.auto_subtitles is True and args.retry_failed is True
