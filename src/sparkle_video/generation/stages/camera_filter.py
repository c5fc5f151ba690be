"""Stage 1: keep fixed-camera sources (coarse flow + homography check, optional VLM fine check)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...data.video import VideoMetadata
from ..backends.protocols import CameraJudgement, VisionLanguageModel
from ..camera import CameraReport, check_camera
from ..settings import PipelineSettings


@dataclass(frozen=True)
class SourceCheck:
    """Whether a source clip is usable at all, before looking at its motion."""

    ok: bool
    reason: str = ""


def check_source(
    meta: VideoMetadata, settings: PipelineSettings = PipelineSettings(), working_frames: int | None = None
) -> SourceCheck:
    """Refuse clips the method cannot use: too short (counted after the size policy's resampling,
    ``working_frames``), odd-sized, portrait or tiny."""
    frames = meta.num_frames if working_frames is None else working_frames
    if frames < settings.min_frames:
        detail = "" if frames == meta.num_frames else f" at {settings.fps} fps (of {meta.num_frames})"
        return SourceCheck(False, f"too short: {frames} frames{detail} < {settings.min_frames}")
    if meta.width % 2 or meta.height % 2:
        return SourceCheck(
            False, f"odd frame size {meta.width}x{meta.height} (H.264 yuv420p needs even sizes)"
        )
    if meta.height > meta.width:
        return SourceCheck(False, f"portrait source {meta.width}x{meta.height}: Sparkle clips are landscape")
    if min(meta.width, meta.height) < 64:
        return SourceCheck(False, f"too small: {meta.width}x{meta.height}")
    return SourceCheck(True)


@dataclass(frozen=True)
class CameraResult:
    passed: bool
    reason: str
    report: CameraReport
    fine: CameraJudgement | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {**self.report.to_dict(), "static": self.passed, "reason": self.reason}
        out["static_coarse"] = self.report.static
        if self.fine is not None:
            out["fine"] = {"static": self.fine.static, "reason": self.fine.reason}
        return out


def filter_camera(
    frames: Any,
    settings: PipelineSettings = PipelineSettings(),
    vlm: VisionLanguageModel | None = None,
    fine_frames: Sequence[np.ndarray] | None = None,
) -> CameraResult:
    """The coarse check on ``frames`` (array or ``{index: frame}``), then the VLM's when asked for."""
    report = check_camera(frames, settings.camera)
    if not report.static:
        return CameraResult(False, report.reason, report)
    if vlm is None or not fine_frames:
        return CameraResult(True, report.reason, report)
    judgement = vlm.judge_static_camera(list(fine_frames))
    reason = report.reason if judgement.static else f"fine check: {judgement.reason or 'camera moves'}"
    return CameraResult(bool(judgement.static), reason, report, judgement)
