"""One rank of the two-process accumulation test: `torchrun --nproc_per_node 2 dist_accum_worker.py CLIP OUT`.

Rank r takes samples [4r, 4r+4) of an 8-sample pool, wraps the model in DDP and computes the
gradients of the global 8-sample OCL loss twice: accum_freq=1 at batch 4 and accum_freq=2 at
batch 2 (no_sync on the first micro-batch). Saves both (DDP-averaged) to OUT/rank{r}.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.clip_vip import CLIPViPModel  # noqa: E402
from tests.train.trainer_helpers import batch_of, make_pool  # noqa: E402
from train.config import loss_features  # noqa: E402
from train.step import FeatureModel, accumulate_gradients, make_loss_fn, model_inputs  # noqa: E402


def main() -> None:
    clip_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = CLIPViPModel.from_clip(clip_dir, num_proxies=4, temporal_size=4).train()
    ddp = DistributedDataParallel(FeatureModel(model), broadcast_buffers=False)
    features = loss_features("ocl", "both")
    loss_fn = make_loss_fn("ocl", features, local_loss=False)
    pool = make_pool(clip_dir, 8, num_frames=4)
    mine = torch.arange(4 * rank, 4 * rank + 4)
    results = {}
    for name, parts in (("whole", [mine]), ("accum2", list(mine.chunk(2)))):
        model.zero_grad(set_to_none=True)
        loss, _ = accumulate_gradients(ddp, [model_inputs(batch_of(pool, p), features) for p in parts], loss_fn)
        results[name] = {"loss": loss, "grads": {n: p.grad.clone() for n, p in model.named_parameters()}}
    torch.save(results, out_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
