"""`vipstream caption`: built shards -> caption sidecars (the captioner, the Ray Data stages, the
sidecar writer and the job that wires them)."""
