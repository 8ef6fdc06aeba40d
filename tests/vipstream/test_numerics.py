"""vipstream/numerics.py: with portable numerics a training run gives the same weights whatever
instruction sets MKL, ATen and oneDNN are allowed, which is what another CPU changes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

#: What a CPU without AVX-512 (or with another vendor's vector units) changes: the kernels each
#: library picks. Emulated here by capping every library at AVX2.
AVX2_CPU_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

TRAIN_SNIPPET = """
import sys
from vipstream.numerics import use_portable_numerics
assert use_portable_numerics(), "the switches must take effect before any tensor work"
from tools.stand_in_training import main
sys.exit(main(["clip", "--output", sys.argv[1], "--steps", "20", "--seed", "0"]))
"""


def _train_weights_digest(folder: Path, extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in AVX2_CPU_ENV and k != "MKL_CBWR"}
    env.update(extra_env, PYTHONPATH=str(REPO_ROOT))
    subprocess.run([sys.executable, "-c", TRAIN_SNIPPET, str(folder)], check=True, env=env, cwd=REPO_ROOT,
                   capture_output=True, timeout=600)
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_portable_numerics_train_the_same_weights_on_an_avx2_cpu(tmp_path):
    native_cpu = _train_weights_digest(tmp_path / "native", {})
    avx2_cpu = _train_weights_digest(tmp_path / "avx2", AVX2_CPU_ENV)
    assert native_cpu == avx2_cpu

