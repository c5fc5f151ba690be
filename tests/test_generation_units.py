"""Exact unit tests of the generation pipeline's pure algorithms on small synthetic arrays.

Pins the fixed-camera check's pieces (pair sampling, the working-size grey frame, DIS flow, the RANSAC
homography of a flow field, its translation/rotation/scale read-out, the per-pair limits at their
boundaries and the clip decision with its report), BAIT's anchor sampling, box validation and strict
majority vote, and the Canny edge fusion of stage 5 (defaults, mask boundaries, dtypes).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from sparkle_video.generation import camera
from sparkle_video.generation.bait import MajorityVote, anchor_indices, union_of_objects, valid_pixel_box
from sparkle_video.generation.camera import (
    CameraReport,
    PairMotion,
    check_camera,
    decide,
    dense_flow,
    homography_from_flow,
    homography_stats,
    is_moving,
    needed_frames,
    pair_motion,
    sample_pairs,
    working_gray,
)
from sparkle_video.generation.edges import canny_video, control_video, fuse_edges
from sparkle_video.generation.settings import CameraThresholds

LIMITS = CameraThresholds()


def texture(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random grey texture (DIS and Canny both need structure at several scales)."""
    rng = np.random.default_rng(seed)
    small = (rng.random((max(2, height // 6), max(2, width // 6))) * 255).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def color_frames(seed: int, frames: int = 2, height: int = 36, width: int = 48) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames whose channels differ, so the RGB->grey weights matter."""
    return np.stack(
        [
            np.stack([texture(seed * 10 + t * 3 + c, height, width) for c in range(3)], -1)
            for t in range(frames)
        ]
    )


def homography_flow(matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """The exact ``(H, W, 2)`` float32 flow of a homography: where each pixel goes, minus where it is."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    out = matrix @ pts
    moved = (out[:2] / out[2]).T.reshape(height, width, 2)
    return (moved - np.stack([xs, ys], -1)).astype(np.float32)


def pair(
    translation: float = 0.0, rotation: float = 0.0, scale: float = 0.0, ratio: float = 1.0
) -> PairMotion:
    return PairMotion(0, 4, translation, rotation, scale, ratio)


# -- camera: pair sampling -----------------------------------------------------------------------------
def test_sample_pairs_spreads_fixed_gap_pairs_over_the_clip() -> None:
    starts = [0, 11, 22, 33, 43, 54, 65, 76]  # evenly spread, the last pair ending on the last frame
    assert sample_pairs(81, 8, 4) == [(s, s + 4) for s in starts]
    assert sample_pairs(10, 3, 1) == [(0, 1), (4, 5), (8, 9)]  # a gap of one frame is kept as asked
    assert sample_pairs(81, 1, 4) == [(0, 4)] and sample_pairs(81, 0, 4) == [(0, 4)]  # at least one pair
    assert sample_pairs(6, 8, 4) == [(0, 4), (1, 5)]  # fewer distinct starts than asked on a short clip
    assert sample_pairs(3, 8, 4) == [(0, 2)] and sample_pairs(2, 8, 4) == [(0, 1)]  # the gap shrinks to fit
    assert sample_pairs(0, 8, 4) == []
    assert all(type(a) is int and type(b) is int for a, b in sample_pairs(81, 8, 4))


# -- camera: working frame and flow ----------------------------------------------------------------------
def test_working_gray_converts_rgb_and_area_averages_to_the_working_width() -> None:
    rgb = color_frames(1, 1, 270, 480)[0]
    gray = working_gray(rgb, 160)
    expected = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (160, 90), interpolation=cv2.INTER_AREA)
    assert gray.shape == (90, 160) and gray.dtype == np.uint8
    assert np.array_equal(gray, expected)
    # area averaging: each output pixel is the mean of its 3x3 block of the grey frame
    blocks = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).reshape(90, 3, 160, 3).mean(axis=(1, 3))
    assert np.abs(gray - blocks).max() <= 0.5 + 1e-9
    wrong_order = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY), (160, 90), interpolation=cv2.INTER_AREA)
    assert not np.array_equal(gray, wrong_order)


def test_working_gray_passes_grey_through_and_keeps_a_minimum_height() -> None:
    grey = texture(2, 90, 160)
    same = working_gray(grey, 160)
    assert same is grey  # already at the working width: no copy, no resampling
    assert working_gray(texture(3, 8, 64), 32).shape == (8, 32)  # 4 rows would be too few: 8
    assert working_gray(texture(3, 4, 64), 32).shape == (8, 32)
    assert working_gray(texture(3, 18, 64), 32).shape == (9, 32)  # above the floor: the aspect ratio


def test_dense_flow_is_dis_medium_from_a_to_b() -> None:
    a = texture(4, 90, 160)
    b = np.roll(a, 2, axis=1)  # b is a moved 2 px right
    flow = dense_flow(a, b)
    medium = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    ultrafast = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST).calc(a, b, None)
    assert flow.shape == (90, 160, 2) and flow.dtype == np.float32
    assert np.array_equal(flow, medium) and not np.array_equal(flow, ultrafast)
    centre = flow[20:70, 30:130]
    assert abs(float(np.median(centre[..., 0])) - 2.0) < 0.05 and abs(float(np.median(centre[..., 1]))) < 0.05


# -- camera: homography of a flow field ----------------------------------------------------------------
def grid_points(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The documented sampling: every 4 px, ``max(2, min(h, w) // 16)`` px in from each border."""
    margin = max(2, min(height, width) // 16)
    return np.mgrid[margin : height - margin : 4, margin : width - margin : 4]


@pytest.mark.parametrize(("height", "width"), [(64, 64), (40, 48)])
def test_homography_from_flow_fits_the_grid_and_counts_its_inliers(height: int, width: int) -> None:
    rng = np.random.default_rng(height)
    flow = np.zeros((height, width, 2), np.float32) + np.float32([3.0, -2.0])  # a pure shift
    outliers = rng.random((height, width)) < 0.2
    angle = rng.uniform(0, 2 * np.pi, (height, width))
    # outliers 1 px off: beyond the 0.5 px RANSAC threshold, yet inside 1.5 or the 3 px default
    flow[outliers] += np.stack([np.cos(angle), np.sin(angle)], -1)[outliers].astype(np.float32)
    matrix, ratio = homography_from_flow(flow)
    assert matrix is not None
    np.testing.assert_allclose(matrix / matrix[2, 2], [[1, 0, 3], [0, 1, -2], [0, 0, 1]], atol=1e-6)
    ys, xs = grid_points(height, width)
    assert ratio == pytest.approx(1.0 - outliers[ys, xs].mean(), abs=1e-12)
    assert 0.7 < ratio < 0.9


def test_homography_from_flow_needs_eight_grid_points() -> None:
    shift = np.zeros((10, 18, 2), np.float32) + np.float32([1.0, 0.5])  # a 2 x 4 grid: 8 points
    matrix, ratio = homography_from_flow(shift)
    assert matrix is not None and ratio == 1.0
    np.testing.assert_allclose(matrix / matrix[2, 2], [[1, 0, 1], [0, 1, 0.5], [0, 0, 1]], atol=1e-6)
    assert homography_from_flow(np.zeros((8, 30, 2), np.float32)) == (None, 0.0)  # a 1 x 7 grid


# -- camera: translation / rotation / scale of a homography ----------------------------------------------
def project(matrix: np.ndarray, x: float, y: float) -> np.ndarray:
    u, v, w = matrix @ (x, y, 1.0)
    return np.array([u / w, v / w])


def test_homography_stats_reads_centre_motion_rotation_and_scale() -> None:
    zoom_out = np.vstack([cv2.getRotationMatrix2D((80, 45), -3.0, 0.9), [0, 0, 1]])
    t, r, s = homography_stats(zoom_out, 160, 90)
    assert t < 1e-9 and r == pytest.approx(3.0, abs=1e-9) and s == pytest.approx(0.1, abs=1e-9)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.001, 0.0, 1.0]])  # perspective: the centre moves
    t, r, s = homography_stats(tilt, 160, 90)
    centre = project(tilt, 80, 45)
    jx, jy = project(tilt, 81, 45) - centre, project(tilt, 80, 46) - centre
    assert t == pytest.approx(math.hypot(*(centre - (80, 45))), abs=1e-9) and t > 6
    assert s == pytest.approx(abs(math.sqrt(jx[0] * jy[1] - jx[1] * jy[0]) - 1), abs=1e-9)
    assert r == pytest.approx(abs(math.degrees(math.atan2(jx[1] - jy[0], jx[0] + jy[1]))), abs=1e-9)
    assert s > 0.07


# -- camera: one pair -------------------------------------------------------------------------------
def test_pair_motion_reads_the_fitted_homography_about_the_frame_centre(monkeypatch) -> None:
    zoom = np.vstack([cv2.getRotationMatrix2D((80, 45), 0.0, 1.01), [0, 0, 1]])
    zoom[:2, 2] += (0.3, -0.4)
    a = texture(5, 90, 160)
    monkeypatch.setattr(camera, "dense_flow", lambda x, y: homography_flow(zoom, *x.shape))
    motion = pair_motion(a, a, 3, 7)
    assert (motion.a, motion.b) == (3, 7)
    assert motion.translation == pytest.approx(0.5, abs=1e-4)  # the centre only shifts: zoom is about it
    assert motion.rotation_deg == pytest.approx(0.0, abs=1e-4)
    assert motion.scale_change == pytest.approx(0.01, abs=1e-5)
    assert motion.inlier_ratio == 1.0
    default = pair_motion(a, a)
    assert (default.a, default.b) == (0, 1)


def test_pair_motion_of_real_frames_and_of_a_failed_fit() -> None:
    a = texture(6, 90, 160)
    still = pair_motion(a, a.copy(), 2, 6)
    assert still.translation < 0.05 and still.scale_change < 1e-3 and still.inlier_ratio > 0.9
    moved = pair_motion(a, np.roll(a, 2, axis=1))
    assert moved.translation == pytest.approx(2.0, abs=0.1)
    tiny = np.zeros((8, 30), np.uint8)  # too small for an 8-point grid: no homography
    assert pair_motion(tiny, tiny, 5, 9) == PairMotion(5, 9, math.inf, math.inf, math.inf, 0.0)


# -- camera: limits and decision ---------------------------------------------------------------------
def test_is_moving_limits_are_inclusive_of_the_threshold() -> None:
    assert is_moving(pair(), LIMITS) == ""
    at_limits = pair(
        LIMITS.max_translation, LIMITS.max_rotation_deg, LIMITS.max_scale_change, LIMITS.min_inlier_ratio
    )
    assert is_moving(at_limits, LIMITS) == ""
    assert is_moving(pair(ratio=0.29), LIMITS) == "inlier ratio 0.29 < 0.3"
    assert is_moving(pair(translation=0.46), LIMITS) == "translation 0.46px > 0.45"
    assert is_moving(pair(rotation=0.31), LIMITS) == "rotation 0.31deg > 0.3"
    assert is_moving(pair(scale=0.0061), LIMITS) == "scale change 0.0061 > 0.006"
    assert is_moving(pair(0.5, 0.5, 0.5, 0.1), LIMITS).startswith("inlier ratio")  # checked first


def test_decide_at_the_moving_fraction_boundary_and_its_report() -> None:
    quarter = [pair(translation=0.5), pair(rotation=0.4)] + [pair()] * 6  # 2/8 = the 0.25 limit
    report = decide(quarter, LIMITS)
    assert report.static is True
    assert report.reason == "2/8 frame pairs show camera motion"
    assert (report.num_pairs, report.moving_pairs) == (8, 2)
    report = decide([pair(), pair(translation=0.5), pair(rotation=0.4), pair(scale=0.01)], LIMITS)
    assert report.static is False
    assert report.reason == "camera moves in 3/4 frame pairs (first: translation 0.50px > 0.45)"
    assert decide([pair()], LIMITS).reason == "0/1 frame pairs show camera motion"


def test_decide_reports_rounded_worst_values_ignoring_failed_fits() -> None:
    pairs = [
        PairMotion(0, 4, 0.123456, 0.0123456, 0.00123456, 0.987654),
        PairMotion(5, 9, 0.05, 0.01, 0.001, 0.345678),
        PairMotion(10, 14, math.inf, math.inf, math.inf, 0.0),
    ]
    report = decide(pairs[:2], LIMITS)
    assert report == CameraReport(
        True, "0/2 frame pairs show camera motion", 2, 0, 0.1235, 0.0123, 0.0012, 0.3457
    )
    report = decide(pairs, LIMITS)
    worst = (report.max_translation, report.max_rotation_deg, report.max_scale_change)
    assert worst == (0.1235, 0.0123, 0.0012)
    assert report.min_inlier_ratio == 0.0 and report.moving_pairs == 1
    failed = decide([pairs[2]], LIMITS)
    assert (failed.max_translation, failed.max_rotation_deg, failed.max_scale_change) == (math.inf,) * 3
    assert failed.static is False


def test_empty_decision_and_report_dict() -> None:
    report = decide([], LIMITS)
    assert report == CameraReport(False, "clip too short to compare frames", 0, 0, 0.0, 0.0, 0.0, 0.0)
    assert report.static is False
    assert report.to_dict() == {
        "static": False,
        "reason": "clip too short to compare frames",
        "num_pairs": 0,
        "moving_pairs": 0,
        "max_translation": 0.0,
        "max_rotation_deg": 0.0,
        "max_scale_change": 0.0,
        "min_inlier_ratio": 0.0,
    }


# -- camera: the whole check on a mapping of decoded frames ---------------------------------------------
class RecordingFrames(dict):
    """``{index: frame}`` that remembers which frames were read."""

    def __init__(self, frames: dict[int, np.ndarray], num_frames: int | None = None) -> None:
        super().__init__(frames)
        if num_frames is not None:
            self.num_frames = num_frames
        self.reads: list[int] = []

    def __getitem__(self, key: int) -> np.ndarray:
        self.reads.append(key)
        return super().__getitem__(key)


def still_frame() -> np.ndarray:
    return np.repeat(texture(7, 90, 160)[..., None], 3, axis=-1)


def test_check_camera_reads_only_needed_frames_once_each() -> None:
    frame = still_frame()
    frames = RecordingFrames({i: frame for i in needed_frames(81)})
    report = check_camera(frames)
    assert sorted(frames.reads) == needed_frames(81)  # num_frames = largest key + 1; each frame read once
    assert report.static and (report.num_pairs, report.moving_pairs) == (8, 0)


def test_check_camera_takes_num_frames_from_the_mapping() -> None:
    frame = still_frame()
    frames = RecordingFrames({i: frame for i in range(81)}, num_frames=41)
    report = check_camera(frames, CameraThresholds(num_pairs=3))
    assert sorted(frames.reads) == needed_frames(41, CameraThresholds(num_pairs=3)) == [0, 4, 18, 22, 36, 40]
    assert report.num_pairs == 3 and report.static
    empty = check_camera({})
    assert empty == decide([], LIMITS)


def test_check_camera_labels_each_pair_motion_with_its_frames(monkeypatch) -> None:
    seen: list[list[PairMotion]] = []

    def recording_decide(pairs: list[PairMotion], limits: CameraThresholds) -> CameraReport:
        seen.append(pairs)
        return decide(pairs, limits)

    monkeypatch.setattr(camera, "decide", recording_decide)
    frame = still_frame()
    check_camera(np.stack([frame] * 17), CameraThresholds(num_pairs=3))
    assert [(p.a, p.b) for p in seen[0]] == [(0, 4), (6, 10), (12, 16)] == sample_pairs(17, 3, 4)


def test_check_camera_applies_the_working_width() -> None:
    wide = cv2.resize(still_frame(), (320, 180), interpolation=cv2.INTER_CUBIC)
    clip = np.stack([wide, np.roll(wide, 2, axis=1)] * 3)  # every odd frame is 2 px right of its even one
    report = check_camera(clip, CameraThresholds(num_pairs=2, pair_gap=1))
    assert report.max_translation == pytest.approx(1.0, abs=0.1)  # 2 px at 320 wide = 1 px at 160
    assert report.moving_pairs == 2 and not report.static


# -- BAIT -----------------------------------------------------------------------------------------
def test_anchor_indices_at_exact_rates() -> None:
    assert anchor_indices(81, 16) == [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80]  # 2 fps by default
    assert anchor_indices(81, 16, 0.5) == [0, 32, 64]
    assert anchor_indices(5, 2, 2.0) == [0, 1, 2, 3, 4]  # one frame per anchor at the clip's own rate
    assert anchor_indices(5, 1, 2.0) == [0, 1, 2, 3, 4]  # never a step under one frame
    assert anchor_indices(10, 16, 0) == [0] and anchor_indices(10, 16, -1.0) == [0]  # no rate: frame 0 only
    assert anchor_indices(1, 16) == [0]
    assert anchor_indices(0, 16) == [] and anchor_indices(0, 16, 0) == [] and anchor_indices(-3, 16) == []


def test_valid_pixel_box_side_boundaries() -> None:
    assert valid_pixel_box([0, 0, 20, 20], 100, 100) == (0, 0, 2, 2)  # exactly min_side: kept
    assert valid_pixel_box([0, 0, 20, 20], 100, 100, min_side=3) is None
    assert valid_pixel_box([500, 0, 520, 1000], 100, 50) == (50, 0, 52, 50)
    assert valid_pixel_box([500, 0, 510, 1000], 100, 50) is None  # 1 px wide, far from the origin
    assert valid_pixel_box([0, 500, 1000, 520], 100, 50) is None  # 1 px high (20/1000 of 50 rows)
    assert valid_pixel_box([0, 500, 1000, 540], 100, 50) == (0, 25, 100, 27)
    assert valid_pixel_box([0, 0, 10, 900], 100, 50) is None  # narrow only
    assert valid_pixel_box([0, 0, 900, 10], 100, 50) is None  # flat only
    assert valid_pixel_box([100, 200, 300, 600], 200, 100) == (20, 20, 60, 60)  # x by width, y by height
    assert valid_pixel_box([1, 2, 3], 100, 50) is None and valid_pixel_box([1, 2, 3, 4, 5], 100, 50) is None
    assert valid_pixel_box(None, 100, 50) is None


def test_majority_vote_counts_bool_passes_strictly() -> None:
    vote = MajorityVote()
    assert vote.counts is None and vote.passes == 0
    with pytest.raises(ValueError, match=r"^no pass to vote on$"):
        vote.result()
    vote.add(np.array([[[True, False]]]))
    assert vote.passes == 1 and vote.result().tolist() == [[[True, False]]]  # one pass: its own mask
    vote.add(np.array([[[True, True]]]))
    assert vote.passes == 2 and vote.result().tolist() == [[[True, False]]]  # a tie is not a majority
    vote.add(np.array([[[False, True]]]))
    assert vote.passes == 3 and vote.result().tolist() == [[[True, True]]]
    assert vote.counts.dtype == np.uint16 and vote.counts.tolist() == [[[2, 2]]]
    assert vote.result().dtype == bool


def test_majority_vote_reads_any_nonzero_value_as_one_vote() -> None:
    vote = MajorityVote()
    vote.add(np.array([[[5, 0]]], np.uint8))  # a label value, not a count
    vote.add(np.array([[[0.0, 0.5]]]))
    vote.add(np.zeros((1, 1, 2), np.int64))
    assert vote.counts.tolist() == [[[1, 1]]] and vote.result().tolist() == [[[False, False]]]


def test_union_of_objects_is_per_pixel_any_over_objects() -> None:
    masks = np.zeros((2, 3, 2, 2), np.uint8)
    masks[0, 0, 0, 0] = 1
    masks[1, 2, 1, 1] = 7
    union = union_of_objects(masks)
    assert union.shape == (3, 2, 2) and union.dtype == bool
    assert np.argwhere(union).tolist() == [[0, 0, 0], [2, 1, 1]]
    with pytest.raises(ValueError, match=r"\(num_boxes, T, H, W\), got \(3, 2, 2\)"):
        union_of_objects(union)


# -- edges ---------------------------------------------------------------------------------------
def test_canny_video_is_opencv_canny_of_the_rgb_grey_at_100_200() -> None:
    frames = color_frames(2)
    edges = canny_video(frames)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    assert edges.shape == (2, 36, 48) and edges.dtype == np.uint8
    assert np.array_equal(edges, np.stack([cv2.Canny(g, 100, 200) for g in grey]))
    assert set(np.unique(edges)) == {0, 255}
    bgr_grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    assert not np.array_equal(edges, np.stack([cv2.Canny(g, 100, 200) for g in bgr_grey]))
    assert np.array_equal(canny_video(frames, 50, 120), np.stack([cv2.Canny(g, 50, 120) for g in grey]))


def test_fuse_edges_switches_exactly_at_the_mask_boundary() -> None:
    source = np.full((2, 3, 4), 255, np.uint8)
    background = np.zeros((2, 3, 4), np.uint8)
    background[:, 1] = 128
    mask = np.zeros((2, 3, 4), np.uint8)
    mask[0, :, 2:] = 1  # uint8 0/1 masks are read as booleans
    mask[1, 2, 0] = 255
    fused = fuse_edges(source, background, mask)
    assert fused.dtype == np.uint8
    assert fused[0].tolist() == [[0, 0, 255, 255], [128, 128, 255, 255], [0, 0, 255, 255]]
    assert fused[1].tolist() == [[0, 0, 0, 0], [128] * 4, [255, 0, 0, 0]]
    with pytest.raises(ValueError, match=r"mask \(2, 3\)"):
        fuse_edges(source, background, mask[:, :, 0])


def test_control_video_defaults_and_thresholds_reach_both_edge_maps() -> None:
    source, background = color_frames(3), color_frames(4)
    mask = np.zeros((2, 36, 48), bool)
    mask[:, 10:25, 12:30] = True
    expected = fuse_edges(canny_video(source, 100, 200), canny_video(background, 100, 200), mask)
    control = control_video(source, background, mask)
    assert control.shape == (2, 36, 48, 3) and control.dtype == np.uint8
    assert all(np.array_equal(control[..., c], expected) for c in range(3))
    all_source = control_video(source, background, np.ones_like(mask), 40, 90)[..., 0]
    all_background = control_video(source, background, np.zeros_like(mask), 40, 90)[..., 0]
    assert np.array_equal(all_source, canny_video(source, 40, 90))
    assert np.array_equal(all_background, canny_video(background, 40, 90))
    assert not np.array_equal(all_source, canny_video(source, 40, 200))
    assert not np.array_equal(all_background, canny_video(background, 40, 200))
