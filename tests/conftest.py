"""Session-scoped, expensive fixtures shared by the suite: the synthetic corpus, a local Ray,
one corpus build, tiny captioners and a tiny Whisper. Each is made once per test session, from scratch, with real ffmpeg and Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(os.environ.get("VIPSTREAM_BIN", REPO_ROOT / ".venv" / "bin"))


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory):
    """Three long synthetic videos (HD-VILA meta + YouTube-style VTT), seed 0."""
    from tools.make_synthetic_corpus import make_synthetic_corpus

    return make_synthetic_corpus(tmp_path_factory.mktemp("synthetic_corpus"), num_videos=3, seed=0)


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (2 CPUs, no dashboard) shared by the in-process tests."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def built_corpus(synthetic_corpus, ray_local, tmp_path_factory):
    """The synthetic corpus built into shards (2 videos per shard): (out_dir, summary)."""
    from pipeline.builder.config import PipelineConfig
    from pipeline.builder.jobs import run_build

    out_dir = tmp_path_factory.mktemp("built") / "out"
    summary = run_build(synthetic_corpus.meta_path, out_dir, PipelineConfig(videos_per_shard=2),
                        video_root=synthetic_corpus.video_root, progress=False)
    return out_dir, summary


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory) -> Path:
    """A random-init BLIP captioner saved to disk (see tests/captioning.py)."""
    from tests.captioning import save_tiny_blip

    return save_tiny_blip(tmp_path_factory.mktemp("captioners") / "tiny-blip")


@pytest.fixture(scope="session")
def tiny_vit_gpt2(tmp_path_factory) -> Path:
    """A random-init VisionEncoderDecoder (ViT + GPT-2) captioner saved to disk."""
    from tests.captioning import save_tiny_vit_gpt2

    return save_tiny_vit_gpt2(tmp_path_factory.mktemp("captioners") / "tiny-vit-gpt2")


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    """A random-init Whisper with a complete tokenizer and generation config, saved to disk (see
    tests/transcription.py): loads like a hub Whisper; its text is noise."""
    from tests.transcription import save_tiny_whisper

    return save_tiny_whisper(tmp_path_factory.mktemp("asr_models") / "tiny-whisper")


@pytest.fixture(scope="session")
def stand_in_clip(tmp_path_factory) -> Path:
    """A tiny random CLIP checkpoint folder (weights, real CLIP fast tokenizer, CLIPImageProcessor
    at 32 px) from tools/stand_in_models.save_tiny_clip: loads like a hub CLIP."""
    from tools.stand_in_models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("stand_in_clip") / "clip")


@pytest.fixture(scope="session")
def captioned_corpus(built_corpus, tiny_blip, ray_local, tmp_path_factory) -> tuple[Path, str]:
    """A copy of `built_corpus` captioned by the real `vipstream caption` job (in process, on
    `ray_local`) with `tiny_blip` under captioner id "tiny-blip": (out_dir, captioner_id).

    A copy, so tests of `built_corpus` still see an output without captions."""
    import shutil

    from vipstream.cli import main

    source, _ = built_corpus
    out_dir = tmp_path_factory.mktemp("captioned") / "out"
    shutil.copytree(source, out_dir)
    code = main(["caption", "--shards", str(out_dir), "--captioner", str(tiny_blip),
                 "--captioner-id", "tiny-blip", "--max-new-tokens", "8", "--batch-size", "4",
                 "--no-progress"])
    assert code == 0, f"vipstream caption exited {code}"
    return out_dir, "tiny-blip"


@pytest.fixture(scope="session")
def clip_mp4(tmp_path_factory) -> bytes:
    """One real 2 s clip (3 fps, short side 224) as the corpus builder would store it."""
    from tests.captioning import make_clip_bytes

    return make_clip_bytes(tmp_path_factory.mktemp("clips"), "clip")


def vipstream_cmd() -> list[str]:
    """The installed console script, run as a user would."""
    script = VENV_BIN / "vipstream"
    return [str(script)] if script.exists() else ["python", "-m", "vipstream.cli"]


@pytest.fixture(scope="session")
def retrieval_set(ray_local, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny MSR-VTT-form retrieval set (tests/retrieval_sets.py: six solid-colour videos, three
    captions each, plus one caption for an unknown video) built in process by `vipstream build
    --annotations` (2 shards): (out_dir, annotation file)."""
    from tests.retrieval_sets import write_msrvtt_set
    from vipstream.cli import main

    folder = tmp_path_factory.mktemp("retrieval_set")
    annotations = write_msrvtt_set(folder, extra_sentences=[
        {"video_id": "video99", "caption": "a caption for a video not in the list", "sen_id": 99}])
    out_dir = folder / "out"
    code = main(["build", "--annotations", str(annotations), "--video-root", str(folder / "videos"),
                 "--output", str(out_dir), "--videos-per-shard", "4", "--short-side-px", "32", "--no-progress"])
    assert code == 0, f"vipstream build --annotations exited {code}"
    return out_dir, annotations


@pytest.fixture(scope="session")
def spans_build(ray_local, tmp_path_factory):
    """A tiny HD-VILA-form corpus (tests/text_imports.py: clips with given spans) built in process
    by `vipstream build --subtitle-db` from a reference-layout LMDB that lacks one clip's key,
    holds one invalid-UTF-8 and one over-long text, and two keys naming no clip:
    (out_dir, SpansCorpus, subtitle texts by clip_id as written to the DB)."""
    from tests.text_imports import INVALID_UTF8, make_spans_corpus, write_lmdb
    from vipstream.cli import main

    folder = tmp_path_factory.mktemp("spans_build")
    corpus = make_spans_corpus(folder)
    texts = {"QMi8x8o55Ns.1.mp4": "a red square moves to the right".encode(),
             "QMi8x8o55Ns.2.mp4": "café crème, ünïcode words".encode(),
             "QMi8x8o55Ns.3.mp4": INVALID_UTF8,
             "QMi8x8o55Ns.4.mp4": ("long " * 5000).encode(),
             "Bx2y3z4w5v6.1.mp4": "two blue circles".encode(),
             # Bx2y3z4w5v6.2.mp4: no key
             "ZZextra0001.1.mp4": b"a clip not in the corpus", "ZZextra0001.2.mp4": b"another one"}
    db = write_lmdb(folder / "hdvila_subtitles_92m_db", texts)
    out_dir = folder / "out"
    code = main(["build", "--input", str(corpus.meta_path), "--video-root", str(corpus.video_root),
                 "--subtitle-db", str(db), "--output", str(out_dir), "--videos-per-shard", "2",
                 "--short-side-px", "32", "--no-progress"])
    assert code == 0, f"vipstream build --subtitle-db exited {code}"
    return out_dir, corpus, texts
