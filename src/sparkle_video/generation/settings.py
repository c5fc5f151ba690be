"""Pipeline settings that are not backends: the score thresholds and the per-stage knobs.

They live in the same config file as the backends (``thresholds:`` and ``pipeline:``), so one file
describes a whole run. Defaults follow the paper (section 5 of the method).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    """EditScore ``overall`` (0-10) a sample needs to pass each filter; below is rejected."""

    frame0: float = 8.0  # stage 2: the edited first frame
    erase: float = 8.5  # stage 3: the first frame with the foreground removed
    final: float = 8.0  # stage 5: mean O_score over the four checked frames


@dataclass(frozen=True)
class CameraThresholds:
    """Stage 1's global-motion limits, measured between frame pairs at ``work_width`` pixels wide.

    A homography fitted to the dense flow is the camera's motion; a static camera keeps it near the
    identity. Translation is in pixels at the working size, rotation in degrees, scale as a ratio.
    """

    work_width: int = 160
    num_pairs: int = 8
    pair_gap: int = 4
    max_translation: float = 0.45
    max_rotation_deg: float = 0.3
    max_scale_change: float = 0.006
    min_inlier_ratio: float = 0.3
    max_moving_pair_fraction: float = 0.25


@dataclass(frozen=True)
class PipelineSettings:
    """Per-run knobs: frame counts, the BAIT sampling rate, Canny thresholds, timeouts and the seed."""

    seed: int = 0
    num_frames: int = 81  # the most frames a working clip keeps, and the I2V model's own length
    min_frames: int = 17
    fps: int = 16  # the working frame rate: faster sources are resampled down to it
    max_width: int = 1280  # the working size budget: larger sources are scaled down to fit
    max_height: int = 720
    anchor_fps: float = 2.0
    final_frame_indices: tuple[int, ...] = (1, 26, 51, 76)
    canny_low: int = 100
    canny_high: int = 200
    call_timeout_s: float = 600.0
    video_crf: int = 18
    video_preset: str = "medium"
    fine_camera_check: bool = False
    camera: CameraThresholds = field(default_factory=CameraThresholds)


@dataclass(frozen=True)
class WorkingClip:
    """How a source becomes the clip every stage works on (the paper's 1280x720, 16 fps, 81 frames).

    ``indices`` are the source frames kept, in order (a faster source is sampled down to ``fps`` by
    time, a longer one cut after ``num_frames``); ``width``/``height`` the size they are scaled to
    (aspect kept, even, within the budget; never scaled up).
    """

    indices: tuple[int, ...]
    fps: float
    width: int
    height: int

    @property
    def num_frames(self) -> int:
        return len(self.indices)

    def unchanged(self, num_frames: int, fps: float, width: int, height: int) -> bool:
        """True when the working clip is the source as it is (every frame, same rate and size)."""
        return (
            self.indices == tuple(range(num_frames))
            and abs(self.fps - fps) < 1e-6
            and (self.width, self.height) == (width, height)
        )


def working_size(width: int, height: int, max_width: int = 1280, max_height: int = 720) -> tuple[int, int]:
    """``(width, height)`` scaled down (never up) to fit ``max_width x max_height``, aspect kept, even."""
    scale = min(1.0, max_width / width, max_height / height)
    if scale >= 1.0:
        return width, height
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def working_clip(
    num_frames: int, fps: float, width: int, height: int, settings: PipelineSettings | None = None
) -> WorkingClip:
    """The size policy: which source frames, at what rate and size, the pipeline works on.

    A source above ``settings.fps`` is resampled to it (the nearest source frame to each working frame's
    time); at or below it keeps its own rate (frames are never invented). At most
    ``settings.num_frames`` frames are kept, from the start: a longer clip is cut, not skipped.
    """
    settings = settings or PipelineSettings()
    if num_frames < 1 or fps <= 0:
        raise ValueError(f"a source needs frames and a frame rate, got {num_frames} frames at {fps} fps")
    target = float(min(fps, settings.fps))
    if target < fps:
        duration = num_frames / fps
        count = min(settings.num_frames, max(1, int(np.floor(duration * target + 1e-9))))
        picks = np.minimum(np.round(np.arange(count) * fps / target).astype(int), num_frames - 1)
        indices = tuple(int(i) for i in picks)
    else:
        indices = tuple(range(min(num_frames, settings.num_frames)))
    w, h = working_size(width, height, settings.max_width, settings.max_height)
    return WorkingClip(indices, target, w, h)


def _from_mapping(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``values``, refusing an unknown key by name."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"unknown key {key!r} in {where}; known: {', '.join(sorted(fields))}")
        default = fields[key].default
        if key == "camera":
            value = _from_mapping(CameraThresholds, value, f"{where}.camera")
        elif isinstance(default, tuple):
            value = tuple(int(v) for v in value)
        elif isinstance(default, str):
            value = str(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where}.{key} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}.{key} must be a number, got {value!r}")
            value = type(default)(value)
        kwargs[key] = value
    return cls(**kwargs)


def thresholds_from_mapping(values: Mapping[str, Any]) -> Thresholds:
    return _from_mapping(Thresholds, values, "thresholds")


def settings_from_mapping(values: Mapping[str, Any]) -> PipelineSettings:
    return _from_mapping(PipelineSettings, values, "pipeline")
