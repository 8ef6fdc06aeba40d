"""One rank of the two-process loss test: `torchrun --nproc_per_node 2 dist_loss_worker.py IN OUT`.

Reads the global batch (torch.save'd dict), takes this rank's rows, computes every loss variant
(global and local-loss mode) with gathered features, and saves the loss and the gradients of this
rank's features and of the logit scale to OUT/rank{r}.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.loss import infonce_loss, ocl_loss  # noqa: E402


def main() -> None:
    in_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    batch = torch.load(in_path, weights_only=True)
    rows = batch["video"].shape[0] // world
    mine = slice(rank * rows, (rank + 1) * rows)
    results = {}
    for variant in batch["variants"]:
        for local_loss in (False, True):
            feats = [batch[name][mine].clone().requires_grad_() for name in ("video", "subtitle", "caption", "frame")]
            log_scale = batch["log_scale"].clone().requires_grad_()
            if variant == "infonce":
                loss = infonce_loss(feats[0], feats[1], log_scale.exp(), local_loss=local_loss)
            else:
                loss = ocl_loss(*feats, log_scale.exp(), variant=variant, local_loss=local_loss)
            loss.backward()
            grads = [f.grad if f.grad is not None else torch.zeros_like(f) for f in feats]
            results[f"{variant}|{local_loss}"] = {"loss": loss.detach(), "grads": torch.stack(grads),
                                                  "scale_grad": log_scale.grad}
    torch.save(results, out_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
