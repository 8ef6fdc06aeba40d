"""Fixtures shared by the caption, caption-job and inspect tests (session-scoped: built once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.captioning import make_clip_bytes, save_tiny_blip, save_tiny_vit_gpt2

@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory) -> Path:
    return save_tiny_blip(tmp_path_factory.mktemp("captioners") / "tiny-blip")


@pytest.fixture(scope="session")
def tiny_vit_gpt2(tmp_path_factory) -> Path:
    return save_tiny_vit_gpt2(tmp_path_factory.mktemp("captioners") / "tiny-vit-gpt2")


@pytest.fixture(scope="session")
def clip_mp4(tmp_path_factory) -> bytes:
    return make_clip_bytes(tmp_path_factory.mktemp("clips"), "clip")
