"""The embedded synthetic corpus: long videos + YouTube auto-caption VTTs + HD-VILA-100M metadata.

The demo and the test suite need a corpus shaped exactly like the real one, made in seconds and
without a network: per video one ffmpeg command renders scenes of coloured shapes moving in a
stated direction over a coloured background (with a sine tone per scene), a WebVTT file says what
is on screen in the rolling form YouTube's auto-captions use, and meta.jsonl gives one clip span
per scene in the HD-VILA-100M form.

Subtitles come in two styles. `describe` (the default) says exactly what is on screen, which the
pipeline's tests rely on. `asr` speaks like a YouTube narrator run through speech recognition:
filler ("um", "so", "you know"), off-topic talk, and only partly about the picture (sometimes the
colour and shape, sometimes only the motion, sometimes nothing), the way HD-VILA's subtitles are
a noisy, partial description of their clips. The demo uses `asr`: it is why captions help.

Everything but the encoded video bytes follows from `seed` alone (a `random.Random(seed)` plan);
the video bytes are also identical run to run with one ffmpeg build (x264 and the AAC encoder are
deterministic; no creation time is written), which the tests do not rely on.

    make_synthetic_corpus(out_dir, num_videos=4, seed=0, subtitle_style="describe") -> SyntheticCorpus
    python -m tools.make_synthetic_corpus --output DIR [--num-videos N] [--seed S] [--subtitle-style asr]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

# Scene lengths: every scene becomes one clip, and clips must be 4-20 s (DESIGN.md section 2,
# HD-VILA-100M averages 13.4 s). A video is split into about duration / TARGET_SCENE_S scenes
# whose lengths vary by +-30 %, which keeps each one in 5.6-17.3 s for 30-120 s videos.
TARGET_SCENE_S = 10.0
SCENE_LENGTH_JITTER = 0.3
AUDIO_SAMPLE_RATE = 16000
YOUTUBE_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple", "cyan", "magenta",
           "pink", "gray")
# name -> (width, height) as fractions of the frame's short side
SHAPES = {"square": (0.25, 0.25), "wide rectangle": (0.4, 0.15), "tall rectangle": (0.12, 0.4),
          "small square": (0.12, 0.12)}
DIRECTIONS = ("left to right", "right to left", "top to bottom", "bottom to top")
# How a speaker says a direction in few words ("it goes right").
DIRECTION_WORD = {"left to right": "right", "right to left": "left", "top to bottom": "down",
                  "bottom to top": "up"}
OPPOSITE = {"left to right": "right to left", "right to left": "left to right",
            "top to bottom": "bottom to top", "bottom to top": "top to bottom"}
SUBTITLE_STYLES = ("describe", "asr")
# YouTube auto-caption lines hold a few words; a caption line is shown for at least this long.
WORDS_PER_LINE = 5
TRANSITION_CUE_S = 0.010


@dataclass(frozen=True)
class MovingShape:
    colour: str
    shape: str
    direction: str
    across: float  # position on the axis perpendicular to the motion, 0..1 of the free room


@dataclass(frozen=True)
class Scene:
    """One scene = one clip: [start_s, end_s) of its video, a background and 1-2 moving shapes."""

    start_s: float
    end_s: float
    background: str
    shapes: tuple[MovingShape, ...]
    tone_hz: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def sentences(self) -> list[str]:
        """What the captions say about this scene (lower case, as ASR writes)."""
        first = self.shapes[0]
        text = [f"a {first.colour} {first.shape} moves from {first.direction} on a {self.background} background"]
        for other in self.shapes[1:]:
            text.append(f"and a {other.colour} {other.shape} moves from {other.direction}")
        return text


@dataclass(frozen=True)
class SyntheticCorpus:
    meta_path: Path
    video_root: Path
    video_ids: list[str]
    scenes: dict[str, list[Scene]]  # video_id -> its scenes in time order
    speech: dict[str, list[str]] | None = None  # video_id -> what the subtitles say per scene

    def summary(self) -> dict:
        return {"meta_path": str(self.meta_path), "video_root": str(self.video_root),
                "videos": len(self.video_ids),
                "clips": sum(len(s) for s in self.scenes.values()),
                "video_seconds": round(sum(s[-1].end_s for s in self.scenes.values()), 3)}


# --------------------------------------------------------------------------------------------
# the plan (pure, seeded)


def youtube_id(rng: random.Random) -> str:
    return "".join(rng.choice(YOUTUBE_ID_ALPHABET) for _ in range(11))


def plan_scenes(rng: random.Random, duration_s: float, fps: int, reverse_probability: float = 0.0) -> list[Scene]:
    """Scenes tiling [0, duration_s), boundaries on whole frames (to the ms) so concat is exact.

    reverse_probability: chance that a scene replays the previous one's picture (background,
    shapes, their paths) with every shape moving the other way, as consecutive shots of a real
    video show the same things doing something else. Such neighbours differ only in time order,
    so a contrastive batch holding both can only be solved by motion. 0 draws nothing extra, so
    corpora made without it stay as they were."""
    total_frames = max(1, round(duration_s * fps))
    count = max(1, round(duration_s / TARGET_SCENE_S))
    weights = [rng.uniform(1 - SCENE_LENGTH_JITTER, 1 + SCENE_LENGTH_JITTER) for _ in range(count)]
    bounds, acc = [0], 0.0
    for weight in weights[:-1]:
        acc += weight
        bounds.append(round(total_frames * acc / sum(weights)))
    bounds.append(total_frames)
    scenes = []
    for start, end in zip(bounds, bounds[1:]):
        if scenes and reverse_probability > 0 and rng.random() < reverse_probability:
            previous = scenes[-1]
            shapes = tuple(replace(s, direction=OPPOSITE[s.direction]) for s in previous.shapes)
            scenes.append(Scene(round(start / fps, 3), round(end / fps, 3), previous.background, shapes,
                                rng.randrange(220, 880, 20)))
            continue
        background = rng.choice(COLOURS)
        shapes = [_moving_shape(rng, exclude={background})]
        if rng.random() < 0.4:
            shapes.append(_moving_shape(rng, exclude={background, shapes[0].colour}))
        # Times in whole milliseconds, as spans and cues are written: a clip cut at a scene
        # boundary then meets its neighbour's first cue exactly, never 0.3 ms inside it.
        scenes.append(Scene(round(start / fps, 3), round(end / fps, 3), background, tuple(shapes),
                            rng.randrange(220, 880, 20)))
    return scenes


def _moving_shape(rng: random.Random, exclude: set[str]) -> MovingShape:
    return MovingShape(colour=rng.choice([c for c in COLOURS if c not in exclude]),
                       shape=rng.choice(sorted(SHAPES)), direction=rng.choice(DIRECTIONS),
                       across=round(rng.uniform(0.1, 0.9), 3))


# --------------------------------------------------------------------------------------------
# ASR-style speech (pure, seeded)

# Templates of what a narrator says. {c} colour, {s} shape, {d} direction ("left to right"),
# {w} direction word ("right"), {bg} background colour. Every word is in tools/demo_data.DEMO_WORDS
# so the stand-in tokenizer keeps a subtitle within the 70-token text length.
SAY_ALL = ("so here the {c} {s} moves from {d}", "and now we see a {c} {s} going from {d}",
           "look the {c} {s} is moving {w}", "this {c} {s} goes {w}",
           "the {c} {s} moves from {d} on {bg}")
SAY_LOOKS = ("we have a {c} {s} here", "there is a {c} {s} on a {bg} background", "see the {c} one",
             "a {c} {s} okay")
SAY_MOTION = ("it moves from {d}", "and it goes {w}", "watch it go {w} now", "it is going {w}")
SAY_BACKGROUND = ("the background is {bg}", "on {bg} this time")
OFF_TOPIC = ("do not forget to subscribe", "i had coffee this morning", "anyway where was i",
             "thanks for watching", "my internet is slow today", "let me know in the comments",
             "this reminds me of my trip last summer", "okay i think the audio is fine",
             "my cat is here too", "we will talk about that later")
FILLERS = ("um", "uh", "so", "you know", "like", "okay", "well")


def asr_speech(scene: Scene, rng: random.Random) -> str:
    """What a narrator says over `scene`, as ASR transcribes it (lower case, no punctuation).

    Per shape: the whole picture (colour, shape and motion) with p 0.4, its looks only (0.15), its
    motion only (0.2), looks and motion in separate remarks (0.1), nothing (0.15); the
    background with p 0.3; 0-2 off-topic remarks; filler between remarks with p 0.4.
    """
    remarks: list[str] = []
    for k, moving in enumerate(scene.shapes):
        fields = dict(c=moving.colour, s=moving.shape, d=moving.direction,
                      w=DIRECTION_WORD[moving.direction], bg=scene.background)
        said = []
        draw = rng.random()
        if draw < 0.4:
            said.append(rng.choice(SAY_ALL))
        elif draw < 0.55:
            said.append(rng.choice(SAY_LOOKS))
        elif draw < 0.75:
            said.append(rng.choice(SAY_MOTION))
        elif draw < 0.85:
            said += [rng.choice(SAY_LOOKS), rng.choice(SAY_MOTION)]
        if said and k > 0:
            said[0] = "then " + said[0]
        remarks += [template.format(**fields) for template in said]
    if rng.random() < 0.3:
        remarks.insert(rng.randrange(len(remarks) + 1), rng.choice(SAY_BACKGROUND).format(bg=scene.background))
    for _ in range(rng.randrange(3)):
        remarks.insert(rng.randrange(len(remarks) + 1), rng.choice(OFF_TOPIC))
    if not remarks:
        remarks.append(rng.choice(OFF_TOPIC))
    words: list[str] = []
    for remark in remarks:
        if rng.random() < 0.4:
            words.append(rng.choice(FILLERS))
        words += remark.split()
    return " ".join(words)


def scene_speech(scenes: list[Scene], style: str, seed: int, video_id: str) -> list[str]:
    """The subtitle text of each scene. ASR speech draws from its own generator (seeded by the
    corpus seed and the video id), so the scene plan, and the videos, do not depend on the style."""
    if style == "describe":
        return [" ".join(scene.sentences()) for scene in scenes]
    rng = random.Random(f"asr:{seed}:{video_id}")
    return [asr_speech(scene, rng) for scene in scenes]


# --------------------------------------------------------------------------------------------
# video: one ffmpeg command per video


def _scene_filters(index: int, scene: Scene, width: int, height: int, fps: int) -> list[str]:
    """Filtergraph chains of one scene -> pads [v{index}] and [a{index}]."""
    frames = round(scene.duration_s * fps)
    seconds = f"{frames / fps:.6f}"
    chains = [f"color=c={scene.background}:s={width}x{height}:r={fps}:d={seconds}[bg{index}_0]"]
    short = min(width, height)
    for k, moving in enumerate(scene.shapes):
        w_frac, h_frac = SHAPES[moving.shape]
        box_w, box_h = max(2, int(short * w_frac)) // 2 * 2, max(2, int(short * h_frac)) // 2 * 2
        progress = f"t/{seconds}"
        if moving.direction in ("left to right", "right to left"):
            x = f"(W-w)*{progress}" if moving.direction == "left to right" else f"(W-w)*(1-{progress})"
            y = f"(H-h)*{moving.across}"
        else:
            y = f"(H-h)*{progress}" if moving.direction == "top to bottom" else f"(H-h)*(1-{progress})"
            x = f"(W-w)*{moving.across}"
        chains.append(f"color=c={moving.colour}:s={box_w}x{box_h}:r={fps}:d={seconds}[box{index}_{k}]")
        chains.append(f"[bg{index}_{k}][box{index}_{k}]overlay=x='{x}':y='{y}':eval=frame:shortest=1"
                      f"[bg{index}_{k + 1}]")
    chains.append(f"[bg{index}_{len(scene.shapes)}]null[v{index}]")
    samples = round(frames / fps * AUDIO_SAMPLE_RATE)
    chains.append(f"sine=frequency={scene.tone_hz}:sample_rate={AUDIO_SAMPLE_RATE},"
                  f"atrim=end_sample={samples}[a{index}]")
    return chains


def render_video(path: Path, scenes: list[Scene], size: str, fps: int, timeout_s: float = 300.0) -> None:
    """All scenes of one video, concatenated in one ffmpeg filtergraph, x264 ultrafast + AAC."""
    width, height = (int(v) for v in size.lower().split("x"))
    chains = []
    for index, scene in enumerate(scenes):
        chains += _scene_filters(index, scene, width, height, fps)
    pads = "".join(f"[v{i}][a{i}]" for i in range(len(scenes)))
    chains.append(f"{pads}concat=n={len(scenes)}:v=1:a=1[v][a]")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-filter_complex", ";".join(chains),
           "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-g", str(2 * fps), "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(path)]
    subprocess.run(cmd, check=True, timeout=timeout_s, capture_output=True)


# --------------------------------------------------------------------------------------------
# subtitles: YouTube auto-caption WebVTT


def vtt_time(seconds: float) -> str:
    """Seconds -> 'hh:mm:ss.mmm' (also the HD-VILA span form)."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _caption_lines(scenes: list[Scene], speech: list[str]) -> list[tuple[float, float, list[str]]]:
    """(shown_from_s, shown_until_s, words) per caption line; lines tile each scene exactly, so a
    clip cut at scene boundaries gets its own scene's words and no neighbour's."""
    lines = []
    for scene, text in zip(scenes, speech, strict=True):
        words = text.split()
        chunks = [words[i:i + WORDS_PER_LINE] for i in range(0, len(words), WORDS_PER_LINE)]
        step_s = scene.duration_s / len(chunks)
        for k, chunk in enumerate(chunks):
            end_s = scene.end_s if k == len(chunks) - 1 else scene.start_s + (k + 1) * step_s
            lines.append((scene.start_s + k * step_s, end_s, chunk))
    return lines


def youtube_vtt(scenes: list[Scene], speech: list[str] | None = None) -> str:
    """The rolling auto-caption form: each cue repeats the previous line above the new one, the new
    line carries `<hh:mm:ss.mmm><c> word</c>` timings, and a 10 ms cue shows the finished line
    alone before the next cue (as YouTube's ASR tracks do)."""
    out = ["WEBVTT", "Kind: captions", "Language: en", ""]
    previous = " "  # YouTube's first cue has a blank (single space) line above the words
    speech = speech if speech is not None else [" ".join(scene.sentences()) for scene in scenes]
    for start_s, end_s, words in _caption_lines(scenes, speech):
        speak_end_s = end_s - TRANSITION_CUE_S
        word_step_s = (speak_end_s - start_s) * 0.8 / len(words)
        timed = words[0] + "".join(f"<{vtt_time(start_s + (i + 1) * word_step_s)}><c> {w}</c>"
                                   for i, w in enumerate(words[1:]))
        out += [f"{vtt_time(start_s)} --> {vtt_time(speak_end_s)} align:start position:0%", previous, timed, ""]
        plain = " ".join(words)
        out += [f"{vtt_time(speak_end_s)} --> {vtt_time(end_s)} align:start position:0%", plain, " ", ""]
        previous = plain
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# metadata: HD-VILA-100M JSONL


def hdvila_line(video_id: str, scenes: list[Scene]) -> str:
    clips = [{"clip_id": f"{video_id}.{k}.mp4", "span": [vtt_time(s.start_s), vtt_time(s.end_s)]}
             for k, s in enumerate(scenes)]
    return json.dumps({"video_id": video_id, "url": f"https://www.youtube.com/watch?v={video_id}",
                       "clip": clips})


# --------------------------------------------------------------------------------------------
# the corpus


def make_synthetic_corpus(out_dir: Path, num_videos: int = 4, seed: int = 0, min_duration_s: float = 30.0,
                          max_duration_s: float = 120.0, size: str = "320x240", fps: int = 15,
                          subtitle_style: str = "describe", reverse_probability: float = 0.0) -> SyntheticCorpus:
    """Write out_dir/videos/{id}.mp4 + {id}.en.vtt and out_dir/meta.jsonl; deterministic by seed.

    subtitle_style: "describe" (subtitles say exactly what is on screen) or "asr" (spoken, partial,
    with filler and off-topic talk; see `asr_speech`). reverse_probability: see `plan_scenes`."""
    if num_videos < 1 or not 0 < min_duration_s <= max_duration_s or fps < 1:
        raise ValueError(f"need num_videos >= 1, 0 < min_duration_s <= max_duration_s and fps >= 1, found "
                         f"{num_videos}, {min_duration_s}..{max_duration_s}, {fps}")
    if subtitle_style not in SUBTITLE_STYLES:
        raise ValueError(f"subtitle_style must be one of {SUBTITLE_STYLES}, found {subtitle_style!r}")
    out_dir = Path(out_dir)
    video_root = out_dir / "videos"
    video_root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    video_ids: list[str] = []
    scenes_by_video: dict[str, list[Scene]] = {}
    while len(video_ids) < num_videos:
        video_id = youtube_id(rng)
        if video_id in scenes_by_video:
            continue
        scenes = plan_scenes(rng, rng.uniform(min_duration_s, max_duration_s), fps, reverse_probability)
        video_ids.append(video_id)
        scenes_by_video[video_id] = scenes
    speech = {v: scene_speech(scenes_by_video[v], subtitle_style, seed, v) for v in video_ids}
    started = time.perf_counter()
    for video_id in video_ids:
        scenes = scenes_by_video[video_id]
        render_video(video_root / f"{video_id}.mp4", scenes, size, fps)
        (video_root / f"{video_id}.en.vtt").write_text(youtube_vtt(scenes, speech[video_id]), encoding="utf-8")
    meta_path = out_dir / "meta.jsonl"
    meta_path.write_text("".join(hdvila_line(v, scenes_by_video[v]) + "\n" for v in video_ids), encoding="utf-8")
    log.info("synthetic corpus: %d videos in %.1f s at %s", num_videos, time.perf_counter() - started, out_dir)
    return SyntheticCorpus(meta_path, video_root, video_ids, scenes_by_video, speech)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the synthetic HD-VILA-style corpus (videos, VTT, meta.jsonl).")
    parser.add_argument("--output", type=Path, required=True, help="corpus directory to write")
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-duration-s", type=float, default=30.0)
    parser.add_argument("--max-duration-s", type=float, default=120.0)
    parser.add_argument("--subtitle-style", choices=SUBTITLE_STYLES, default="describe",
                        help="describe: subtitles say what is on screen; asr: spoken, partial, noisy")
    parser.add_argument("--reverse-probability", type=float, default=0.0,
                        help="chance a scene replays the previous one with every shape moving the other way")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    corpus = make_synthetic_corpus(args.output, num_videos=args.num_videos, seed=args.seed,
                                   min_duration_s=args.min_duration_s, max_duration_s=args.max_duration_s,
                                   subtitle_style=args.subtitle_style,
                                   reverse_probability=args.reverse_probability)
    print(json.dumps({**corpus.summary(), "video_ids": corpus.video_ids,
                      "seconds": round(time.perf_counter() - started, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
