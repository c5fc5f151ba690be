"""SparkleCollator: explicit resize policies (crop like the model, stretch, pad) and clear size errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import clip

from sparkle_video import VideoReader, frames_to_tensor, write_video
from sparkle_video.data import SparkleCollator, fit_plan


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x128 clip (2:1) whose columns are all different, so any shift of a crop shows."""
    path = tmp_path_factory.mktemp("c") / "wide.mp4"
    frames = clip(4, frames=6, height=64, width=128)
    frames[:, :, :, 2] = np.arange(128, dtype=np.uint8)[None, None, :] * 2  # a horizontal ramp in blue
    write_video(frames, path, fps=16, crf=0)
    return path


def rows(path: Path, n: int = 1) -> list[dict]:
    return [{"id": f"x{i}", "prompt": "p", "source_video": VideoReader(path)} for i in range(n)]


def collate(path: Path, size, resize: str, num_frames: int = 4) -> torch.Tensor:
    c = SparkleCollator(
        num_frames=num_frames, size=size, value_range=(0, 255), video_fields=("source_video",), resize=resize
    )
    return c(rows(path))["source_video"][0]


def test_plan_matches_the_model_crop_geometry() -> None:
    plan = fit_plan(720, 1280, (480, 832), "crop")  # the model keeps columns 16..1263 of 1280
    assert plan.decode_size == (480, 854) and (plan.top, plan.left) == (0, 11)
    to_704 = fit_plan(720, 1280, (704, 1280), "crop")  # the model's 1280x704: 8 rows off top and bottom
    assert (to_704.decode_size, to_704.top, to_704.left) == ((720, 1280), 8, 0)
    assert fit_plan(720, 1280, (480, 480), "pad").decode_size == (270, 480)
    with pytest.raises(ValueError, match="resize must be one of"):
        fit_plan(1, 1, (1, 1), "zoom")


def test_crop_is_centred_and_undistorted(wide: Path) -> None:
    got = collate(wide, (32, 48), "crop").round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    full = VideoReader(wide).get_frames(range(4))
    # the reference: crop the centred 64x96 window (columns 16..111), then resize it
    ref = np.stack([cv2.resize(f[:, 16:112], (48, 32), interpolation=cv2.INTER_AREA) for f in full])
    assert got.shape == (4, 32, 48, 3)
    assert np.abs(got.astype(int) - ref.astype(int)).mean() < 3
    shifted = np.stack([cv2.resize(f[:, 0:96], (48, 32), interpolation=cv2.INTER_AREA) for f in full])
    assert np.abs(got.astype(int) - shifted.astype(int)).mean() > 6  # a left-aligned crop would be caught


def test_stretch_equals_the_by_hand_path(wide: Path) -> None:
    got = collate(wide, (32, 48), "stretch")
    by_hand = frames_to_tensor(VideoReader(wide).get_frames(range(4), size=(32, 48)), (0, 255))
    torch.testing.assert_close(got, by_hand)


def test_pad_keeps_the_whole_frame_with_black_borders(wide: Path) -> None:
    got = collate(wide, (64, 64), "pad")  # 64x128 fits as 32x64, rows 16..47
    assert got.shape == (3, 4, 64, 64)
    assert float(got[:, :, :16].abs().max()) == 0 and float(got[:, :, 48:].abs().max()) == 0
    inner = VideoReader(wide).get_frames(range(4), size=(32, 64))
    torch.testing.assert_close(got[:, :, 16:48], frames_to_tensor(inner, (0, 255)))


def test_size_none_needs_one_size(wide: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.mp4"
    write_video(clip(1, frames=5, height=48, width=64), other, fps=16)
    c = SparkleCollator(num_frames=3, size=None, video_fields=("source_video",))
    assert c(rows(wide, 2))["source_video"].shape == (2, 3, 3, 64, 128)
    mixed = [*rows(wide), {"id": "y", "prompt": "q", "source_video": VideoReader(other)}]
    with pytest.raises(ValueError, match=r"differ \(48x64, 64x128\): pass size"):
        c(mixed)
