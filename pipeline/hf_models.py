"""What the pipeline's model jobs (`vipstream caption`, `vipstream transcribe`) share about
loading a Hugging Face model by hub name or local folder: a local folder is checked before any
Ray work starts (the weights themselves are loaded only by the model actors), weight-loading
progress bars are kept off the job's own bar, and the dtype keyword follows the installed
transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: What a saved model folder holds its weights in.
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")


def quiet_transformers() -> None:
    """Weight-loading progress bars would interleave with the job's own bar."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - cosmetic only
        pass


def dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """transformers >= 4.56 calls it `dtype`; older releases (pyproject allows 4.40+) `torch_dtype`."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def looks_like_path(name: str) -> bool:
    """Whether `name` is meant as a local folder rather than a hub name (`org/model`)."""
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1


def local_model_problem(name: str) -> str | None:
    """Why `name`, meant as a local folder, cannot be a model (None: a hub name, or a folder that
    holds weights), so a typo or an empty folder is said before any Ray work starts."""
    if looks_like_path(name) and not Path(name).is_dir():
        return "no such folder"
    if Path(name).is_dir() and not any(next(Path(name).glob(p), None) for p in WEIGHT_FILES):
        return f"the folder holds no weights ({', '.join(WEIGHT_FILES)})"
    return None
