"""What the pipeline's model jobs (`vipstream caption`, `vipstream transcribe`) share about
loading a Hugging Face model by hub name or local folder: a local folder is checked before any
Ray work starts (the weights themselves are loaded only by the model actors), weight-loading
progress bars are kept off the job's own bar, the dtype keyword follows the installed
transformers, and a model actor's load failure is found again behind Ray's error.
"""

from __future__ import annotations

import re
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


def load_error_in(exc: BaseException, error_type: type[BaseException], message: str) -> str | None:
    """The message of the `error_type` (a job's model-load error) behind a Ray / Ray Data failure.

    An actor whose constructor raised surfaces as ActorDiedError carrying only the remote
    traceback as text, so when no such exception is on the cause chain, the text is searched for
    `error_type`'s name followed by `message` (a regex; its match is returned)."""
    seen, current = 0, exc
    while current is not None and seen < 20:
        if isinstance(current, error_type):
            return str(current).splitlines()[-1]
        current = current.__cause__ or current.__context__
        seen += 1
    match = re.search(rf"{error_type.__name__}: ({message})", str(exc))
    return match.group(1) if match else None
