"""The training loop: one function every launcher runs (plain process, torchrun rank, Ray worker).

    run_training(setup, output, resume=..., ...) -> summary dict

Per step: accum_freq micro-batches from the streaming loader (the wait is timed), exact
contrastive gradient accumulation (train/step.py), unscale + grad-norm clip, AdamW step, warm-up
+ cosine schedule. Every log_every steps rank 0 writes metrics.jsonl / TensorBoard; every
save_every steps (and at the end) a checkpoint; every val_every steps rank 0 validates
(train.evaluate, imported lazily) and keeps checkpoints/best/. The loader is told how many
micro-batches this rank already consumed, so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from model.clip_vip import CLIPViPModel, is_clip_vip_checkpoint
from train.checkpoint import (check_resumable, checkpoints_root, last_good_checkpoint, latest_checkpoint,
                              load_with_fallback, remove_stale_temporaries, rng_state, save_best, save_checkpoint,
                              select_checkpoint, set_rng_state)
from train.config import TrainConfig, TrainSetup, loss_features
from train.distributed import (DistEnv, all_gather_objects, barrier, mean_over_ranks, setup_distributed,
                               teardown_distributed)
from train.finite import NonFiniteGuard, json_safe, step_health, weights_finite
from train.metrics import MetricsLog
from train.preflight import check_text_length
from train.precision import autocast_factory, resolve_precision
from train.run_lock import run_lock
from train.schedule import make_scheduler
from train.step import FeatureModel, accumulate_gradients, make_loss_fn, model_inputs
from vipstream.atomic import write_text_atomic

log = logging.getLogger(__name__)

CONFIG_FILENAME = "config.yaml"
SUMMARY_FILENAME = "summary.json"

#: (metrics, checkpoint folder or None) -> None; called on every rank at the same points (Ray
#: Train's `report` is a barrier and must be called equally often by every worker).
Reporter = Callable[[dict[str, Any], "Path | None"], None]
LoaderFactory = Callable[..., Iterable[Any]]


# ------------------------------------------------------------------------------- building blocks
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def load_model(source: str | Path, cfg: TrainConfig) -> CLIPViPModel:
    """A CLIP-ViP checkpoint folder via from_pretrained, anything else (hub name, CLIP folder) via
    from_clip, its logit scale set to `logit_scale_init` (the reference's start from CLIP)."""
    if is_clip_vip_checkpoint(source):
        return CLIPViPModel.from_pretrained(source)
    return CLIPViPModel.from_clip(str(source), num_proxies=cfg.num_proxies, temporal_size=cfg.temporal_size,
                                  logit_scale_init=cfg.logit_scale_init)


def default_loader_factory(data_cfg: Any, **kwargs: Any) -> Iterable[Any]:
    from train.data import make_train_loader

    return make_train_loader(data_cfg, **kwargs)


def lookup_metric(metrics: dict[str, Any], name: str) -> float:
    """"t2v/R@1" in evaluate_model's result: tried as a path, then under "plain" (non-DSL numbers)."""
    for root in (metrics, metrics.get("plain", {})):
        node: Any = root
        for part in name.split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float)):
            return float(node)
    raise KeyError(f"validation metric {name!r} not found; evaluate_model returned keys {sorted(metrics)}")


@dataclass
class Progress:
    """What the run has done so far (saved in checkpoints)."""

    step: int = 0
    samples: int = 0  # global samples trained on
    counts: dict[str, int] = field(default_factory=dict)  # this rank's loader skip counts
    best: float | None = None  # best validation metric so far
    nonfinite_steps: int = 0  # steps whose update was skipped (train/finite.py)


@dataclass
class Window:
    """Timing since the last logged step."""

    steps: int = 0
    samples: int = 0
    data_s: float = 0.0
    total_s: float = 0.0

    def add(self, samples: int, data_s: float, total_s: float) -> None:
        self.steps += 1
        self.samples += samples
        self.data_s += data_s
        self.total_s += total_s


class _Batches:
    """Endless iteration over the loader (a finite pass, e.g. samples_per_epoch, is restarted)."""

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader
        self.iterator: Iterator[Any] = iter(loader)

    def next(self) -> Any:
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            try:
                return next(self.iterator)
            except StopIteration:
                raise RuntimeError("the training loader yielded no batch (no finished shard? batch_size "
                                   "larger than the data?)") from None


# ----------------------------------------------------------------------------------------- run
def run_training(setup: TrainSetup, output: str | Path, *, resume: bool = False, resume_weights_only: bool = False,
                 make_loader: LoaderFactory | None = None, report: Reporter | None = None,
                 device: torch.device | None = None, lock: bool = True) -> dict[str, Any]:
    """Train as configured, writing RUN=`output`; returns the summary (complete on rank 0).

    Joins the process group of its launcher (train/distributed.py). `make_loader` defaults to
    `train.data.make_train_loader` (tests pass in-memory batches); `report` is Ray Train's hook.
    `lock`: rank 0 holds RUN/.vipstream.lock for the run (train/run_lock.py); False when the
    caller (a launcher) holds it.
    """
    env = setup_distributed(device=device)
    try:
        with run_lock(output) if lock and env.is_main else contextlib.nullcontext():
            return _Trainer(env, setup, Path(output), make_loader or default_loader_factory, report).run(
                resume=resume, weights_only=resume_weights_only)
    finally:
        teardown_distributed(env)


class _Trainer:
    def __init__(self, env: DistEnv, setup: TrainSetup, run_dir: Path, make_loader: LoaderFactory,
                 report: Reporter | None) -> None:
        self.env, self.setup, self.run_dir = env, setup, run_dir
        self.cfg, self.data = setup.train, setup.data
        self.make_loader, self.report = make_loader, report
        self.device = env.device

    # ------------------------------------------------------------------------------- setup
    def _prepare(self, resume: bool, weights_only: bool) -> None:
        env, cfg = self.env, self.cfg
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.run_dir)
        barrier(env)
        flat = self.setup.to_dict()
        self.start = select_checkpoint(self.run_dir, flat, self.setup.digest, env.world_size,
                                       resume=resume, weights_only=weights_only)
        if env.is_main:
            (self.run_dir / CONFIG_FILENAME).write_text(_yaml(flat))
        seed_everything(cfg.seed)
        state = None
        if self.start is None:
            self.model = load_model(cfg.init, cfg)
        else:  # a step folder that fails to load falls back to the previous complete one
            self.start, self.model, state = load_with_fallback(
                self.run_dir, self.start, lambda path: load_model(path, cfg),
                lambda path: check_resumable(path, flat, self.setup.digest, env.world_size, weights_only=weights_only))
        check_text_length(self.data.max_text_length, self.model.clip.config.text_config.max_position_embeddings,
                          self.start or cfg.init)  # a hub --init is known only once loaded
        self.processor_dir = self._processor_dir()
        self.model.to(self.device)
        if cfg.gradient_checkpointing:
            self.model.set_gradient_checkpointing(True)
        self.model.train()

        self.features = loss_features(cfg.loss, self.data.text_source)
        wrapped: torch.nn.Module = FeatureModel(self.model)
        if env.distributed:
            wrapped = DistributedDataParallel(wrapped, device_ids=[self.device] if self.device.type == "cuda" else None,
                                              broadcast_buffers=False)
        if cfg.compile:
            wrapped = torch.compile(wrapped)
        self.wrapped = wrapped
        self.loss_fn = make_loss_fn(cfg.loss, self.features, cfg.local_loss)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.autocast = autocast_factory(self.precision, self.device)

        self.optimizer = torch.optim.AdamW(self.model.parameter_groups(cfg.weight_decay), lr=cfg.lr,
                                           betas=cfg.betas, eps=cfg.eps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.progress = Progress()
        if state is not None:
            self.progress.step = int(state["step"])
            self.progress.samples = int(state["samples"])
            self.progress.nonfinite_steps = int(state.get("nonfinite_steps", 0))
            if not weights_only:
                self.optimizer.load_state_dict(state["optimizer"])
                if state["scaler"]:
                    self.scaler.load_state_dict(state["scaler"])
                mine = state["ranks"][env.rank]
                set_rng_state(mine["rng"])
                self.progress.counts = dict(mine["counts"])
                self.progress.best = state.get("best")
            log.info("resuming from %s at step %d%s", self.start, self.progress.step,
                     " (weights only)" if weights_only else "")
        self.scheduler = make_scheduler(self.optimizer, cfg, self.progress.step)
        self.loader = self.make_loader(self.data, processor_dir=self.processor_dir, rank=env.rank,
                                       world_size=env.world_size, seed=cfg.seed,
                                       start_batch=self.progress.step * cfg.accum_freq)
        self.metrics = MetricsLog(self.run_dir, self.progress.step) if env.is_main else None
        self.guard = NonFiniteGuard(cfg.max_nonfinite_steps, announce=env.is_main, total=self.progress.nonfinite_steps)

    def _processor_dir(self) -> Path | str:
        """The tokenizer/processor files the model carries, written to a folder of this process
        (local disk, removed at the end): the loader's workers read it whenever they start, and
        neither a pruned checkpoint nor an output folder other nodes cannot see may vanish under them."""
        if not self.model.processor_files:
            return self.cfg.init
        self._processor_tmp = tempfile.TemporaryDirectory(prefix="vipstream-processor-")
        folder = Path(self._processor_tmp.name)
        for name, data in self.model.processor_files.items():
            (folder / name).write_bytes(data)
        return folder

    # -------------------------------------------------------------------------------- loop
    def run(self, *, resume: bool, weights_only: bool) -> dict[str, Any]:
        self._prepare(resume, weights_only)
        cfg, env = self.cfg, self.env
        global_batch = self.data.batch_size * env.world_size * cfg.accum_freq
        batches = _Batches(self.loader)
        start_step = self.progress.step
        started = time.perf_counter()
        totals, window = Window(), Window()
        last_loss: dict[str, float] = {}
        saved_at = None
        save_due = False  # a checkpoint due on a non-finite step waits for the next finite one
        bar = _progress_bar(env.is_main and cfg.progress, start_step, cfg.max_steps)
        if env.is_main:
            log.info("training %s -> %s: %d steps, global batch %d (%d x %d ranks x accum %d), %s, device %s",
                     cfg.init, self.run_dir, cfg.max_steps, global_batch, self.data.batch_size, env.world_size,
                     cfg.accum_freq, self.precision, self.device)
        while self.progress.step < cfg.max_steps:
            step_started = time.perf_counter()
            micro = [self._inputs(batches.next()) for _ in range(cfg.accum_freq)]
            data_s = time.perf_counter() - step_started
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.zero_grad(set_to_none=True)
            loss, terms = accumulate_gradients(self.wrapped, [inputs for inputs, _ in micro], self.loss_fn,
                                               self.autocast, self.scaler)
            if self.scaler.is_enabled():
                self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                       cfg.grad_clip_norm if cfg.grad_clip_norm > 0 else math.inf)
            health = step_health(self.env, loss, grad_norm)  # the same on every rank
            if not health.finite:  # skip the update (weights and optimizer state unchanged)
                if self.scaler.is_enabled():
                    self.scaler.update()  # lowers the loss scale, as its own skip would
            elif self.scaler.is_enabled():
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.model.clamp_logit_scale_()  # in place to [0, ln 200], outside the graph (the reference's clamp)
            self.scheduler.step()
            self.progress.step += 1
            self.progress.samples += global_batch
            for _, counts in micro:
                for name, value in counts.items():
                    self.progress.counts[name] = self.progress.counts.get(name, 0) + int(value)
            step_s = time.perf_counter() - step_started
            window.add(global_batch, data_s, step_s)
            totals.add(global_batch, data_s, step_s)
            step = self.progress.step
            self.guard.record(step, health, counts_toward_stop=health.counts_toward_stop(self.scaler.is_enabled()))
            self.progress.nonfinite_steps = self.guard.total
            if step % cfg.log_every == 0 or step == cfg.max_steps or not health.finite:
                last_loss = self._log(step, loss, terms, grad_norm, lr, window)
                bar.set_postfix(loss=f"{last_loss['loss']:.4f}",
                                samples_s=f"{window.samples / max(window.total_s, 1e-9):.1f}")
                window = Window()
            bar.update(1)
            self.guard.stop_if_exhausted(step, lambda before: last_good_checkpoint(self.run_dir, before), lr)
            if cfg.val_every and step % cfg.val_every == 0 and health.finite:
                self._validate(step)
            save_due = save_due or step % cfg.save_every == 0
            if (save_due and health.finite) or step == cfg.max_steps:
                saved_at = self._save(step, last_loss, health.finite) or saved_at
                save_due = False
        bar.close()
        return self._finish(start_step, started, totals, last_loss, saved_at)

    def _inputs(self, batch: Any) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """(model inputs on the device, the batch's skip counts)."""
        # pinned batches (pin_memory) copy to the GPU asynchronously
        batch = batch.to(self.device, non_blocking=True) if self.device.type == "cuda" else batch.to(self.device)
        inputs = model_inputs(batch, self.features)
        if self.precision == "fp32":  # a bfloat16 pixel stream meets an fp32 model only under autocast
            inputs = {k: v.float() if v is not None and v.is_floating_point() else v for k, v in inputs.items()}
        return inputs, dict(getattr(batch, "counts", None) or {})

    def _log(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor], grad_norm: torch.Tensor,
             lr: float, window: Window) -> dict[str, float]:
        """Averages loss/terms/grad norm over ranks (they differ with local_loss), rank 0 writes the row."""
        names = list(terms)
        values = torch.stack([loss.float(), *[terms[n].float() for n in names], grad_norm.float().to(loss.device)])
        values = mean_over_ranks(self.env, values).tolist()
        counts = {}
        for rank_counts in all_gather_objects(self.env, self.progress.counts):
            for name, value in rank_counts.items():
                counts[name] = counts.get(name, 0) + value
        row = {"loss": values[0], **{f"loss/{n}": v for n, v in zip(names, values[1:-1])},
               "lr": lr, "logit_scale": float(self.model.logit_scale.detach()), "grad_norm": values[-1],
               "samples": self.progress.samples, "nonfinite_steps": self.progress.nonfinite_steps,
               "samples_per_s": window.samples / max(window.total_s, 1e-9),
               "data_wait_fraction": window.data_s / max(window.total_s, 1e-9),
               "skipped": counts}
        if self.metrics is not None:
            self.metrics.log(step, row)
        return {"loss": values[0], **{n: v for n, v in zip(names, values[1:-1])}}

    def _validate(self, step: int) -> None:
        """Rank 0 evaluates retrieval on val_data and keeps checkpoints/best/; the others wait."""
        if self.env.is_main:
            from train.evaluate import evaluate_model

            metrics = evaluate_model(self.model, self.cfg.val_data, self.processor_dir,
                                     num_frames=self.data.num_frames,
                                     batch_size=self.cfg.val_batch_size or self.data.batch_size, device=self.device,
                                     max_text_length=self.data.max_text_length, progress=False,
                                     allow_missing=True)  # dropped videos are logged in the val row
            self.model.train()
            value = lookup_metric(metrics, self.cfg.val_metric)
            self.metrics.log(step, {"val": metrics, "val_metric": value})
            log.info("step %d: validation %s = %.4f (best %s)", step, self.cfg.val_metric, value, self.progress.best)
            if self.progress.best is None or value > self.progress.best:
                self.progress.best = value
                save_best(self.run_dir, self.model, {"step": step, "metric": self.cfg.val_metric, "value": value,
                                                     "metrics": metrics})
        barrier(self.env)

    def _save(self, step: int, last_loss: dict[str, float], loss_finite: bool = True) -> Path | None:
        """Every rank contributes its RNG state and skip counts; rank 0 writes; all report.

        Never from non-finite weights (every rank sees the same weights, so all skip alike: None);
        `loss_finite` False (the run ended on a skipped step) is recorded in checkpoint.json, so
        pruning keeps the last good checkpoint."""
        if not weights_finite(self.model):
            log.error("step %d: the weights are not finite; no checkpoint written (the last good one is %s)",
                      step, last_good_checkpoint(self.run_dir))
            return None
        ranks = all_gather_objects(self.env, {"rng": rng_state(), "counts": dict(self.progress.counts)})
        folder = checkpoints_root(self.run_dir) / f"step_{step:08d}"
        if self.env.is_main:
            state = {"step": step, "samples": self.progress.samples, "micro_batches": step * self.cfg.accum_freq,
                     "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                     "ranks": ranks, "best": self.progress.best, "nonfinite_steps": self.progress.nonfinite_steps}
            info = {"world_size": self.env.world_size, "config_digest": self.setup.digest,
                    "config": self.setup.to_dict(), "samples": self.progress.samples, "loss_finite": loss_finite}
            folder = save_checkpoint(self.run_dir, step, self.model, state, info, self.cfg.keep_checkpoints)
            log.info("step %d: checkpoint %s", step, folder)
        barrier(self.env)
        if self.report is not None:
            self.report({"step": step, **last_loss}, folder)
        return folder

    def _finish(self, start_step: int, started: float, totals: Window, last_loss: dict[str, float],
                saved_at: Path | None) -> dict[str, Any]:
        previous = self.run_dir / SUMMARY_FILENAME
        if totals.steps == 0 and previous.is_file():  # --resume of a finished run: nothing new to say
            log.info("%s already finished at step %d", self.run_dir, self.progress.step)
            if self.metrics is not None:
                self.metrics.close()
            barrier(self.env)
            return json.loads(previous.read_text())
        summary = {
            "run_dir": str(self.run_dir), "steps": self.progress.step, "start_step": start_step,
            "steps_this_session": totals.steps, "samples": self.progress.samples,
            "seconds": time.perf_counter() - started,
            "samples_per_s": totals.samples / max(totals.total_s, 1e-9),
            "data_wait_fraction": totals.data_s / max(totals.total_s, 1e-9),
            "final": last_loss, "world_size": self.env.world_size, "precision": self.precision,
            "device": str(self.device), "config_digest": self.setup.digest,
            "checkpoint": str(saved_at or latest_checkpoint(self.run_dir) or ""),
            "best": self.progress.best, "nonfinite_steps": self.progress.nonfinite_steps,
            "nonfinite_steps_this_session": self.guard.skipped_steps,
            "metrics": str(self.run_dir / "metrics.jsonl"), "tensorboard": str(self.run_dir / "tensorboard"),
        }
        if self.metrics is not None:
            self.metrics.close()
            write_text_atomic(self.run_dir / SUMMARY_FILENAME, json.dumps(json_safe(summary), indent=2, sort_keys=True,
                                                                          default=str, allow_nan=False))
        barrier(self.env)
        return summary


def _yaml(flat: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}, sort_keys=False)


def _progress_bar(enabled: bool, start: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True)
