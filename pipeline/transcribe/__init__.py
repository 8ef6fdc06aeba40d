"""`vipstream transcribe`: speech recognition for videos without subtitles (WebVTT out)."""
