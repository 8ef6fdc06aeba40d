"""Run checkpoints: atomic step folders, a `latest` pointer, the last K kept, no pickle.

Layout (DESIGN.md section 2, "Training runs"):
    RUN/checkpoints/step_{N:08d}/   model.safetensors + config.json + tokenizer/processor files
                                    (a CLIPViPModel.from_pretrained folder, usable as --init)
                                    + trainer_state.pt (see `TrainerState`)
    RUN/checkpoints/latest          text file: the name of the newest complete step folder (only
                                    a `step_N` name inside checkpoints/ is followed: garbage, an
                                    absolute path or `..` is ignored, with a warning)
    RUN/checkpoints/best/           the best model by the validation metric (+ best.json)

A folder is written under a hidden `.NAME.UUID.tmp` name and renamed when complete, and `latest`
is replaced atomically after it, so a crash at any moment leaves the previous checkpoint usable;
a step whose files fail to load anyway (a disk that lost data) gives way to the previous complete
one, with a warning naming both (`load_with_fallback`). Pruning keeps the last K, the one `latest`
names and the last one written after a finite step (`last_good_checkpoint`, train/finite.py).
trainer_state.pt holds only tensors and plain Python containers: it loads with
`torch.load(weights_only=True)` (DESIGN.md section 6), so RNG states from numpy and `random` are
converted to tensors / tuples here; a state file that asks for more is refused in our words
(never torch's advice to retry with weights_only=False).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError

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


def _is_complete(folder: Path) -> bool:
    return (folder / STATE_NAME).is_file() and (folder / INFO_NAME).is_file()


def _pointer_target(root: Path) -> Path | None:
    """The step folder `latest` names, or None (with a warning when the pointer exists) unless it
    is text naming a step folder directly inside checkpoints/: binary garbage, an absolute path or
    a `..` is ignored, never followed."""
    pointer = root / LATEST_NAME
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_bytes()[:256].decode("utf-8").strip()
    except UnicodeDecodeError:
        log.warning("%s is not text; ignoring it and using the newest complete step folder", pointer)
        return None
    if not _STEP_DIR.fullmatch(name):
        log.warning("%s names %r, not a step folder inside %s (step_NNNNNNNN); ignoring it and using the "
                    "newest complete step folder", pointer, name[:80], root)
        return None
    return root / name


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder `latest` names; if the pointer is missing, stale or invalid, the newest complete step folder."""
    root = checkpoints_root(run_dir)
    candidate = _pointer_target(root)
    if candidate is not None:
        if _is_complete(candidate):
            return candidate
        log.warning("%s names %s, which is incomplete; using the newest step folder", root / LATEST_NAME,
                    candidate.name)
    complete = [path for _, path in step_checkpoints(run_dir) if _is_complete(path)]
    return complete[-1] if complete else None


def resume_candidates(run_dir: str | Path) -> list[Path]:
    """The checkpoints a resume may start from, in the order to try them: `latest_checkpoint`,
    then the older complete step folders, newest first."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return []
    newest_step = int(_STEP_DIR.fullmatch(latest.name).group(1))
    older = [path for step, path in step_checkpoints(run_dir) if step < newest_step and _is_complete(path)]
    return [latest, *reversed(older)]


def last_good_checkpoint(run_dir: str | Path, before: int | None = None) -> Path | None:
    """The newest complete step folder written after a finite step (checkpoint.json `loss_finite`
    not false, train/finite.py), of a step < `before` if given: pruning keeps it, and a run stopped
    by non-finite steps names it (`before` the step whose weights failed)."""
    for step, path in reversed(step_checkpoints(run_dir)):
        if _is_complete(path) and (before is None or step < before):
            try:
                if read_info(path).get("loss_finite", True) is not False:
                    return path
            except CheckpointLoadError:
                continue
    return None


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
    """Delete all but the newest `keep` step folders; never the one `latest` names, nor the last
    good one (`last_good_checkpoint`: a run that went non-finite keeps its way back)."""
    protected = {latest_checkpoint(run_dir), last_good_checkpoint(run_dir)}
    for _, path in step_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        if path not in protected:
            shutil.rmtree(path, ignore_errors=True)


class CheckpointLoadError(ValueError):
    """A step folder file that cannot be loaded: truncated, garbage, or refused (not tensor-only)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def read_info(checkpoint: str | Path) -> dict[str, Any]:
    """checkpoint.json of a step folder; CheckpointLoadError when it is not a JSON object."""
    path = Path(checkpoint) / INFO_NAME
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointLoadError(f"{path} cannot be read ({_first_line(exc)})") from None
    if not isinstance(info, dict):
        raise CheckpointLoadError(f"{path}: expected a JSON object, found {type(info).__name__}")
    return info


def select_checkpoint(run_dir: str | Path, config: dict[str, Any], digest: str, world_size: int, *,
                      resume: bool, weights_only: bool) -> Path | None:
    """The checkpoint a run starts from (None: from --init), or ConfigError saying why not.

    Without --resume an output holding checkpoints is refused (it would be overwritten); with it,
    the latest checkpoint must come from the same config (`config_digest`) and world size, unless
    --resume-weights-only, which takes only its weights (and step) under the new config. A step
    folder whose checkpoint.json cannot be read is passed over for the previous one, with a warning.
    """
    candidates = resume_candidates(run_dir)
    if not (resume or weights_only):
        if candidates:
            raise ConfigError(f"{run_dir} already holds checkpoints (latest {candidates[0].name}); pass --resume to "
                              f"continue that run, --resume-weights-only to start from its weights with this "
                              f"config, or choose another --output")
        return None
    for number, candidate in enumerate(candidates):
        try:
            check_resumable(candidate, config, digest, world_size, weights_only=weights_only)
        except CheckpointLoadError as exc:
            _warn_fallback(candidate, exc, candidates[number + 1:])
            continue
        return candidate
    if candidates:
        raise ConfigError(f"no checkpoint of {run_dir} can be read ({', '.join(p.name for p in candidates)}); "
                          f"remove {checkpoints_root(run_dir)} to start from init, or use another --output")
    log.info("no checkpoint in %s yet: starting from init", run_dir)
    return None


def check_resumable(checkpoint: Path, config: dict[str, Any], digest: str, world_size: int, *,
                    weights_only: bool) -> None:
    """ConfigError unless `checkpoint` may be resumed exactly under `config` (same digest and world
    size; anything goes with --resume-weights-only); CheckpointLoadError if its info is unreadable."""
    info = read_info(checkpoint)
    if weights_only:
        return
    if info.get("config_digest") != digest:
        changed = changed_keys(info.get("config", {}), config)
        detail = ", ".join(f"{k}: {info.get('config', {}).get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise ConfigError(f"{checkpoint} was written by another config ({detail or 'digest differs'}); --resume "
                          f"continues only the same run. Pass --resume-weights-only to load its weights "
                          f"under the new config, or use another --output")
    if info.get("world_size") != world_size:
        raise ConfigError(f"{checkpoint} was written by {info.get('world_size')} processes, this run has "
                          f"{world_size}; an exact resume needs the same world size (or --resume-weights-only)")


def _warn_fallback(failed: Path, reason: BaseException, rest: list[Path]) -> None:
    then = (f"falling back to the previous complete checkpoint {rest[0]}" if rest
            else "no older complete checkpoint is left")
    log.warning("checkpoint %s cannot be loaded: %s; %s", failed, reason, then)


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """trainer_state.pt of a step folder, unpickled with weights_only=True (tensors and containers only).

    CheckpointLoadError when the file is unreadable, or when it asks for anything but tensors and
    containers: then it is refused and never loaded (torch's advice to retry with weights_only=False
    is exactly what must not be done with a file of unknown origin)."""
    path = Path(checkpoint) / STATE_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointLoadError(f"{path}: refused: not a tensor-only file (it asks to unpickle Python objects, "
                                  f"which can run code); it was never loaded") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointLoadError(f"{path} cannot be read ({_first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointLoadError(f"{path}: trainer state format {found!r}, expected {STATE_FORMAT}")
    return state


def load_with_fallback(run_dir: str | Path, first: Path, load_model: Callable[[Path], Any],
                       check: Callable[[Path], None]) -> tuple[Path, Any, dict[str, Any]]:
    """(checkpoint, model, trainer state) of `first` (what select_checkpoint chose) or, when one of
    its files fails to load (a truncated model.safetensors, a refused trainer_state.pt), of the
    newest older complete step folder that loads, with a warning naming both. `check` applies the
    resume rules (check_resumable) to each fallback; ConfigError when no checkpoint loads."""
    first_step = int(_STEP_DIR.fullmatch(first.name).group(1)) if _STEP_DIR.fullmatch(first.name) else None
    older = [path for step, path in step_checkpoints(run_dir)
             if first_step is not None and step < first_step and _is_complete(path)]
    candidates = [first, *reversed(older)]
    failures = []
    for number, candidate in enumerate(candidates):
        try:
            if number:
                check(candidate)
            state = load_trainer_state(candidate)
            try:
                model = load_model(candidate)
            except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as exc:
                raise CheckpointLoadError(f"{candidate} model weights cannot be loaded ({_first_line(exc)})") from None
        except CheckpointLoadError as exc:
            failures.append(str(exc))
            _warn_fallback(candidate, exc, candidates[number + 1:])
            continue
        return candidate, model, state
    raise ConfigError(f"no checkpoint of {run_dir} loads: {'; '.join(failures)}. Remove the broken step folders "
                      f"(or {checkpoints_root(run_dir)} to start from init), or use another --output")


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
