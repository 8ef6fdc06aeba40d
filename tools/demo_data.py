"""The demo's data beyond the raw corpus: single frames with appearance-only descriptions (to train
the stand-in CLIP and captioner) and a held-out retrieval set whose captions need time.

The paper's claim in miniature: a video-language model pretrained on noisy ASR subtitles learns
more when each clip also carries an image caption of its middle frame (OCL), and a per-frame
image model cannot tell videos apart by what happens over time. So:

* frames: a background colour with 1-2 coloured shapes somewhere on it, described by appearance
  only ("a red square and a blue tall rectangle on a green background"), as an image captioner
  would; rendered in numpy with the colours and box sizes ffmpeg draws in the synthetic videos.
* the retrieval set comes in time-reversed pairs: a video and its twin with every shape moving the
  opposite way over the same path. Both show the same set of frames, only in reverse order, so a
  single frame or the mean of frames cannot tell them apart; their captions can ("a red square
  moves from left to right on a green background" vs "... from right to left ...").

    frame_batch(rng, n) -> (frames uint8 [n, H, W, 3], descriptions)
    make_retrieval_set(out_dir, num_pairs=16, seed=0) -> RetrievalSet  (out_dir/retrieval.jsonl)
    python -m tools.demo_data --output DIR [--num-pairs N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tools.make_synthetic_corpus import (COLOURS, DIRECTION_WORD, FILLERS, OFF_TOPIC, OPPOSITE, SAY_ALL,
                                         SAY_BACKGROUND, SAY_LOOKS, SAY_MOTION, SHAPES, MovingShape, Scene,
                                         render_video, youtube_id)
from tools.stand_in_models import CORPUS_WORDS

# RGB of ffmpeg's colour names (libavutil/parseutils.c, the CSS/X11 table: "green" is 0x008000).
COLOUR_RGB = {"red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
              "white": (255, 255, 255), "black": (0, 0, 0), "orange": (255, 165, 0), "purple": (128, 0, 128),
              "cyan": (0, 255, 255), "magenta": (255, 0, 255), "pink": (255, 192, 203), "gray": (128, 128, 128)}
# Frames for the stand-ins: the corpus's 4:3 aspect at a size the 32 px models resize from cheaply.
FRAME_SIZE = (96, 72)  # (width, height) px
# Retrieval videos: one scene each, as long as a short MSR-VTT clip, in the corpus's size and rate.
RETRIEVAL_SCENE_S = 6.0
TWO_SHAPE_PROBABILITY = 0.4  # as in the corpus's scene plan

# Retrieval captions: appearance AND motion, several wordings per video (MSR-VTT has 20).
CAPTION_ONE = ("a {c} {s} moves from {d} on a {bg} background", "the {c} {s} is moving {w} on {bg}",
               "a {c} {s} going from {d} over a {bg} background", "on a {bg} background a {c} {s} goes {w}")
CAPTION_TWO = ("a {c} {s} moves from {d} and a {c2} {s2} moves from {d2} on a {bg} background",
               "the {c} {s} is moving {w} and the {c2} {s2} is moving {w2} on {bg}",
               "on a {bg} background a {c} {s} goes {w} and a {c2} {s2} goes {w2}")


def _template_words(*templates: tuple[str, ...]) -> set[str]:
    return {w for group in templates for t in group for w in t.split() if not w.startswith("{")}


#: Every word the demo's texts use (subtitles, captions, descriptions): one token each in the
#: stand-in tokenizer, so a subtitle fits CLIP-ViP's 70-token text length.
DEMO_WORDS = tuple(sorted(
    set(CORPUS_WORDS) | set(COLOURS) | {w for shape in SHAPES for w in shape.split()}
    | {w for d in OPPOSITE for w in d.split()} | set(DIRECTION_WORD.values())
    | _template_words(SAY_ALL, SAY_LOOKS, SAY_MOTION, SAY_BACKGROUND, OFF_TOPIC, FILLERS, CAPTION_ONE,
                      CAPTION_TWO, ("then background",))))


# --------------------------------------------------------------------------------------------
# frames and their descriptions (the stand-ins' training data)


def frame_description(background: str, shapes: list[tuple[str, str]]) -> str:
    """Appearance only, as an image captioner says it: 'a red square and a blue tall rectangle on a
    green background'. shapes: (colour, shape) in drawing order."""
    things = " and ".join(f"a {colour} {shape}" for colour, shape in shapes)
    return f"{things} on a {background} background"


def render_frame(background: str, placed: list[tuple[str, str, float, float]],
                 size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """One frame [H, W, 3] uint8 drawn as the corpus's ffmpeg filtergraph draws it: boxes sized by
    the short side (tools/make_synthetic_corpus.SHAPES), placed at (x, y) = fractions of the free
    room (W - w, H - h), later shapes over earlier ones."""
    width, height = size
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = COLOUR_RGB[background]
    short = min(width, height)
    for colour, shape, x_frac, y_frac in placed:
        w_frac, h_frac = SHAPES[shape]
        box_w, box_h = max(2, int(short * w_frac)), max(2, int(short * h_frac))
        x, y = int((width - box_w) * x_frac), int((height - box_h) * y_frac)
        frame[y:y + box_h, x:x + box_w] = COLOUR_RGB[colour]
    return frame


def random_frame(rng: random.Random, size: tuple[int, int] = FRAME_SIZE) -> tuple[np.ndarray, str]:
    """A frame like one of the corpus's (a background, 1-2 shapes of other colours, anywhere) and
    its description."""
    background = rng.choice(COLOURS)
    colours = rng.sample([c for c in COLOURS if c != background], 2)
    count = 2 if rng.random() < TWO_SHAPE_PROBABILITY else 1
    placed = [(colours[k], rng.choice(sorted(SHAPES)), rng.random(), rng.random()) for k in range(count)]
    return render_frame(background, placed, size), frame_description(background, [p[:2] for p in placed])


def frame_batch(rng: random.Random, n: int, size: tuple[int, int] = FRAME_SIZE) -> tuple[np.ndarray, list[str]]:
    """n random frames [n, H, W, 3] uint8 and their descriptions."""
    pairs = [random_frame(rng, size) for _ in range(n)]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


# --------------------------------------------------------------------------------------------
# the retrieval set


@dataclass(frozen=True)
class RetrievalVideo:
    video_id: str
    path: Path
    scene: Scene
    captions: tuple[str, ...]
    twin_id: str  # the time-reversed video: same frames, opposite order

    def record(self, base_dir: Path) -> dict:
        """The annotation JSONL row `{video_id, path, captions}` (path relative to the JSONL)."""
        return {"video_id": self.video_id, "path": str(self.path.relative_to(base_dir)),
                "captions": list(self.captions)}


@dataclass(frozen=True)
class RetrievalSet:
    annotations_path: Path
    videos: list[RetrievalVideo]

    def summary(self) -> dict:
        return {"annotations": str(self.annotations_path), "videos": len(self.videos),
                "captions": sum(len(v.captions) for v in self.videos)}


def reversed_scene(scene: Scene) -> Scene:
    """The same scene played backwards: every shape crosses the same path the other way."""
    return replace(scene, shapes=tuple(replace(s, direction=OPPOSITE[s.direction]) for s in scene.shapes))


def retrieval_captions(scene: Scene) -> tuple[str, ...]:
    """Every wording of CAPTION_ONE / CAPTION_TWO for this scene: colours, shapes, background and
    each shape's direction."""
    first = scene.shapes[0]
    fields = dict(c=first.colour, s=first.shape, d=first.direction, w=DIRECTION_WORD[first.direction],
                  bg=scene.background)
    if len(scene.shapes) == 1:
        return tuple(t.format(**fields) for t in CAPTION_ONE)
    second = scene.shapes[1]
    fields.update(c2=second.colour, s2=second.shape, d2=second.direction, w2=DIRECTION_WORD[second.direction])
    return tuple(t.format(**fields) for t in CAPTION_TWO)


def plan_retrieval_scenes(rng: random.Random, num_pairs: int, fps: int) -> list[tuple[Scene, Scene]]:
    """num_pairs (scene, time-reversed twin); every scene is RETRIEVAL_SCENE_S long (whole frames).

    Two-shape scenes move both shapes on the same axis (both horizontal or both vertical), so the
    twin reverses the picture as a whole rather than trading one shape's motion for another's."""
    seconds = round(round(RETRIEVAL_SCENE_S * fps) / fps, 3)
    pairs = []
    for _ in range(num_pairs):
        background = rng.choice(COLOURS)
        colours = rng.sample([c for c in COLOURS if c != background], 2)
        axis = rng.choice((("left to right", "right to left"), ("top to bottom", "bottom to top")))
        count = 2 if rng.random() < TWO_SHAPE_PROBABILITY else 1
        shapes = tuple(MovingShape(colour=colours[k], shape=rng.choice(sorted(SHAPES)), direction=rng.choice(axis),
                                   across=round(rng.uniform(0.1, 0.9), 3)) for k in range(count))
        scene = Scene(0.0, seconds, background, shapes, rng.randrange(220, 880, 20))
        pairs.append((scene, reversed_scene(scene)))
    return pairs


def make_retrieval_set(out_dir: Path, num_pairs: int = 16, seed: int = 0, size: str = "320x240",
                       fps: int = 15) -> RetrievalSet:
    """Write out_dir/videos/{id}.mp4 (2 * num_pairs single-scene videos) and out_dir/retrieval.jsonl.

    Its own generator (`retrieval:{seed}`), so its videos are never the pretraining corpus's."""
    if num_pairs < 1:
        raise ValueError(f"need num_pairs >= 1, found {num_pairs}")
    out_dir = Path(out_dir)
    video_root = out_dir / "videos"
    video_root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"retrieval:{seed}")
    videos: list[RetrievalVideo] = []
    for scene, twin in plan_retrieval_scenes(rng, num_pairs, fps):
        ids = [youtube_id(rng), youtube_id(rng)]
        for k, (video_id, this) in enumerate(zip(ids, (scene, twin))):
            path = video_root / f"{video_id}.mp4"
            render_video(path, [this], size, fps)
            videos.append(RetrievalVideo(video_id, path, this, retrieval_captions(this), ids[1 - k]))
    annotations = out_dir / "retrieval.jsonl"
    annotations.write_text("".join(json.dumps(v.record(out_dir)) + "\n" for v in videos), encoding="utf-8")
    return RetrievalSet(annotations, videos)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the demo's held-out retrieval set (time-reversed "
                                                 "video pairs + retrieval.jsonl).")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--num-pairs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = make_retrieval_set(args.output, num_pairs=args.num_pairs, seed=args.seed)
    print(json.dumps({**result.summary(), "seconds": round(time.perf_counter() - started, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
