"""One rank of the two-process non-finite test: `torchrun --nproc_per_node 2 dist_finite_worker.py CLIP OUT`.

1. `step_health` with a NaN loss on rank 1 only, then an inf grad norm on rank 0 only: every rank
   must see the same verdict.
2. `run_training` for 4 steps on the memory loader, rank 1's second batch NaN: both ranks skip
   step 2. Each rank writes its AdamW step counts and a checksum of its weights to OUT/rank{r}.json.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.train.trainer_helpers import memory_loader  # noqa: E402
from train.config import load_setup  # noqa: E402
from train.distributed import setup_distributed  # noqa: E402
from train.finite import step_health  # noqa: E402
from train.loop import _Trainer  # noqa: E402


def _rank1_poisoned_loader():
    inner = memory_loader()

    def make(data_cfg, **kwargs):
        for number, batch in enumerate(inner(data_cfg, **kwargs)):
            if kwargs["rank"] == 1 and number == 1:
                batch.video = torch.full_like(batch.video, math.nan)
            yield batch

    return make


def main() -> None:
    clip_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    env = setup_distributed()
    rank = env.rank
    finite, nan, inf = torch.tensor(1.0), torch.tensor(math.nan), torch.tensor(math.inf)
    result = {
        "health_when_rank1_loss_is_nan": list(vars(step_health(env, nan if rank == 1 else finite, finite)).values()),
        "health_when_rank0_grad_is_inf": list(vars(step_health(env, finite, inf if rank == 0 else finite)).values()),
    }
    setup = load_setup(None, {"init": str(clip_dir), "num_frames": 4, "batch_size": 2, "max_text_length": 16,
                              "lr": 1e-3, "max_steps": 4, "log_every": 1, "save_every": 100, "warmup_fraction": 0.0,
                              "temporal_size": 4, "progress": False, "captioner_id": "memory", "shards": "memory"})
    trainer = _Trainer(env, setup, out_dir / "run", _rank1_poisoned_loader(), None)
    trainer.run(resume=False, weights_only=False)
    state = trainer.optimizer.state_dict()["state"]
    result["adam_steps"] = sorted({float(s["step"]) for s in state.values()})
    result["nonfinite_steps"] = trainer.progress.nonfinite_steps
    result["weights_checksum"] = float(sum(p.double().sum() for p in trainer.model.parameters()))
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
