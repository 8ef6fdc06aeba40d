"""`vipstream demo`: the paper in miniature, end to end on a CPU, through the real commands.

CLIP-ViP's claim: post-pretraining CLIP on videos with noisy ASR subtitles works better when every
clip also carries an image caption of its middle frame (Omnisource Cross-modal Learning), and a
video model beats a per-frame image model on text-video retrieval. The demo builds a world where
that can be seen in minutes:

 1. a raw corpus of long videos whose subtitles talk like ASR (filler, off-topic talk, only partly
    about the picture), and a held-out retrieval set of time-reversed video pairs whose captions
    state appearance and direction (tools/make_synthetic_corpus.py, tools/demo_data.py);
 2. a stand-in for pretrained CLIP: a tiny CLIP trained on single frames (appearance only);
 3. a stand-in for the image captioner (BLIP/OFA): a tiny ViT + GPT-2 trained on frames;
 4. `vipstream build` + `vipstream caption`, the retrieval set built from its annotations;
 5. `vipstream train` CLIP-ViP from the stand-in CLIP, on subtitles only (`vs`) and with OCL;
 6. `vipstream eval`: the stand-in CLIP as CLIP4Clip-meanP (`--baseline meanpool`), CLIP-ViP vs,
    CLIP-ViP OCL, and the time-order test (tools/order_test.py: own video vs its reversed twin);
    a table, WORKDIR/report.md and WORKDIR/report.png.

Each step is printed as the command a user would type, then run through the same entry point
(`vipstream.cli.main` or the tool's `main`), in this process. Steps whose output is complete are
skipped on a rerun of the same plan, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from vipstream.atomic import write_text_atomic
from vipstream.demo_digests import stage_digests

log = logging.getLogger("vipstream.demo")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
CAPTIONER_ID = "stand-in-captioner"
PLAN_FILE = "demo_plan.json"
DIGESTS_FILENAME = "digests.json"  # vipstream/demo_digests.py: one digest per stage's output
METHODS = (("meanpool", "CLIP4Clip-meanP (stand-in CLIP, frames averaged)"),
           ("vs", "CLIP-ViP, subtitles only (vs)"),
           ("ocl", "CLIP-ViP, subtitles + captions (OCL)"))


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo is. `full` is `make demo` (under 15 minutes on 2 CPU cores); `fast` is
    the test suite's end-to-end run."""

    seed: int = 0
    corpus_videos: int = 40
    min_duration_s: float = 30.0
    max_duration_s: float = 60.0
    # neighbouring scenes that differ only in motion (tools/make_synthetic_corpus.plan_scenes): without
    # them a batch is always solved by colours alone and nothing pushes the model to see time
    reverse_probability: float = 0.5
    retrieval_pairs: int = 24
    clip_steps: int = 400
    captioner_steps: int = 500
    train_steps: int = 300
    train_batch_size: int = 32
    videos_per_shard: int = 4
    # The stand-ins read 32 px (CLIP) and 48 px (captioner) frames: shards at 224 px would only
    # cost decode time. Real data: the default 224 (CLIP's input size).
    short_side_px: int = 96
    # kernels whose rounding does not depend on the CPU's instruction-set level (vipstream/numerics.py;
    # across machines the table still differed: README); off: the CPU's fastest kernels
    portable_numerics: bool = True


FAST = DemoPlan(corpus_videos=6, min_duration_s=30.0, max_duration_s=40.0, retrieval_pairs=6, clip_steps=60,
                captioner_steps=60, train_steps=12, train_batch_size=8, videos_per_shard=2)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="the paper in miniature: synthetic corpus -> stand-in models -> build, caption, train, eval",
        description=__doc__.split("\n\n")[0] + " Writes WORKDIR/report.md and WORKDIR/report.png.")
    parser.add_argument("--workdir", type=Path, default=Path("demo_out"))
    parser.add_argument("--seed", type=int, default=0, help="seed of every step (data, stand-ins, training)")
    parser.add_argument("--fast", action="store_true", help="a few videos and steps (the test suite's run)")
    parser.add_argument("--train-steps", type=int, default=None, help="CLIP-ViP steps per run (default: the plan's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a WORKDIR that holds a demo of another plan")
    parser.add_argument("--native-numerics", action="store_true",
                        help="use the CPU's fastest torch kernels: quicker, but the table then depends on the "
                             "machine's instruction set (default: portable kernels, whose table does not; two machines "
                             "still printed two tables: README, vipstream.demo_digests)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vipstream.config import ConfigError

    plan = replace(FAST if args.fast else DemoPlan(), seed=args.seed, portable_numerics=not args.native_numerics)
    if args.train_steps is not None:
        plan = replace(plan, train_steps=args.train_steps)
    _choose_numerics(plan.portable_numerics)
    work: Path = args.workdir
    _prepare_workdir(work, plan, args.overwrite)
    _one_compute_thread()
    demo = _Demo(work, plan)
    started = time.perf_counter()
    try:
        demo.run_all()
    except _StepFailed as exc:
        print(f"\nvipstream demo: step {exc} failed; fix it and rerun the same command to continue", file=sys.stderr)
        return 1
    except ConfigError:
        raise
    demo.timings = _merge_timings(work, demo.timings)
    demo.timings["total (steps run in this workdir)"] = round(sum(demo.timings.values()), 1)
    demo.timings["this session"] = round(time.perf_counter() - started, 1)
    results = {name: json.loads((work / "eval" / f"{name}.json").read_text()) for name, _ in METHODS}
    for name, _ in METHODS:
        results[name]["order"] = json.loads((work / "eval" / f"{name}_order.json").read_text())
    table = results_table(results)
    print("\n" + table)
    digests = stage_digests(work)
    write_text_atomic(work / DIGESTS_FILENAME, json.dumps(digests, indent=2) + "\n")
    write_report(work, plan, demo, results, table, digests)
    print(f"\nreport: {work / 'report.md'} and {work / 'report.png'}; this session {demo.timings['this session']:.0f} s")
    return 0


def _merge_timings(work: Path, new: dict[str, float]) -> dict[str, float]:
    """Step wall times of every session in this WORKDIR (a resumed demo keeps the first run's)."""
    path = work / "demo_timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings.update(new)
    path.write_text(json.dumps(timings, indent=1) + "\n")
    return dict(timings)


def _choose_numerics(portable: bool) -> None:
    """Portable kernels (vipstream/numerics.py) for this process and every step it starts, set
    before any tensor work so this process's own training uses them too."""
    from vipstream.numerics import use_portable_numerics

    if not portable:
        print("numerics: native (the CPU's fastest kernels; the table depends on the machine)", flush=True)
        return
    if use_portable_numerics():
        print("numerics: portable (the table does not depend on the CPU's instruction set; --native-numerics "
              "is faster)", flush=True)
    else:
        log.warning("numerics: this process computed before the portable kernels were chosen; its steps keep "
                    "the native ones, so the table may depend on the machine")


def _one_compute_thread() -> None:
    """The in-process steps (stand-ins, training, eval) use one torch thread: on 2 cores the
    other one decodes video (the loader worker, Ray's tasks), and tiny matrices gain nothing from
    more threads, which on a busy machine spin against each other (a stand-in step ran 40x slower
    with 2 threads at load 7 than with 1)."""
    import torch

    torch.set_num_threads(1)


class _StepFailed(Exception):
    pass


def _prepare_workdir(work: Path, plan: DemoPlan, overwrite: bool) -> None:
    """A demo resumes in its own WORKDIR; another plan's WORKDIR is replaced only with --overwrite,
    and a folder that is not a demo's is never touched."""
    from vipstream.config import ConfigError

    plan_path = work / PLAN_FILE
    if work.exists() and any(work.iterdir()):
        if not plan_path.is_file():
            raise ConfigError(f"--workdir {work} is not empty and holds no {PLAN_FILE}: not a demo's folder; "
                              f"choose another --workdir or remove it")
        if json.loads(plan_path.read_text()) != asdict(plan):
            if not overwrite:
                raise ConfigError(f"--workdir {work} holds a demo of another plan ({plan_path}); add --overwrite "
                                  f"to start over, or choose another --workdir")
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(asdict(plan), indent=1) + "\n")


class _Demo:
    """The steps, in order; each prints its command, runs it unless its output is complete."""

    def __init__(self, work: Path, plan: DemoPlan):
        self.work, self.plan = work, plan
        self.timings: dict[str, float] = {}
        self.commands: list[str] = []
        self.count = 0

    def step(self, title: str, command: list[str], done: Path, runner: Callable[[list[str]], int]) -> None:
        self.count += 1
        shown = shlex.join(command)
        self.commands.append(shown)
        print(f"\n[{self.count}] {title}\n$ {shown}", flush=True)
        if done.exists():
            print(f"    (done already: {done})", flush=True)
            return
        started = time.perf_counter()
        code = runner(command)
        self.timings[title] = round(time.perf_counter() - started, 1)
        if code != 0:
            raise _StepFailed(f"[{self.count}] {title!r} (exit {code})")
        print(f"    ({self.timings[title]:.0f} s)", flush=True)

    def run_all(self) -> None:
        w, p = self.work, self.plan
        corpus, models, out, retrieval_out = w / "corpus", w / "models", w / "out", w / "retrieval_out"
        seed = str(p.seed)
        self.step("synthetic corpus (ASR-style subtitles) + held-out retrieval set",
                  ["vipstream", "synth", "--output", str(corpus), "--num-videos", str(p.corpus_videos),
                   "--seed", seed, "--min-duration-s", str(p.min_duration_s), "--max-duration-s",
                   str(p.max_duration_s), "--subtitle-style", "asr", "--reverse-probability", str(p.reverse_probability),
                   "--retrieval-pairs", str(p.retrieval_pairs)],
                  corpus / "retrieval" / "retrieval.jsonl", _vipstream)
        self.step("stand-in for a pretrained CLIP (real data: openai/clip-vit-base-patch32)",
                  ["python", "-m", "tools.stand_in_training", "clip", "--output", str(models / "clip"),
                   "--steps", str(p.clip_steps), "--seed", seed],
                  models / "clip" / "stand_in_training.json", _tool)
        self.step("stand-in for an image captioner (real data: Salesforce/blip-image-captioning-base)",
                  ["python", "-m", "tools.stand_in_training", "captioner", "--output", str(models / "captioner"),
                   "--steps", str(p.captioner_steps), "--seed", seed],
                  models / "captioner" / "stand_in_training.json", _tool)
        self.step("build the pretraining corpus into shards (clips + subtitles)",
                  ["vipstream", "build", "--input", str(corpus / "meta.jsonl"), "--video-root", str(corpus / "videos"),
                   "--output", str(out), "--videos-per-shard", str(p.videos_per_shard), "--short-side-px",
                   str(p.short_side_px), "--no-progress"],
                  out / "summary.json", _vipstream)
        self.step("caption every clip's middle frame (OCL's auxiliary captions)",
                  ["vipstream", "caption", "--shards", str(out), "--captioner", str(models / "captioner"),
                   "--captioner-id", CAPTIONER_ID, "--no-progress"],
                  out / "captions" / CAPTIONER_ID / "summary.json", _vipstream)
        self.step("build the retrieval set from its annotations (captions per video)",
                  ["vipstream", "build", "--annotations", str(corpus / "retrieval" / "retrieval.jsonl"),
                   "--output", str(retrieval_out), "--videos-per-shard", "8", "--short-side-px", str(p.short_side_px),
                   "--no-progress"],
                  retrieval_out / "summary.json", _vipstream)
        for loss in ("vs", "ocl"):
            what = "subtitles only" if loss == "vs" else "OCL: subtitles + captions"
            self.step(f"post-pretrain CLIP-ViP from the stand-in CLIP, {what}",
                      ["vipstream", "train", "--config", _config_arg(), "--init", str(models / "clip"),
                       "--data", str(out), "--captions", CAPTIONER_ID, "--loss", loss, "--max-steps",
                       str(p.train_steps), "--batch-size", str(p.train_batch_size), "--seed", seed,
                       "--output", str(w / "runs" / loss)],
                      w / "runs" / loss / "summary.json", _vipstream)
        self.step("evaluate the stand-in CLIP as CLIP4Clip-meanP (per-frame features averaged)",
                  ["vipstream", "eval", "--checkpoint", str(models / "clip"), "--baseline", "meanpool",
                   "--data", str(retrieval_out), "--dsl", "--no-progress", "--output", str(w / "eval" / "meanpool.json")],
                  w / "eval" / "meanpool.json", _vipstream)
        for loss in ("vs", "ocl"):
            self.step(f"evaluate CLIP-ViP ({loss})",
                      ["vipstream", "eval", "--checkpoint", _final_checkpoint(w / "runs" / loss), "--data",
                       str(retrieval_out), "--dsl", "--no-progress", "--output", str(w / "eval" / f"{loss}.json")],
                      w / "eval" / f"{loss}.json", _vipstream)
        annotations = str(corpus / "retrieval" / "retrieval.jsonl")
        for name, checkpoint in (("meanpool", str(models / "clip")), ("vs", _final_checkpoint(w / "runs" / "vs")),
                                 ("ocl", _final_checkpoint(w / "runs" / "ocl"))):
            extra = ["--baseline", "meanpool"] if name == "meanpool" else []
            self.step(f"time-order test ({name}): own video vs its time-reversed twin, per caption",
                      ["python", "-m", "tools.order_test", "--checkpoint", checkpoint, *extra, "--annotations",
                       annotations, "--output", str(w / "eval" / f"{name}_order.json")],
                      w / "eval" / f"{name}_order.json", _tool)


def _config_arg() -> str:
    """configs/demo.yaml, shown relative to the repository when run from it."""
    try:
        return str(DEMO_CONFIG.relative_to(Path.cwd()))
    except ValueError:
        return str(DEMO_CONFIG)


def _final_checkpoint(run_dir: Path) -> str:
    """The checkpoint a finished run names in its summary (RUN/checkpoints/step_N)."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())["checkpoint"]
    return str(run_dir / "checkpoints" / "step_N")  # only shown; the step that makes it ran first


def _vipstream(command: list[str]) -> int:
    from vipstream.cli import main

    return main(command[1:])


def _tool(command: list[str]) -> int:
    import importlib

    module = importlib.import_module(command[2])
    return int(module.main(command[3:]) or 0)


# --------------------------------------------------------------------------------------------
# the report


def _row(result: dict[str, Any], kind: str = "plain") -> dict[str, dict[str, float]]:
    return result[kind]


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """One line per method: text->video R@1/5/10, MdR, MnR and video->text R@1 (plain), the same
    t2v R@1 with DSL (transductive), and the time-order test (tools/order_test.py; 50 = blind to time)."""
    header = (f"{'method':<50} {'t2v R@1':>7} {'R@5':>6} {'R@10':>6} {'MdR':>5} {'MnR':>6}   {'v2t R@1':>7}   "
              f"{'DSL t2v R@1':>11}   {'order %':>7}")
    lines = [header, "-" * len(header)]
    for name, label in METHODS:
        result = results[name]
        t2v, v2t = result["plain"]["t2v"], result["plain"]["v2t"]
        dsl = result.get("dsl", {}).get("t2v", {}).get("R@1", float("nan"))
        lines.append(f"{label:<50} {t2v['R@1']:>7.1f} {t2v['R@5']:>6.1f} {t2v['R@10']:>6.1f} {t2v['MdR']:>5.1f} "
                     f"{t2v['MnR']:>6.1f}   {v2t['R@1']:>7.1f}   {dsl:>11.1f}   "
                     f"{result.get('order', {}).get('accuracy', float('nan')):>7.1f}")
    any_result = next(iter(results.values()))
    lines.append(f"({any_result.get('num_videos', '?')} videos, {any_result.get('num_texts', '?')} captions; "
                 f"chance R@1 = {100 / max(1, int(any_result.get('num_videos', 1) or 1)):.1f})")
    return "\n".join(lines)


def _loss_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return steps, losses
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        value = row.get("loss", row.get("loss/total"))
        if isinstance(value, (int, float)) and "step" in row:
            steps.append(int(row["step"]))
            losses.append(float(value))
    return steps, losses


def write_report(work: Path, plan: DemoPlan, demo: _Demo, results: dict[str, dict[str, Any]], table: str,
                 digests: dict[str, str | None]) -> None:
    """WORKDIR/report.png (training curves, recall bars) and WORKDIR/report.md."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
    for loss in ("vs", "ocl"):
        steps, losses = _loss_curve(work / "runs" / loss)
        curves.plot(steps, losses, label=f"CLIP-ViP {loss}")
    curves.set(xlabel="step", ylabel="training loss (sum of the run's terms)", title="post-pretraining")
    curves.legend()
    metrics = ("R@1", "R@5", "R@10")
    width = 0.8 / len(METHODS)
    for k, (name, label) in enumerate(METHODS):
        values = [results[name]["plain"]["t2v"][m] for m in metrics]
        positions = [i + (k - (len(METHODS) - 1) / 2) * width for i in range(len(metrics))]
        bars.bar(positions, values, width, label=label)
    bars.set_xticks(range(len(metrics)), metrics)
    bars.set(ylabel="text->video recall (%)", title=f"held-out retrieval set (seed {plan.seed})")
    bars.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(work / "report.png", dpi=110)
    plt.close(fig)

    r1 = {name: results[name]["plain"]["t2v"]["R@1"] for name, _ in METHODS}
    lines = ["# vipstream demo report", "",
             f"Plan (seed {plan.seed}): {json.dumps(asdict(plan))}", "",
             "## Commands", "", "```", *[f"$ {c}" for c in demo.commands], "```", "",
             "## Results (held-out retrieval set, text->video unless noted)", "", "```", table, "```", "",
             "## What the numbers say", "",
             f"- CLIP-ViP with OCL vs subtitles only: t2v R@1 {r1['ocl']:.1f} vs {r1['vs']:.1f} "
             f"({r1['ocl'] - r1['vs']:+.1f}).",
             f"- CLIP-ViP (OCL) vs the per-frame baseline (CLIP4Clip-meanP on the stand-in CLIP): "
             f"{r1['ocl']:.1f} vs {r1['meanpool']:.1f} ({r1['ocl'] - r1['meanpool']:+.1f}).",
             "- Every retrieval video has a time-reversed twin with the same frames, so mean-pooled frame "
             "features cannot separate a twin pair; ties count against the correct video.",
             f"- Time-order test (own video vs its time-reversed twin, per caption; 50 = blind to time): "
             f"meanpool {results['meanpool']['order']['accuracy']:.1f}, vs {results['vs']['order']['accuracy']:.1f}, "
             f"OCL {results['ocl']['order']['accuracy']:.1f}.",
             "", "## Stage digests", "",
             f"Another machine's run of seed {plan.seed} should match these; the first stage that does not is "
             f"where the two runs part (`python -m vipstream.demo_digests THIS_WORKDIR OTHER_WORKDIR`).", "",
             *[f"- {stage}: `{value or '-'}`" for stage, value in digests.items()],
             "", "## Wall time (s)", "", *[f"- {k}: {v}" for k, v in demo.timings.items()], "",
             "![report](report.png)", ""]
    (work / "report.md").write_text("\n".join(lines))
