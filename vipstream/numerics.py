"""Portable CPU numerics: float results that do not depend on the CPU's instruction-set level, for
runs whose numbers are compared (the demo's table in README.md). Not enough for the same results
on every machine: a second machine (AMD EPYC, AVX-512) printed another demo table for the same
seed; `python -m vipstream.demo_digests` finds the first stage where two runs part.

torch's CPU kernels choose code paths by the CPU's instruction set at run time: ATen's vectorised
kernels (AVX-512, AVX2 or plain), MKL's BLAS and oneDNN's convolutions. Each path rounds a little
differently, and training turns a last-bit difference into another model: the demo's stand-in CLIP
trained for 60 steps with AVX-512 and with AVX2 kernels ended with different weights, and a fresh
clone on another machine printed another demo table for the same seed. Three switches, each read
by its library on first use, pin one path whatever the CPU's instruction set:

- `ATEN_CPU_CAPABILITY=default`: ATen's portable kernels, no AVX2/AVX-512 specialisations;
- `MKL_CBWR=COMPATIBLE`: MKL's conditional numerical reproducibility, the same results on any
  Intel or compatible x86-64 CPU;
- `ONEDNN_MAX_CPU_ISA=SSE41`: oneDNN's SSE4.1 kernels, which every x86-64 CPU of the last 15 years
  runs.

They are environment variables, so every child process (DataLoader workers, a local Ray's workers)
inherits them. Measured here (tests/vipstream/test_numerics.py): with them, a training run gives
bit-identical weights whether MKL, ATen and oneDNN are limited to AVX2 or not; without them it
does not. Not covered: ARM CPUs (another BLAS), GPUs, other torch builds. The price is speed: the
plain kernels are slower, which the demo's tiny models barely feel.
"""

from __future__ import annotations

import os

PORTABLE_NUMERICS_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
}


def use_portable_numerics() -> bool:
    """Set the switches in this process's environment, for it and the processes it starts.

    Returns whether they took effect in this process too: ATen reads its switch once, at the
    first vectorised kernel, so a process that has already computed keeps its native kernels
    (its children still get the portable ones). Call it before any tensor work.
    """
    os.environ.update(PORTABLE_NUMERICS_ENV)
    import torch

    return torch.backends.cpu.get_cpu_capability() == "DEFAULT"
