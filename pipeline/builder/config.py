"""PipelineConfig: every knob of `vipstream build`, documented where it is declared.

Values from configs/pipeline.yaml, overridable by `--flag-name` on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from vipstream.config import ConfigError, config_field as _f


@dataclass(frozen=True)
class PipelineConfig:
    # Shard assignment: a fixed number of source videos per shard, in manifest order, so a rerun
    # or a resume puts the same keys in the same shards.
    # 16 HD-VILA videos (~31 clips each, ~50-100 KB per clip at the defaults) make ~25-50 MB shards.
    videos_per_shard: int = _f(16, "source videos per shard (deterministic assignment)")
    # Clip planning when the manifest gives no spans (DESIGN.md: HD-VILA averages 13.4 s).
    min_clip_s: float = _f(4.0, "shortest planned clip, seconds")
    max_clip_s: float = _f(20.0, "longest planned clip, seconds")
    span_tolerance_s: float = _f(0.5, "a given span may end this far past the video end (clamped)")
    # A clip's text: the longest planned clip (max_clip_s 20 s) holds ~60 words of speech at
    # ~150 words/min (~350 characters); 2,000 leaves room for given spans of a few minutes and is
    # ~6x what CLIP's 77 text tokens can read. Longer (a subtitle file of one endless cue, a 40 MB
    # hostile one) is cut at a word boundary and counted (`subtitles_cut` in stats and summary).
    max_subtitle_chars: int = _f(2000, "longest subtitle text stored with a clip, in characters (longer: cut, counted)")
    # Transcode (DESIGN.md section 2 defaults: 3 fps, short side 224, H.264 yuv420p, no audio).
    fps: float = _f(3.0, "output frames per second")
    short_side_px: int = _f(224, "output short side in pixels (long side keeps aspect, even)")
    crf: int = _f(23, "x264 constant rate factor")
    preset: str = _f("veryfast", "x264 preset")
    keep_audio: bool = _f(False, "keep an AAC audio track in the clips")
    ffmpeg_threads: int = _f(1, "threads per ffmpeg process (Ray runs one task per CPU)")
    clip_timeout_s: float = _f(120.0, "kill an ffmpeg cut that runs longer than this")
    probe_timeout_s: float = _f(30.0, "kill an ffprobe that runs longer than this")
    # Remote sources (manifest paths that are fsspec URIs) are copied locally before ffmpeg.
    remote_protocols: tuple[str, ...] = _f(("s3", "gs", "gcs", "abfs", "az", "hdfs", "file"),
                                           "fsspec protocols a manifest path may use (http(s) is off: "
                                           "a manifest from the web must not make workers fetch URLs)")
    max_source_bytes: int = _f(50 * 1024 ** 3, "largest remote source copied locally, bytes")
    # A stalled object store must not hold a shard task forever. 30 min copies a multi-GB
    # video at a few MB/s; raise it for sources near max_source_bytes on a slow link.
    source_fetch_timeout_s: float = _f(1800.0, "deadline to copy one remote source (video or subtitles) "
                                               "locally, seconds; past it the video is an error row")
    # Ray
    cpus_per_task: float = _f(1.0, "CPUs Ray reserves per shard task")
    max_task_retries: int = _f(2, "Ray retries of a shard task whose worker died")
    num_cpus: int = _f(0, "CPUs for a local Ray (0: all); ignored with --ray-address")

    def validate(self) -> None:
        if self.videos_per_shard < 1:
            raise ConfigError(f"videos_per_shard must be >= 1, found {self.videos_per_shard}")
        if not 0 < self.min_clip_s <= self.max_clip_s:
            raise ConfigError(f"need 0 < min_clip_s <= max_clip_s, found {self.min_clip_s}..{self.max_clip_s}")
        if self.max_subtitle_chars < 1:
            raise ConfigError(f"max_subtitle_chars must be >= 1, found {self.max_subtitle_chars}")
        if self.fps <= 0:
            raise ConfigError(f"fps must be > 0, found {self.fps}")
        if self.short_side_px < 16 or self.short_side_px % 2:
            raise ConfigError(f"short_side_px must be an even number >= 16, found {self.short_side_px}")
        if self.ffmpeg_threads < 1:
            raise ConfigError(f"ffmpeg_threads must be >= 1, found {self.ffmpeg_threads}")
        if not self.source_fetch_timeout_s > 0:
            raise ConfigError(f"source_fetch_timeout_s must be > 0, found {self.source_fetch_timeout_s}")
