"""The size policy (1280x720, 16 fps, 81 frames before stage 1), the background generated at the
I2V model's 81 frames and then fitted, and stage 5 keeping the edited frame 0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparkle_video.data.synthetic import make_pair
from sparkle_video.data.video import VideoReader, write_video
from sparkle_video.generation.backends.protocols import EditScore, GroundedObject
from sparkle_video.generation.backends.registry import backend_config_from_mapping
from sparkle_video.generation.settings import PipelineSettings, working_clip, working_size
from sparkle_video.generation.stages import generate_background, generate_edited_video
from sparkle_video.generation.stages.background import EMPTY_SCENE, fill_prompt
from sparkle_video.generation.steps import PlanItem, StageContext, step_camera


def test_4k_source_is_brought_to_1280x720() -> None:
    clip = working_clip(81, 16.0, 3840, 2160)
    assert (clip.width, clip.height, clip.fps, clip.num_frames) == (1280, 720, 16.0, 81)
    assert not clip.unchanged(81, 16.0, 3840, 2160)
    assert working_size(1920, 1080) == (1280, 720)
    assert working_size(4096, 2160) == (1280, 676)  # aspect kept, even, within both limits
    assert working_size(640, 360) == (640, 360)  # never scaled up
    assert working_clip(81, 16.0, 1280, 720).unchanged(81, 16.0, 1280, 720)


def test_long_high_fps_source_is_resampled_to_16fps_and_cut_at_81() -> None:
    clip = working_clip(900, 30.0, 1280, 720)  # 30 s at 30 fps
    assert clip.fps == 16.0 and clip.num_frames == 81
    assert clip.indices[:5] == (0, 2, 4, 6, 8) and clip.indices[-1] == round(80 * 30 / 16)
    times = np.array(clip.indices) / 30.0
    assert np.abs(times - np.arange(81) / 16).max() <= 0.5 / 30 + 1e-9  # nearest frame in time
    assert working_clip(200, 16.0, 640, 360).indices == tuple(range(81))  # long: cut, not skipped
    slow = working_clip(60, 12.0, 640, 360)  # slower than 16 fps: kept, frames are never invented
    assert slow.fps == 12.0 and slow.indices == tuple(range(60))
    short = working_clip(20, 60.0, 640, 360)  # 1/3 s: 5 frames at 16 fps
    assert short.num_frames == 5
    with pytest.raises(ValueError, match="needs frames and a frame rate"):
        working_clip(0, 16.0, 64, 64)


def test_policy_is_in_the_settings_and_configurable() -> None:
    settings = PipelineSettings()
    assert (settings.max_width, settings.max_height, settings.fps, settings.num_frames) == (1280, 720, 16, 81)
    config = backend_config_from_mapping(
        {
            **{
                r: {"backend": "reference"}
                for r in ("vlm", "image_editor", "image_to_video", "segmenter", "control_video", "scorer")
            },
            "pipeline": {"max_width": 96, "max_height": 64},
        }
    )
    assert (config.pipeline.max_width, config.pipeline.max_height) == (96, 64)


def test_stage1_writes_the_working_clip(tmp_path: Path) -> None:
    """A 32 fps, 100-frame, 192x112 source with a 96x64 budget: 16 fps, 50 frames, 96x56."""
    source = tmp_path / "big.mp4"
    write_video(make_pair(3, 100, 112, 192).source, source, fps=32)
    mapping = {
        r: {"backend": "reference"}
        for r in ("vlm", "image_editor", "image_to_video", "segmenter", "control_video", "scorer")
    }
    mapping["pipeline"] = {"max_width": 96, "max_height": 64}
    ctx = StageContext(tmp_path / "out", backend_config_from_mapping(mapping))
    item = PlanItem("clip_000000", str(source), "location")
    outcome = step_camera(ctx, item)
    assert outcome.status == "passed", outcome
    info = json.loads(ctx.workspace.file(item.id, "source.json").read_text())
    assert {k: info[k] for k in ("fps", "num_frames", "width", "height")} == {
        "fps": 16.0,
        "num_frames": 50,
        "width": 96,
        "height": 56,
    }
    assert info["original"] == {"fps": 32.0, "num_frames": 100, "width": 192, "height": 112}
    reader = VideoReader(ctx.workspace.file(item.id, "source.mp4"))
    meta = reader.metadata
    assert (meta.width, meta.height, meta.num_frames, float(meta.fps)) == (96, 56, 50, 16.0)
    # frame k of the working clip is source frame 2k
    original = VideoReader(source).get_frames([10], size=(56, 96))[0].astype(int)
    assert np.abs(reader.get_frames([5])[0].astype(int) - original).mean() < 6


class RecordingAnimator:
    def __init__(self):
        self.asked: list[int] = []

    def animate(self, image, prompt, *, num_frames=81, seed=0):
        self.asked.append(num_frames)
        return np.stack([np.full_like(image, i) for i in range(num_frames)])


class FixedVLM:
    def ground_clip(self, frames):
        return [GroundedObject("person", (250, 250, 750, 750))]


class PassingScorer:
    def score(self, source, edited, prompt):
        return EditScore(10.0, 10.0, 10.0, 10.0)


class Eraser:
    def __init__(self):
        self.prompts: list[str] = []

    def erase(self, image, mask, *, prompt="", seed=0):
        self.prompts.append(prompt)
        return np.where(mask[..., None], 0, image).astype(np.uint8)


@pytest.mark.parametrize("length", [21, 81])
def test_background_made_at_81_frames_then_fitted(length: int) -> None:
    frames = np.zeros((length, 32, 48, 3), np.uint8)
    animator, eraser = RecordingAnimator(), Eraser()
    result = generate_background(
        frames,
        frames[0] + 50,
        FixedVLM(),
        eraser,
        animator,
        PassingScorer(),
        "Move the subject to a sandy beach at low tide, with waves",
        num_frames=81,
    )
    assert result.passed and animator.asked == [81] and result.generated_frames == 81
    assert result.video.shape == (length, 32, 48, 3)
    assert [int(f[0, 0, 0]) for f in result.video] == list(range(length))  # the first frames, in order
    # the inpainter is asked for the empty new scene; the scorer gets the removal instruction
    assert eraser.prompts == ["a sandy beach at low tide, empty, with nothing and no one in front of it"]
    assert result.fill_prompt == eraser.prompts[0] and result.erase_prompt.startswith("Remove the person")
    assert fill_prompt("Make it nicer") == EMPTY_SCENE


class ShiftedGenerator:
    """Returns the control video, frame 0 included, nothing like the edited frame 0 (as a VAE would)."""

    def generate(self, inputs, *, seed=0):
        return np.asarray(inputs.control_video).copy()


def test_final_video_keeps_the_edited_frame0_exactly() -> None:
    rng = np.random.default_rng(1)
    source = rng.integers(0, 255, (9, 24, 32, 3), dtype=np.uint8)
    mask = np.zeros((9, 24, 32), bool)
    mask[:, 6:18, 10:22] = True
    background = rng.integers(0, 255, (9, 24, 32, 3), dtype=np.uint8)
    edited0 = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    result = generate_edited_video(
        source, mask, background, edited0, "p", ShiftedGenerator(), PassingScorer(), 8.0, (1, 3, 5, 7)
    )
    assert np.array_equal(result.video[0], edited0)
    assert np.array_equal(result.video[1:], result.control[1:])  # the rest is the generator's
    assert result.frame_indices == [1, 3, 5, 7]  # frame 0 is never scored
