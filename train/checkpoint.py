"""Run checkpoints: atomic step folders, a `latest` pointer, the last K kept, no pickle.

Layout (DESIGN.md section 2, "Training runs"):
    RUN/checkpoints/step_{N:08d}/   model.safetensors + config.json + tokenizer/processor files
                                    (a CLIPViPModel.from_pretrained folder, usable as --init)
                                    + trainer_state.pt (see `TrainerState`)
    RUN/checkpoints/latest          text file: the name of the newest complete step folder
    RUN/checkpoints/best/           the best model by the validation metric (+ best.json)

A folder is written under a hidden `.NAME.UUID.tmp` name and renamed when complete, and `latest`
is replaced atomically after it, so a crash at any moment leaves the previous checkpoint usable.
trainer_state.pt holds only tensors and plain Python containers: it loads with
`torch.load(weights_only=True)` (DESIGN.md section 6), so RNG states from numpy and `random` are
converted to tensors / tuples here.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.config import changed_keys
from vipstream.config import ConfigError
from vipstream.atomic import TMP_GLOB, temporary_path_for, write_text_atomic

log = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
LATEST_NAME = "latest"
BEST_DIRNAME = "best"
STATE_NAME = "trainer_state.pt"
INFO_NAME = "checkpoint.json"  # step, world size, config and its digest: read without loading the state
STATE_FORMAT = 1
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def checkpoints_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIRNAME


def step_dirname(step: int) -> str:
    return f"step_{step:08d}"


def step_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete step folders, oldest first."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder `latest` names; if the pointer is missing or stale, the newest complete step folder."""
    root = checkpoints_root(run_dir)
    pointer = root / LATEST_NAME
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / STATE_NAME).is_file() and (candidate / INFO_NAME).is_file():
            return candidate
        log.warning("%s names %s, which is incomplete; using the newest step folder", pointer, candidate.name)
    complete = [path for _, path in step_checkpoints(run_dir)
                if (path / STATE_NAME).is_file() and (path / INFO_NAME).is_file()]
    return complete[-1] if complete else None


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Hidden `.NAME.UUID.tmp` leftovers of a process killed mid-write."""
    root = checkpoints_root(run_dir)
    if root.is_dir():
        for path in root.glob(TMP_GLOB):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def save_checkpoint(run_dir: str | Path, step: int, model, state: dict[str, Any], info: dict[str, Any],
                    keep: int) -> Path:
    """Write step_{step:08d}/ atomically, point `latest` at it, keep the newest `keep`; rank 0 only.

    `model` is a CLIPViPModel (unwrapped); `state` the trainer state (tensors and containers:
    optimizer, scheduler, scaler, per-rank RNG and loader position); `info` a small JSON mapping
    (step, world_size, config, config_digest) read by `select_checkpoint` without the state.
    """
    root = checkpoints_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dirname(step)
    tmp = temporary_path_for(final)
    model.save_pretrained(tmp)
    torch.save({"format": STATE_FORMAT, **state}, tmp / STATE_NAME)
    (tmp / INFO_NAME).write_text(json.dumps({"step": step, **info}, indent=2, sort_keys=True, default=str))
    if final.exists():  # a rerun of the same step (resume from an older checkpoint): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(root / LATEST_NAME, final.name + "\n")
    prune_checkpoints(run_dir, keep)
    return final


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` step folders (never the one `latest` names)."""
    latest = latest_checkpoint(run_dir)
    for _, path in step_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        if path != latest:
            shutil.rmtree(path, ignore_errors=True)


def read_info(checkpoint: str | Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / INFO_NAME).read_text())


def select_checkpoint(run_dir: str | Path, config: dict[str, Any], digest: str, world_size: int, *,
                      resume: bool, weights_only: bool) -> Path | None:
    """The checkpoint a run starts from (None: from --init), or ConfigError saying why not.

    Without --resume an output holding checkpoints is refused (it would be overwritten); with it,
    the latest checkpoint must come from the same config (`config_digest`) and world size, unless
    --resume-weights-only, which takes only its weights (and step) under the new config.
    """
    latest = latest_checkpoint(run_dir)
    if not (resume or weights_only):
        if latest is not None:
            raise ConfigError(f"{run_dir} already holds checkpoints (latest {latest.name}); pass --resume to "
                              f"continue that run, --resume-weights-only to start from its weights with this "
                              f"config, or choose another --output")
        return None
    if latest is None:
        log.info("no checkpoint in %s yet: starting from init", run_dir)
        return None
    if weights_only:
        return latest
    info = read_info(latest)
    if info.get("config_digest") != digest:
        changed = changed_keys(info.get("config", {}), config)
        detail = ", ".join(f"{k}: {info.get('config', {}).get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise ConfigError(f"{latest} was written by another config ({detail or 'digest differs'}); --resume "
                          f"continues only the same run. Pass --resume-weights-only to load its weights "
                          f"under the new config, or use another --output")
    if info.get("world_size") != world_size:
        raise ConfigError(f"{latest} was written by {info.get('world_size')} processes, this run has "
                          f"{world_size}; an exact resume needs the same world size (or --resume-weights-only)")
    return latest


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """trainer_state.pt of a step folder, unpickled with weights_only=True (tensors and containers only)."""
    state = torch.load(Path(checkpoint) / STATE_NAME, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{checkpoint}: trainer state format {state.get('format')!r}, expected {STATE_FORMAT}")
    return state


def save_best(run_dir: str | Path, model, info: dict[str, Any]) -> Path:
    """Replace checkpoints/best/ with `model` (save_pretrained) and best.json (`info`)."""
    root = checkpoints_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / BEST_DIRNAME
    tmp = temporary_path_for(final)
    model.save_pretrained(tmp)
    (tmp / "best.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    old = temporary_path_for(final) if final.exists() else None
    if old is not None:
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and tuples (loadable with weights_only=True)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": version, "state": tuple(py_state), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
