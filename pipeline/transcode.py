"""ffmpeg: probe a source once, cut and transcode one clip to mp4 bytes.

(To be implemented — contract below is fixed, other modules rely on it.)

    @dataclass(frozen=True) class ProbeInfo: duration_s, width, height, fps, video_codec, has_audio, format_name
    probe_video(path, timeout_s=30.0) -> ProbeInfo       raises StageError(stage="probe", ...)

    @dataclass(frozen=True) class TranscodeSpec: fps=3.0, short_side_px=224, crf=23, preset="veryfast",
        keep_audio=False, threads=1, timeout_s=120.0
        (classmethod from_config(PipelineConfig))

    @dataclass(frozen=True) class TranscodedClip: data: bytes, width, height, fps, num_frames, duration_s
    transcode_clip(src_path, start_s, end_s, spec, probe: ProbeInfo) -> TranscodedClip
                                                          raises StageError(stage="transcode", ...)
"""
