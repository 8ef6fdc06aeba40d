"""A digest of every stage's output in a demo workdir, so that two runs of the same seed (two
machines, two torch builds) can be compared stage by stage: the first stage whose digest differs
is where the runs part, and every later number follows from it.

    python -m vipstream.demo_digests WORKDIR [OTHER_WORKDIR]

What is hashed is what a stage means, not how it was written: the bytes of videos and weights;
the members (names and bytes) of tar shards, not their headers, with each clip json's `source`
read from the demo's `corpus/` folder on (the build was given WORKDIR as a relative or an
absolute path); the keys, captions and frame indices of caption sidecars, not their `created`
times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
from pathlib import Path
from typing import Callable

#: (stage, folder under WORKDIR, glob of its files), in pipeline order.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("corpus videos", "corpus/videos", "*.mp4"),
    ("stand-in CLIP", "models/clip", "model.safetensors"),
    ("stand-in captioner", "models/captioner", "model.safetensors"),
    ("training shards", "out/shards", "*.tar"),
    ("caption sidecars", "out/captions", "*/[0-9]*.parquet"),
    ("retrieval shards", "retrieval_out/shards", "*.tar"),
    ("vs checkpoint", "runs/vs/checkpoints", "step_*/model.safetensors"),
    ("ocl checkpoint", "runs/ocl/checkpoints", "step_*/model.safetensors"),
)
SIDECAR_COLUMNS = ("key", "caption", "frame_index")


def _file_bytes(path: Path, digest: "hashlib._Hash") -> None:
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)


def _json_member(data: bytes) -> bytes:
    """A clip json with its `source` (WORKDIR/corpus/..., as the build was given WORKDIR) cut to
    `corpus/...`."""
    meta = json.loads(data)
    source = meta.get("source")
    if isinstance(source, str) and "corpus/" in source:
        meta["source"] = "corpus/" + source.rsplit("corpus/", 1)[1]
    return json.dumps(meta, sort_keys=True).encode()


def _tar_members(path: Path, digest: "hashlib._Hash") -> None:
    with tarfile.open(path) as tar:  # read only; members are hashed, never extracted
        for member in tar:
            if member.isfile():
                data = tar.extractfile(member).read()
                if member.name.endswith(".json"):
                    data = _json_member(data)
                digest.update(member.name.encode() + b"\0")
                digest.update(data)


def _sidecar_rows(path: Path, digest: "hashlib._Hash") -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(SIDECAR_COLUMNS)).sort_by("key")
    for row in table.to_pylist():
        digest.update(repr(tuple(row[c] for c in SIDECAR_COLUMNS)).encode() + b"\n")


def _reader(path: Path) -> Callable[[Path, "hashlib._Hash"], None]:
    if path.suffix == ".tar":
        return _tar_members
    if path.suffix == ".parquet":
        return _sidecar_rows
    return _file_bytes


def stage_digests(work: str | Path) -> dict[str, str | None]:
    """{stage: sha256 of its files in name order (12 hex digits), or None when it has none}."""
    work = Path(work)
    digests: dict[str, str | None] = {}
    for stage, folder, pattern in STAGES:
        files = sorted((work / folder).glob(pattern))
        if not files:
            digests[stage] = None
            continue
        digest = hashlib.sha256()
        for path in files:
            digest.update(str(path.relative_to(work / folder)).encode() + b"\0")
            _reader(path)(path, digest)
        digests[stage] = digest.hexdigest()[:12]
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("other", type=Path, nargs="?", help="a second workdir to compare with")
    args = parser.parse_args(argv)
    mine = stage_digests(args.workdir)
    theirs = stage_digests(args.other) if args.other else None
    for stage, value in mine.items():
        line = f"{stage:20s} {value or '-':12s}"
        if theirs is not None:
            line += f"  {theirs[stage] or '-':12s}  {'same' if value == theirs[stage] else 'DIFFERENT'}"
        print(line)
    return 0 if theirs is None or mine == theirs else 1


if __name__ == "__main__":
    sys.exit(main())
