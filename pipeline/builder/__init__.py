"""`vipstream build`: a corpus manifest -> WebDataset shards (manifest, subtitles, clip planning,
transcode, the per-shard task and the Ray job that maps it over shards)."""
