"""FetchConfig: every knob of `vipstream fetch`, documented where it is declared.

Values from configs/fetch.yaml, overridable by `--flag-name` on the command line. No key takes
free-form yt-dlp options: the options passed to yt-dlp are built from these fields only
(pipeline/fetch/options.py), so no `--exec`-like hook is reachable from a config file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from vipstream.config import ConfigError, config_field as _f, config_to_dict

#: Fields whose values are the user's secrets or point at them: never logged, never saved.
SECRET_FIELDS = ("cookies", "proxy")
REDACTED = "<redacted>"
#: The JavaScript runtimes yt-dlp knows by name (a name only: no path or argument from a config).
JS_RUNTIMES = ("deno", "node", "bun", "quickjs")

_RATE = re.compile(r"^\s*(?P<count>\d+(?:\.\d+)?)\s*(?:/\s*(?P<unit>s|sec|second|m|min|minute|h|hour))?\s*$")
_UNIT_S = {None: 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
           "h": 3600.0, "hour": 3600.0}
_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_rate(text: str) -> float:
    """"2/s" -> 2.0, "120/min" -> 2.0, "0.5" -> 0.5 (per second); "0" or "" -> 0.0 (no limit)."""
    if not str(text).strip():
        return 0.0
    match = _RATE.match(str(text).lower())
    if not match:
        raise ConfigError(f"rate_per_host: expected COUNT/UNIT such as 2/s, 120/min or 0 (no limit), found {text!r}")
    return float(match.group("count")) / _UNIT_S[match.group("unit")]


def parse_size(text: str | int) -> int:
    """"4G" -> 4 * 1024**3, "500M", "123456" (bytes); "0" or "" -> 0 (no limit)."""
    if not str(text).strip():
        return 0
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(f"max_filesize: expected bytes or a size such as 500M or 4G, found {text!r}")
    power = "kmgt".find(match.group("unit").lower()) + 1 if match.group("unit") else 0
    return int(float(match.group("number")) * 1024 ** power)


@dataclass(frozen=True)
class FetchConfig:
    # What is fetched. HD-VILA-100M's clips come from 720p videos; the builder transcodes to a
    # short side of 224 px, so more than 720 lines costs bandwidth and disk for nothing.
    max_height: int = _f(720, "tallest video fetched, pixels (mp4, best audio merged in when separate)")
    subtitles: tuple[str, ...] = _f(("en",), "subtitle languages, in order of preference (WebVTT); "
                                              "empty: no subtitles")
    # HD-VILA's subtitles are YouTube's automatic (ASR) captions for most videos: on by default.
    auto_subtitles: bool = _f(True, "also take automatic captions when a language has no uploaded subtitles")
    max_filesize: str = _f("4G", "largest video accepted (bytes, or 500M / 4G; 0: no limit)")
    max_duration: float = _f(0.0, "longest video accepted, seconds (0: no limit)")
    # Politeness and retries. A per-host token bucket shared by every task on a node (node-local
    # files, see pipeline/fetch/ratelimit.py); transient failures back off exponentially with jitter.
    rate_per_host: str = _f("2/s", "video requests per second per host and node (2/s, 120/min; 0: no limit)")
    rate_burst: int = _f(4, "requests a host may get at once after a quiet spell (token bucket size)")
    max_attempts: int = _f(4, "attempts per video for transient failures (429, 5xx, timeouts, resets)")
    backoff_base_s: float = _f(5.0, "first back-off before a retry, seconds (doubled each retry, jittered)")
    backoff_max_s: float = _f(300.0, "longest back-off (and longest Retry-After honoured), seconds")
    # A stalled or slow-dripping connection must not hold a task forever: 30 min fetches a 720p
    # video of an hour at ~1 MB/s; raise it for long videos on slow links.
    download_timeout_s: float = _f(1800.0, "wall-clock deadline of one download attempt, seconds")
    socket_timeout_s: float = _f(30.0, "a read that gets no byte for this long fails the connection, seconds")
    ytdlp_retries: int = _f(3, "yt-dlp's own resumes of a broken transfer within one attempt")
    probe_timeout_s: float = _f(30.0, "kill an ffprobe of a downloaded file that runs longer than this")
    # yt-dlp solves YouTube's JavaScript challenges with an external runtime it finds on PATH.
    js_runtime: str = _f("deno", "JavaScript runtime yt-dlp may use for YouTube: deno, node, bun or quickjs")
    # The user's own pass-through options (never logged, never written to outputs).
    cookies: str = _f("", "Netscape cookies file handed to yt-dlp (a private copy per task)")
    proxy: str = _f("", "proxy URL handed to yt-dlp (http://, https://, socks5://)")
    # Ray
    concurrency: int = _f(16, "downloads in flight over the whole job (Ray tasks; each fetches its "
                              "videos one after another)")
    videos_per_task: int = _f(16, "videos per Ray task")
    cpus_per_task: float = _f(0.25, "CPUs Ray reserves per task (downloads wait on the network, not the CPU)")
    max_task_retries: int = _f(2, "Ray retries of a task whose worker died")
    num_cpus: int = _f(0, "CPUs for a local Ray (0: all); ignored with --ray-address")
    rate_limit_dir: str = _f("", "node-local folder of the per-host rate-limit buckets (default: the "
                                 "system temp folder)")

    @property
    def max_filesize_bytes(self) -> int:
        return parse_size(self.max_filesize)

    @property
    def rate_per_host_per_s(self) -> float:
        return parse_rate(self.rate_per_host)

    def validate(self) -> None:
        parse_size(self.max_filesize)
        parse_rate(self.rate_per_host)
        if self.max_height < 1:
            raise ConfigError(f"max_height must be >= 1, found {self.max_height}")
        for name in ("concurrency", "videos_per_task", "max_attempts", "rate_burst"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, found {getattr(self, name)}")
        for name in ("download_timeout_s", "socket_timeout_s", "probe_timeout_s", "cpus_per_task"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, found {getattr(self, name)}")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise ConfigError(f"need 0 <= backoff_base_s <= backoff_max_s, found "
                              f"{self.backoff_base_s}..{self.backoff_max_s}")
        if self.max_duration < 0 or self.ytdlp_retries < 0:
            raise ConfigError("max_duration and ytdlp_retries must be >= 0")
        for lang in self.subtitles:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}", lang):
                raise ConfigError(f"subtitles: expected language codes such as en, en-US, pt-BR, found {lang!r}")
        if self.js_runtime not in JS_RUNTIMES:
            raise ConfigError(f"js_runtime must be one of {', '.join(JS_RUNTIMES)}, found {self.js_runtime!r}")
        if self.proxy and not re.match(r"^(https?|socks4a?|socks5h?)://", self.proxy):
            raise ConfigError("proxy: expected an http://, https:// or socks5:// URL (value not shown)")


def redacted_config(cfg: FetchConfig) -> dict[str, Any]:
    """The config as a dict for logs, summary.json and fetch_config.yaml: secrets replaced."""
    data = config_to_dict(cfg)
    for name in SECRET_FIELDS:
        if data.get(name):
            data[name] = REDACTED
    return data


def secrets_of(cfg: FetchConfig) -> tuple[str, ...]:
    """Strings that must never reach a log line or an output file: the proxy URL, its
    credentials, and the cookies file's path."""
    found = []
    if cfg.proxy:
        found.append(cfg.proxy)
        userinfo = re.match(r"^[a-z0-9]+://([^@/]+)@", cfg.proxy)
        if userinfo:
            found += [userinfo.group(1), *[p for p in userinfo.group(1).split(":") if len(p) >= 3]]
    if cfg.cookies:
        found.append(cfg.cookies)
    return tuple(sorted(set(found), key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret replaced by REDACTED (longest first)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
