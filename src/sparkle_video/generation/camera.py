"""Stage 1's coarse check: is the camera fixed? Dense flow + RANSAC homography on sampled frame pairs.

For each pair the homography fitted to the dense optical flow is the camera's apparent motion (moving
foreground pixels are RANSAC outliers). A fixed camera keeps it close to the identity: the check reads its
translation, rotation and scale change, and calls a pair *moving* when any of them is past its limit or
the fit is too poor to trust. A clip is static when few enough pairs move (hand-held shake shows up as
many pairs with small but non-zero motion; pans and zooms as every pair moving the same way).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from .settings import CameraThresholds


@dataclass(frozen=True)
class PairMotion:
    """Global motion between frames ``a`` and ``b`` (translation in px at the working width)."""

    a: int
    b: int
    translation: float
    rotation_deg: float
    scale_change: float
    inlier_ratio: float


@dataclass(frozen=True)
class CameraReport:
    """Stage 1's decision for one clip, with the statistics it rests on."""

    static: bool
    reason: str
    num_pairs: int
    moving_pairs: int
    max_translation: float
    max_rotation_deg: float
    max_scale_change: float
    min_inlier_ratio: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_pairs(num_frames: int, num_pairs: int, gap: int) -> list[tuple[int, int]]:
    """``num_pairs`` (i, i+gap) pairs spread evenly over the clip (fewer when the clip is short)."""
    gap = max(1, min(gap, num_frames - 1))
    last_start = num_frames - 1 - gap
    if last_start < 0:
        return []
    starts = np.unique(np.linspace(0, last_start, num=max(1, num_pairs)).round().astype(int))
    return [(int(s), int(s) + gap) for s in starts]


def working_gray(frame: np.ndarray, width: int) -> np.ndarray:
    """A grey frame scaled to ``width`` pixels wide (area averaging)."""
    h, w = frame.shape[:2]
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    if w == width:
        return gray
    height = max(8, round(h * width / w))
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)


def dense_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Forward dense flow from grey ``a`` to ``b`` (OpenCV DIS, medium preset).

    The fast preset costs a fifth as much but roughly doubles the apparent motion of real static
    clips at this working width, eating the margin between them and a slow pan.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(a, b, None)


def homography_from_flow(flow: np.ndarray, step: int = 4) -> tuple[np.ndarray | None, float]:
    """RANSAC homography of the flow field sampled on a grid; returns (H or None, inlier ratio)."""
    h, w = flow.shape[:2]
    margin = max(2, min(h, w) // 16)  # borders have the least reliable flow
    ys, xs = np.mgrid[margin : h - margin : step, margin : w - margin : step]
    src = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    dst = src + flow[ys.ravel(), xs.ravel()]
    if len(src) < 8:
        return None, 0.0
    matrix, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 0.5, maxIters=500, confidence=0.99)
    if matrix is None or inliers is None:
        return None, 0.0
    return matrix, float(inliers.mean())


def homography_stats(matrix: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """(translation px, rotation degrees, scale change) of a homography about the frame centre.

    Translation is how far the frame centre moves; rotation and scale come from the 2x2 linear part
    measured at the centre, so a perspective tilt shows up through the centre's displacement.
    """
    cx, cy = width / 2.0, height / 2.0
    pts = np.array([[[cx, cy]], [[cx + 1, cy]], [[cx, cy + 1]]], np.float64)
    out = cv2.perspectiveTransform(pts, matrix.astype(np.float64))[:, 0]
    translation = float(np.hypot(*(out[0] - (cx, cy))))
    jx, jy = out[1] - out[0], out[2] - out[0]
    scale = math.sqrt(abs(jx[0] * jy[1] - jx[1] * jy[0]))
    rotation = math.degrees(math.atan2(jx[1] - jy[0], jx[0] + jy[1]))
    return translation, abs(rotation), abs(scale - 1.0)


def pair_motion(a: np.ndarray, b: np.ndarray, ia: int = 0, ib: int = 1) -> PairMotion:
    """Global motion between two grey working-size frames."""
    flow = dense_flow(a, b)
    matrix, ratio = homography_from_flow(flow)
    if matrix is None:
        return PairMotion(ia, ib, float("inf"), float("inf"), float("inf"), 0.0)
    t, r, s = homography_stats(matrix, a.shape[1], a.shape[0])
    return PairMotion(ia, ib, t, r, s, ratio)


def is_moving(pair: PairMotion, limits: CameraThresholds) -> str:
    """Why the camera moved between this pair, or ``""`` when it did not."""
    if pair.inlier_ratio < limits.min_inlier_ratio:
        return f"inlier ratio {pair.inlier_ratio:.2f} < {limits.min_inlier_ratio}"
    if pair.translation > limits.max_translation:
        return f"translation {pair.translation:.2f}px > {limits.max_translation}"
    if pair.rotation_deg > limits.max_rotation_deg:
        return f"rotation {pair.rotation_deg:.2f}deg > {limits.max_rotation_deg}"
    if pair.scale_change > limits.max_scale_change:
        return f"scale change {pair.scale_change:.4f} > {limits.max_scale_change}"
    return ""


def decide(pairs: list[PairMotion], limits: CameraThresholds) -> CameraReport:
    """The clip-level decision from per-pair motion (pure; the numbers are in the report)."""
    if not pairs:
        return CameraReport(False, "clip too short to compare frames", 0, 0, 0.0, 0.0, 0.0, 0.0)
    reasons = [is_moving(p, limits) for p in pairs]
    moving = [r for r in reasons if r]
    fraction = len(moving) / len(pairs)
    static = fraction <= limits.max_moving_pair_fraction
    if static:
        reason = f"{len(moving)}/{len(pairs)} frame pairs show camera motion"
    else:
        reason = f"camera moves in {len(moving)}/{len(pairs)} frame pairs (first: {moving[0]})"

    def worst(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return round(max(finite), 4) if finite else float("inf")

    return CameraReport(
        static=static,
        reason=reason,
        num_pairs=len(pairs),
        moving_pairs=len(moving),
        max_translation=worst([p.translation for p in pairs]),
        max_rotation_deg=worst([p.rotation_deg for p in pairs]),
        max_scale_change=worst([p.scale_change for p in pairs]),
        min_inlier_ratio=round(min(p.inlier_ratio for p in pairs), 4),
    )


def check_camera(frames: Any, limits: CameraThresholds = CameraThresholds()) -> CameraReport:
    """Stage 1's coarse check on ``(T, H, W, 3)`` RGB frames (or ``(T, H, W)`` grey).

    ``frames`` may also be a mapping ``{index: frame}`` holding at least :func:`needed_frames`, with
    ``num_frames`` taken from its ``num_frames`` attribute or its largest key + 1.
    """
    if isinstance(frames, dict):
        num_frames = int(getattr(frames, "num_frames", max(frames) + 1 if frames else 0))
    else:
        num_frames = len(frames)
    pairs = sample_pairs(num_frames, limits.num_pairs, limits.pair_gap)
    cache: dict[int, np.ndarray] = {}

    def gray(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = working_gray(np.asarray(frames[i]), limits.work_width)
        return cache[i]

    return decide([pair_motion(gray(a), gray(b), a, b) for a, b in pairs], limits)


def needed_frames(num_frames: int, limits: CameraThresholds = CameraThresholds()) -> list[int]:
    """The frame indices :func:`check_camera` looks at (decode only these)."""
    return sorted({i for pair in sample_pairs(num_frames, limits.num_pairs, limits.pair_gap) for i in pair})
