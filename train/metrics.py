"""Rank 0's run logs: RUN/metrics.jsonl (one row per logged step) and TensorBoard events.

Rows are strict JSON: a NaN/inf value (a skipped non-finite step) is written as null, and the
row lists the nulled keys under "nonfinite". On resume from step N the rows of steps after N
(written before the crash, then recomputed) are dropped from metrics.jsonl and TensorBoard is
told to purge them, so both read as one run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from train.finite import json_safe
from vipstream.atomic import write_text_atomic

METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIRNAME = "tensorboard"


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a/b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Appends rows to metrics.jsonl and scalars to TensorBoard; open on rank 0 only."""

    def __init__(self, run_dir: str | Path, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / METRICS_NAME
        self._truncate_after(start_step)
        self.tensorboard_dir = Path(run_dir) / TENSORBOARD_DIRNAME
        self._writer = SummaryWriter(str(self.tensorboard_dir), purge_step=start_step + 1)
        self._file = self.path.open("a")

    def _truncate_after(self, step: int) -> None:
        """Keep only rows of steps <= `step` (atomic rewrite); a line cut short by a kill is dropped."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def log(self, step: int, row: dict[str, Any]) -> None:
        """Append `row` at `step`; a non-finite value is written as null and named under "nonfinite"
        (train/finite.json_safe), so every line stays JSON."""
        row = json_safe({"step": step, **row})
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        for name, value in flatten(row).items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        self._file.close()
        self._writer.flush()
        self._writer.close()
