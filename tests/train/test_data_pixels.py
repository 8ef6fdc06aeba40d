"""CLIP pixels in torch (train/data/pixels.py) against transformers' own CLIPImageProcessor, on
real decoded frames of non-square videos, for both file layouts (preprocessor_config.json, and
transformers 5's processor_config.json with the image processor nested) and every size form
(the openai checkpoints' legacy `"size": S`, `{"shortest_edge": S}`, and the reference's
square `{"height": S, "width": S}` that converted checkpoints carry)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.media import make_video
from train.data.pixels import PixelSpec, preprocess_frames

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
#: One uint8 level after CLIP normalisation, in the channel with the smallest std.
LEVEL = 1 / 255 / min(STD)


def processor_config(size_form: str, image_size: int) -> dict:
    """An image-processor config as each checkpoint generation writes it."""
    common = {"do_resize": True, "do_center_crop": True, "do_normalize": True, "image_mean": MEAN,
              "image_std": STD, "resample": 3}
    if size_form == "legacy int":  # openai/clip-vit-base-patch32's preprocessor_config.json, verbatim form
        return {**common, "size": image_size, "crop_size": image_size, "feature_extractor_type": "CLIPFeatureExtractor"}
    size = {"shortest_edge": image_size} if size_form == "shortest_edge" else {"height": image_size, "width": image_size}
    return {**common, "size": size, "crop_size": {"height": image_size, "width": image_size},
            "do_rescale": True, "rescale_factor": 1 / 255, "image_processor_type": "CLIPImageProcessor"}


def write_processor(folder, layout: str, config: dict):
    folder.mkdir(parents=True)
    if layout == "preprocessor_config.json":
        (folder / "preprocessor_config.json").write_text(json.dumps(config))
    else:  # what CLIPProcessor.save_pretrained writes in transformers 5 (no preprocessor_config.json)
        (folder / "processor_config.json").write_text(json.dumps({"image_processor": config,
                                                                  "processor_class": "CLIPProcessor"}))
    return folder


@pytest.fixture(scope="module")
def decoded_frames(tmp_path_factory):
    """{"landscape 320x240": [3, 240, 320, 3], "portrait 180x320": [3, 320, 180, 3]} uint8 frames
    decoded by decord from ffmpeg-encoded test-pattern videos."""
    import decord

    folder = tmp_path_factory.mktemp("pixel_videos")
    frames = {}
    for name, size in (("landscape", "320x240"), ("portrait", "180x320")):
        path = make_video(folder / f"{name}.mp4", seconds=2.0, size=size, fps=10, audio=False)
        frames[f"{name} {size}"] = decord.VideoReader(str(path), num_threads=1).get_batch([0, 7, 15]).asnumpy()
    return frames


def transformers_pixels(folder, frames: np.ndarray) -> torch.Tensor:
    """What transformers' CLIP image processor (PIL) gives for each frame: `[K, 3, S, S]`."""
    from PIL import Image
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(str(folder), backend="pil")
    return torch.stack([torch.from_numpy(np.asarray(processor(images=Image.fromarray(frame), return_tensors="np")
                                                    ["pixel_values"][0])) for frame in frames])


@pytest.mark.parametrize("layout", ["preprocessor_config.json", "processor_config.json"])
@pytest.mark.parametrize("size_form", ["legacy int", "shortest_edge", "height/width"])
def test_pixels_equal_clip_image_processor_for_both_layouts_and_every_size_form(layout, size_form, decoded_frames,
                                                                                tmp_path):
    folder = write_processor(tmp_path / "clip", layout, processor_config(size_form, 32))
    spec = PixelSpec.from_pretrained(folder)
    if size_form == "height/width":
        assert (spec.shortest_edge, spec.resize_hw) == (None, (32, 32))  # aspect not kept
    else:
        assert (spec.shortest_edge, spec.resize_hw) == (32, None)  # the legacy int is the short side too
    for name, frames in decoded_frames.items():
        ours = preprocess_frames(frames, spec)
        theirs = transformers_pixels(folder, frames)
        assert ours.shape == theirs.shape == (3, 3, 32, 32), name
        difference = (ours - theirs).abs()
        # torch's antialiased uint8 resize is PIL's fixed-point algorithm: within a level, nearly everywhere 0
        assert difference.max() <= 1.01 * LEVEL, (name, difference.max().item())
        assert difference.mean() < 0.01 * LEVEL, (name, difference.mean().item())


def test_at_clip_size_a_short_side_224_frame_is_only_cropped_and_a_240_one_resized(decoded_frames, tmp_path):
    folder = write_processor(tmp_path / "clip224", "preprocessor_config.json", processor_config("legacy int", 224))
    frames = decoded_frames["landscape 320x240"]
    difference = (preprocess_frames(frames, PixelSpec.from_pretrained(folder)) - transformers_pixels(folder, frames)).abs()
    assert difference.max() <= 2.01 * LEVEL and difference.mean() < 0.01 * LEVEL
    already = np.ascontiguousarray(frames[:, 8:232, :, :])  # 224 x 320: the builder's short side
    difference = (preprocess_frames(already, PixelSpec.from_pretrained(folder)) - transformers_pixels(folder, already)).abs()
    assert difference.max() < 1e-5


def test_processors_we_do_not_reproduce_are_refused_and_a_folder_without_one_is_named(tmp_path):
    lanczos = write_processor(tmp_path / "lanczos", "preprocessor_config.json",
                              {**processor_config("shortest_edge", 32), "resample": 1})
    with pytest.raises(ValueError, match="resample 1"):
        PixelSpec.from_pretrained(lanczos)
    capped = write_processor(tmp_path / "capped", "preprocessor_config.json",
                             {**processor_config("shortest_edge", 32),
                              "size": {"shortest_edge": 32, "longest_edge": 64}})
    with pytest.raises(ValueError, match="longest edge"):
        PixelSpec.from_pretrained(capped)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        PixelSpec.from_pretrained(tmp_path / "empty")
