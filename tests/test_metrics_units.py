"""Exact values of the judge-free metrics' building blocks, on small hand-made arrays with known answers.

Pins the working-size rounding, the foreground estimate (temporal median, threshold, morphology, prior
fallback), mask fitting, interior/background morphology, the texture gate, flow, each metric's formula
and edge cases (NaN, negative inputs, empty masks), decoding of a pair, how :func:`pair_metrics` wires
the pieces together, and ranks/Spearman with ties.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator

import av
import cv2
import numpy as np
import pytest
from bench_fixtures import edit_clip, source_clip, texture

from sparkle_video.bench.metrics import (
    METRIC_NAMES,
    REFERENCE_WIDTH,
    MetricConfig,
    PairFrames,
    PairMetrics,
    background_dynamics,
    background_motion,
    background_region,
    centre_prior,
    compute_metrics,
    decode_small,
    detail_integrity,
    estimate_foreground,
    fit_mask,
    flow_magnitude,
    flow_reliability,
    interior,
    load_pair,
    masked_ssim,
    motion_consistency,
    optical_flow,
    pair_metrics,
    rank,
    spearman,
    temporal_stability,
    texture_strength,
    to_gray,
    warp_residual,
    working_size,
)
from sparkle_video.data.video import as_video_reader, write_video
from sparkle_video.errors import SparkleDataError

#: OpenCV's 5x5 elliptic structuring element (a disk of radius 2), written out.
DISK5 = np.array(
    [[0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]], np.uint8
)
#: OpenCV's 3x3 elliptic structuring element (a cross).
CROSS3 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)


def mp4(frames: np.ndarray, fps: float = 16) -> bytes:
    buf = io.BytesIO()
    write_video(frames, buf, fps=fps)
    return buf.getvalue()


def grey_texture(seed: int, height: int, width: int, cell: int = 4) -> np.ndarray:
    return cv2.cvtColor(texture(seed, height, width, cell=cell), cv2.COLOR_RGB2GRAY)


# -- configuration and the result record ----------------------------------------------------------
def test_metric_config_defaults_are_the_documented_ones() -> None:
    c = MetricConfig()
    assert (c.work_height, c.max_frames, c.detail_height, c.detail_frames) == (144, 81, 360, 8)
    assert (c.dynamics_scale_px, c.stability_scale, c.motion_eps_px) == (0.25, 10.0, 0.25)
    assert (c.fg_threshold, c.bg_margin, c.min_fg_fraction) == (25.0, 8, 0.002)
    assert (c.texture_floor, c.texture_full) == (0.5, 2.0)
    assert REFERENCE_WIDTH == 256


def metrics_record(**overrides: object) -> PairMetrics:
    values: dict[str, object] = dict(
        background_dynamics=0.5,
        foreground_integrity=0.9,
        foreground_motion_consistency=0.8,
        temporal_stability=0.7,
        background_motion_px=0.2,
        source_background_motion_px=0.01,
        flicker_residual=3.0,
        foreground_fraction=0.25,
        mask="estimated",
        frames_compared=9,
        source_frames=9,
        edited_frames=9,
        source_size=[64, 96],
        edited_size=[64, 96],
    )
    values.update(overrides)
    return PairMetrics(**values)  # type: ignore[arg-type]


def test_as_dict_turns_nan_into_none_and_keeps_everything_else() -> None:
    d = metrics_record(background_dynamics=float("nan"), background_motion_px=float("nan")).as_dict()
    assert d["background_dynamics"] is None and d["background_motion_px"] is None
    assert d["foreground_integrity"] == 0.9 and d["mask"] == "estimated" and d["frames_compared"] == 9
    assert d["source_size"] == [64, 96] and d["truncated"] is False
    assert tuple(d)[:4] == METRIC_NAMES
    assert metrics_record().as_dict()["background_dynamics"] == 0.5


# -- working size --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("height", "width", "work_height", "expected"),
    [
        (720, 1280, 144, (144, 256)),  # 16:9 at the default working height
        (704, 1280, 144, (144, 262)),  # a model output: the aspect of its own frame, width even
        (100, 300, 144, (100, 300)),  # never upscaled
        (101, 101, 200, (100, 100)),  # odd heights drop a row; round(50.5) = 50 pairs of columns
        (99, 200, 144, (98, 200)),  # the width comes from the height before it is made even
        (100, 2, 144, (100, 2)),  # the narrowest frame is 2 wide
        (360, 640, 72, (72, 128)),
    ],
)
def test_working_size_keeps_aspect_and_even_sides(
    height: int, width: int, work_height: int, expected: tuple[int, int]
) -> None:
    assert working_size(height, width, work_height) == expected


# -- grey and flow magnitude ---------------------------------------------------------------------
def test_to_gray_is_opencv_luma_per_frame() -> None:
    frames = np.zeros((2, 1, 3, 3), np.uint8)
    frames[0, 0] = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    frames[1, 0] = [[255, 255, 255], [0, 0, 0], [128, 128, 128]]
    grey = to_gray(frames)
    assert grey.dtype == np.uint8 and grey.shape == (2, 1, 3)
    assert grey.tolist() == [[[76, 150, 29]], [[255, 0, 128]]]


def test_flow_magnitude_is_euclidean() -> None:
    flow = np.array([[[3.0, 4.0], [-3.0, -4.0], [0.0, -2.0], [1.5, 0.0]]], np.float32)
    assert flow_magnitude(flow).tolist() == [[5.0, 5.0, 2.0, 1.5]]


# -- foreground ----------------------------------------------------------------------------------
def test_centre_prior_is_an_unrotated_ellipse_over_the_middle_third() -> None:
    t, h, w = 3, 90, 360
    prior = centre_prior((t, h, w))
    assert prior.shape == (t, h, w) and prior.dtype == bool
    assert (prior == prior[:1]).all()  # the same ellipse in every frame
    # centre (w/2, h/2), semi-axes (w/6, h/3), full and filled, as OpenCV draws it
    drawn = np.zeros((h, w), np.uint8)
    cv2.ellipse(drawn, (180, 45), (60, 30), 0, 0, 360, 1, -1)
    assert (prior[0] == drawn.astype(bool)).all()
    ys, xs = np.mgrid[0:h, 0:w]
    r = np.hypot((xs - 180) / 60, (ys - 45) / 30)
    assert prior[0][r <= 0.95].all() and not prior[0][r >= 1.05].any()
    rows, cols = np.nonzero(prior[0])
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (120, 240, 15, 75)


def test_centre_prior_of_a_tiny_frame_is_a_one_pixel_cross() -> None:
    prior = centre_prior((2, 5, 11))  # w // 6 and h // 3 are 0 and 1: both axes are floored at 1 px
    expected = np.zeros((5, 11), bool)
    expected[2, 4:7] = expected[1:4, 5] = True
    assert (prior == expected).all()


def still_clip(frames: int, height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """A fixed-camera clip of a still textured background: ``(frames, H, W, 3) uint8``."""
    return np.repeat(texture(seed, height, width)[None], frames, axis=0)


def reference_foreground(frames: np.ndarray, threshold: float) -> np.ndarray:
    """The foreground estimate written out: departure from the median of every ``T // 16``-th frame,
    a 3x3-cross opening, then a 5x5-disk closing."""
    step = max(1, len(frames) // 16)
    sample = np.sort(frames[::step].astype(np.int16), axis=0)
    median = sample[len(sample) // 2]
    raw = (np.abs(frames.astype(np.int16) - median).max(axis=-1) > threshold).astype(np.uint8)
    out = [cv2.morphologyEx(cv2.morphologyEx(m, cv2.MORPH_OPEN, CROSS3), cv2.MORPH_CLOSE, DISK5) for m in raw]
    return np.stack(out).astype(bool)


@pytest.mark.parametrize("frames", [9, 17, 33])
def test_estimate_foreground_matches_the_written_out_estimate(frames: int) -> None:
    rng = np.random.default_rng(frames)
    clip = still_clip(frames)
    for t in range(frames):  # blobs of changed colour in random places, plus per-pixel noise
        y, x = rng.integers(0, 18, size=2)
        clip[t, y : y + rng.integers(2, 7), x : x + rng.integers(2, 9)] = rng.integers(0, 256, size=3)
    clip = np.clip(clip.astype(np.int16) + rng.integers(-30, 31, size=clip.shape), 0, 255).astype(np.uint8)
    mask, kind = estimate_foreground(clip, MetricConfig(fg_threshold=40.0))
    assert kind == "estimated" and mask.dtype == bool and mask.shape == clip.shape[:3]
    assert (mask == reference_foreground(clip, 40.0)).all()


def patch(y0: int, y1: int, x0: int, x1: int, shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    """A rectangle without its four corner pixels: what the 3x3-cross opening leaves of a rectangle."""
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    m[[y0, y0, y1 - 1, y1 - 1], [x0, x1 - 1, x0, x1 - 1]] = False
    return m


def test_estimate_foreground_marks_what_departs_from_the_median() -> None:
    # a patch is lit (+90 on every channel) in frames 1, 3 and 4: lit is the majority, so the median
    # is the lit patch and frames 0 and 2 are the ones that depart from it
    clip = still_clip(5)
    where = patch(8, 14, 10, 18)
    for t in (1, 3, 4):
        clip[t][where] = np.clip(clip[t][where].astype(np.int16) + 90, 0, 255)
    mask, kind = estimate_foreground(clip)
    assert kind == "estimated"
    assert [bool((m == where).all()) for m in mask] == [True, False, True, False, False]
    assert not mask[[1, 3, 4]].any()


def test_estimate_foreground_of_long_clips_takes_every_other_frame_for_the_median() -> None:
    # 32 frames: the median comes from frames 0, 2, ..., 30, where the patch is lit in frame 0 only,
    # although over all 32 frames it is lit in 17 (frame 0 and every odd one)
    clip = still_clip(32)
    lit = [0, *range(1, 32, 2)]
    for t in lit:
        clip[t][patch(8, 14, 10, 18)] = 250
    mask, _ = estimate_foreground(clip)
    assert [bool(m[10, 13]) for m in mask] == [t in lit for t in range(32)]


def test_estimate_foreground_accepts_grey_clips_and_looks_at_every_channel() -> None:
    where = patch(8, 14, 10, 18)
    grey = to_gray(still_clip(5))
    grey[2][where] = np.where(grey[2][where] > 128, 0, 255)
    mask, kind = estimate_foreground(grey)
    assert kind == "estimated" and mask.shape == (5, 24, 32)
    assert (mask[2] == where).all() and mask.sum() == where.sum()
    # a change in one colour channel only (luma barely moves) still counts
    clip = still_clip(5)
    blue = clip[2, ..., 2]
    blue[where] = np.where(blue[where] > 128, 0, 255)
    mask, _ = estimate_foreground(clip)
    assert (mask[2] == where).all() and mask.sum() == where.sum()


def test_estimate_foreground_threshold_is_strict() -> None:
    clip = still_clip(5)
    where = patch(8, 14, 10, 18)
    clip[2][where] = 100
    clip[0][where] = clip[1][where] = clip[3][where] = clip[4][where] = 125
    # frame 2 departs from the median by exactly the threshold: not foreground
    _, kind = estimate_foreground(clip, MetricConfig(fg_threshold=25.0))
    assert kind == "prior"
    mask, kind = estimate_foreground(clip, MetricConfig(fg_threshold=24.0))
    assert kind == "estimated" and (mask[2] == where).all() and mask.sum() == where.sum()


def test_estimate_foreground_drops_specks_and_fills_pinholes() -> None:
    clip = still_clip(5)
    clip[1, 3, 3] = clip[1, 20, 28] = 255 - clip[1, 3, 3]  # single-pixel specks
    clip[1, 2:22, 16] = 0  # a one-pixel-wide line
    where = patch(6, 18, 6, 18)
    clip[3][where] = 255
    clip[3, 12, 12] = clip[0, 12, 12]  # a one-pixel hole in the patch
    mask, kind = estimate_foreground(clip)
    assert kind == "estimated"
    assert not mask[1].any() and (mask[3] == where).all() and mask.sum() == where.sum()
    specks_only = still_clip(5)
    specks_only[1, 3, 3] = 255 - specks_only[1, 3, 3]
    prior, kind = estimate_foreground(specks_only)
    assert kind == "prior" and (prior == centre_prior((5, 24, 32))).all()


def test_estimate_foreground_falls_back_to_the_prior_strictly_below_the_minimum_fraction() -> None:
    clip = still_clip(5)
    clip[2][patch(8, 14, 10, 18)] = 255
    mask, kind = estimate_foreground(clip)
    fraction = float(mask.mean())
    assert kind == "estimated" and fraction == 44 / (5 * 24 * 32)
    _, kind = estimate_foreground(clip, MetricConfig(min_fg_fraction=fraction))
    assert kind == "estimated"
    prior, kind = estimate_foreground(clip, MetricConfig(min_fg_fraction=float(np.nextafter(fraction, 1.0))))
    assert kind == "prior" and prior.dtype == bool and prior.shape == (5, 24, 32)


def test_fit_mask_rejects_masks_that_are_not_frame_stacks() -> None:
    with pytest.raises(ValueError, match="mask must be"):
        fit_mask(np.ones((4, 4), bool), 3, (4, 4))
    with pytest.raises(ValueError, match="mask must be"):
        fit_mask(np.ones((0, 4, 4), bool), 3, (4, 4))
    with pytest.raises(ValueError, match="mask must be"):
        fit_mask(np.ones((2, 4, 4, 1), bool), 3, (4, 4))


def test_fit_mask_reuses_the_last_frame_and_resizes_nearest() -> None:
    mask = np.zeros((3, 2, 2), bool)
    mask[0, 0, 0] = mask[1, 0, 1] = mask[2, 1, 1] = True
    fitted = fit_mask(mask, 5, (2, 2))
    assert fitted.dtype == bool and fitted.shape == (5, 2, 2)
    assert (fitted[:3] == mask).all() and (fitted[3] == mask[2]).all() and (fitted[4] == mask[2]).all()
    assert (fit_mask(mask, 2, (2, 2)) == mask[:2]).all()  # longer masks are cut
    stretched = fit_mask(np.array([[[0, 1]]], np.uint8), 1, (1, 5))
    assert stretched.tolist() == [[[False, False, False, True, True]]]
    single = fit_mask(np.array([[[True, False], [False, False]]]), 2, (4, 4))
    assert single[:, :2, :2].all() and single.sum() == 8


def test_fit_mask_counts_every_non_zero_value_as_foreground() -> None:
    # as save_mask/load_mask do: a soft 0.5 or a label of 256 is foreground (not truncated to 0)
    values = np.array([[[0.0, 0.5, 1.0, 256.0, -1.0]]])
    assert fit_mask(values, 1, (1, 5)).tolist() == [[[False, True, True, True, True]]]
    labels = np.array([[[0, 256], [3, 0]]], np.int32)
    assert fit_mask(labels, 1, (2, 2)).tolist() == [[[False, True], [True, False]]]


def erode_reference(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary erosion, outside the frame counting as foreground (OpenCV's default border)."""
    r = kernel.shape[0] // 2
    padded = np.pad(mask, r, constant_values=True)
    h, w = mask.shape
    out = np.ones_like(mask)
    for dy, dx in zip(*np.nonzero(kernel), strict=True):
        out &= padded[dy : dy + h, dx : dx + w]
    return out


def test_interior_shrinks_by_the_margin_with_a_disk() -> None:
    fg = np.zeros((2, 24, 30), bool)
    fg[0, 5:15, 6:18] = True  # a 10x12 rectangle
    fg[1, 4:20, 4:12] = fg[1, 12:20, 4:26] = True  # an L, whose inner corner tells a disk from a square
    inner = interior(fg, 2)
    assert inner.dtype == bool and inner.shape == fg.shape
    expected = np.zeros((24, 30), bool)
    expected[7:13, 8:16] = True
    assert (inner[0] == expected).all()
    assert (inner[1] == erode_reference(fg[1], DISK5)).all()
    assert (interior(fg, 1)[1] == erode_reference(fg[1], CROSS3)).all()


def test_interior_keeps_masks_that_would_vanish_and_the_frame_edge() -> None:
    fg = np.zeros((3, 16, 16), bool)
    fg[0, 6:8, 6:8] = True  # 2x2: gone after a 2 px erosion, so kept whole
    fg[1] = True  # the whole frame: the border is not an edge of the subject
    fg[2, 2:14, 2:14] = True
    inner = interior(fg, 2)
    assert (inner[0] == fg[0]).all() and inner[1].all()
    assert inner[2].sum() == 64 and inner[2, 4:12, 4:12].all()
    assert fg[2].sum() == 144  # the input is left alone


def test_background_region_grows_by_a_disk_and_joins_each_pair_of_frames() -> None:
    fg = np.zeros((3, 9, 9), bool)
    fg[0, 4, 4] = True  # in frame 0 only
    fg[2, 2, 6] = True  # in frame 2 only
    bg = background_region(fg, 2)
    assert bg.dtype == bool and bg.shape == (2, 9, 9)
    disk_a = np.zeros((9, 9), bool)
    disk_a[2:7, 2:7] = DISK5.astype(bool)
    assert (bg[0] == ~disk_a).all()  # pair (0, 1): frame 0's subject, grown
    disk_b = np.zeros((9, 9), bool)
    disk_b[0:5, 4:9] = DISK5.astype(bool)
    assert (bg[1] == ~disk_b).all()  # pair (1, 2): frame 2's subject, grown
    cross = np.zeros((9, 9), bool)
    cross[3:6, 3:6] = CROSS3.astype(bool)
    assert (background_region(fg, 1)[0] == ~cross).all()
    ungrown = background_region(fg, 0)
    assert ungrown.sum() == 2 * 81 - 2 and not ungrown[0, 4, 4] and not ungrown[1, 2, 6]


# -- texture and flow ----------------------------------------------------------------------------
def paraboloid(size: int = 20) -> np.ndarray:
    """``(x - c)^2 + (y - c)^2``: its structure tensor over a 5x5 window has smaller eigenvalue 8 everywhere
    (gradient (2x, 2y); the window adds mean(dx^2) = 2 to both diagonal terms)."""
    ys, xs = np.mgrid[0:size, 0:size]
    return ((xs - size // 2) ** 2 + (ys - size // 2) ** 2).astype(np.uint8)


def test_texture_strength_is_the_smaller_structure_tensor_eigenvalue() -> None:
    ys, xs = np.mgrid[0:20, 0:20]
    frames = np.stack([paraboloid(), (10 * xs).astype(np.uint8), (7 * ys).astype(np.uint8)])
    tex = texture_strength(frames)
    assert tex.dtype == np.float32 and tex.shape == (3, 20, 20)
    inner = tex[:, 3:-3, 3:-3]
    assert inner[0].min() == pytest.approx(8.0, abs=1e-4) and inner[0].max() == pytest.approx(8.0, abs=1e-4)
    assert np.abs(inner[1:]).max() < 1e-4  # a straight edge constrains one direction only
    # grey levels^2 per px^2: scaling the image by 3 scales the eigenvalue by 9
    assert texture_strength(3 * paraboloid(12)[None])[0, 3:-3, 3:-3].mean() == pytest.approx(72.0, abs=1e-3)


def test_flow_reliability_ramps_linearly_between_floor_and_full() -> None:
    frames = np.stack([paraboloid()] * 2)  # texture 8 everywhere inside
    inner = (slice(None), slice(3, -3), slice(3, -3))
    assert flow_reliability(frames)[inner].min() == 1.0  # above the default full (2.0)
    assert flow_reliability(frames, 4.0, 12.0)[inner] == pytest.approx(0.5, abs=1e-4)
    assert flow_reliability(frames, 9.0, 12.0)[inner].max() == 0.0
    # floor == full: a hard gate
    assert flow_reliability(frames, 7.9, 7.9)[inner].min() == 1.0
    assert flow_reliability(frames, 8.1, 8.1)[inner].max() == 0.0


def test_flow_reliability_gates_on_the_weaker_texture_of_each_pair() -> None:
    # frame 1 is dimmed unevenly: pairs (0, 1) and (1, 2) both take its weaker texture where it is weaker
    rng = np.random.default_rng(5)
    frames = np.stack([grey_texture(s, 24, 32, cell=8) for s in (1, 2, 3)])
    frames[1] = np.clip(frames[1].astype(np.float32) * rng.uniform(0.1, 1.0, size=(24, 32)), 0, 255)
    tex = texture_strength(frames)
    for floor, full in [(0.5, 2.0), (1.0, 9.0), (3.0, 20.0)]:
        rel = flow_reliability(frames, floor, full)
        both = np.minimum(tex[:-1], tex[1:])
        assert rel.shape == (2, 24, 32)
        assert np.allclose(rel, np.clip((both - floor) / (full - floor), 0.0, 1.0), atol=1e-6)
        assert 0.0 < rel.mean() < 1.0
    assert np.array_equal(flow_reliability(frames), flow_reliability(frames, 0.5, 2.0))


def test_optical_flow_recovers_a_known_translation() -> None:
    big = grey_texture(4, 80, 110, cell=8)
    frames = np.stack([big[10 - t : 58 - t, 12 - 2 * t : 76 - 2 * t] for t in range(3)])  # (+2, +1) px/frame
    flow = optical_flow(frames)
    assert flow.dtype == np.float32 and flow.shape == (2, 48, 64, 2)
    for t in range(2):
        assert np.median(flow[t, ..., 0]) == pytest.approx(2.0, abs=0.1)
        assert np.median(flow[t, ..., 1]) == pytest.approx(1.0, abs=0.1)


def test_optical_flow_tracks_a_small_subject() -> None:
    # a 16 px subject moving 2 px over a still background: refined down to half resolution, the flow
    # follows it (the stock fast preset, at a quarter resolution, sees it barely move)
    bg, fg = grey_texture(1, 64, 96, cell=8), grey_texture(2, 16, 16)
    frames = np.stack([bg, bg])
    frames[0, 28:44, 30:46] = fg
    frames[1, 28:44, 32:48] = fg
    flow = optical_flow(frames)
    assert flow[0, 28:44, 30:46, 0].mean() > 1.0


def test_optical_flow_is_dis_fast_refined_to_half_resolution() -> None:
    bg, fg = grey_texture(3, 48, 64, cell=8), grey_texture(4, 12, 12)
    frames = np.stack([bg] * 3)
    for t in range(3):
        frames[t, 18:30, 10 + 3 * t : 22 + 3 * t] = fg
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    dis.setFinestScale(1)
    expected = np.stack([dis.calc(frames[t], frames[t + 1], None) for t in range(2)])
    assert np.array_equal(optical_flow(frames), expected)


def test_background_motion_is_the_weighted_mean_over_background_pixels() -> None:
    flow = np.zeros((2, 4, 8, 2), np.float32)
    flow[0, ..., 0] = 3.0
    flow[0, ..., 1] = 4.0  # 5 px/frame in pair 0
    flow[1, :, :4, 0] = -1.0  # 1 px/frame on the left half of pair 1
    bg = np.ones((2, 4, 8), bool)
    bg[1, :, :4] = False  # ... which is foreground
    # pair 0: 32 px at 5, pair 1: 16 px at 0 -> 160 / 48 at an 8 px wide frame, times 256 / 8
    assert background_motion(flow, bg, 8) == pytest.approx(160 / 48 * 32)
    weight = np.zeros((2, 4, 8), np.float32)
    weight[0, :2] = 0.5  # half the rows of pair 0 at half weight; the other pixels still count, as still
    assert background_motion(flow, bg, 8, weight) == pytest.approx(16 * 2.5 / 48 * 32)
    assert background_motion(flow, bg, REFERENCE_WIDTH) == pytest.approx(160 / 48)
    assert math.isnan(background_motion(flow, np.zeros_like(bg), 8))


def test_background_dynamics_and_temporal_stability_maps() -> None:
    assert background_dynamics(0.0) == 0.0 and background_dynamics(-3.0) == 0.0
    assert background_dynamics(0.5) == pytest.approx(1 - math.exp(-2))
    assert background_dynamics(0.5, scale_px=1.0) == pytest.approx(1 - math.exp(-0.5))
    assert background_dynamics(1e6) == 1.0 and math.isnan(background_dynamics(float("nan")))
    assert temporal_stability(0.0) == 1.0 and temporal_stability(-5.0) == 1.0
    assert temporal_stability(5.0) == pytest.approx(math.exp(-0.5))
    assert temporal_stability(5.0, scale=2.0) == pytest.approx(math.exp(-2.5))


# -- SSIM, motion consistency, warp residual --------------------------------------------------------
def gaussian_blur_reference(z: np.ndarray) -> np.ndarray:
    """7-tap Gaussian (sigma 1.5), mirrored border, in float64."""
    k = np.exp(-((np.arange(7) - 3) ** 2) / (2 * 1.5**2))
    k /= k.sum()
    p = np.pad(z.astype(np.float64), 3, mode="reflect")
    rows = sum(k[i] * p[i : i + z.shape[0], :] for i in range(7))
    return sum(k[i] * rows[:, i : i + z.shape[1]] for i in range(7))


def ssim_reference(a: np.ndarray, b: np.ndarray, mask: np.ndarray, luminance: bool) -> float:
    """SSIM (C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2) pooled over all masked pixels of all frames."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for x, y, m in zip(a.astype(np.float64), b.astype(np.float64), mask, strict=True):
        mx, my = gaussian_blur_reference(x), gaussian_blur_reference(y)
        sxx = gaussian_blur_reference(x * x) - mx**2
        syy = gaussian_blur_reference(y * y) - my**2
        sxy = gaussian_blur_reference(x * y) - mx * my
        s = (2 * sxy + c2) / (sxx + syy + c2)
        if luminance:
            s = s * (2 * mx * my + c1) / (mx**2 + my**2 + c1)
        values.append(s[m])
    return float(np.concatenate(values).mean())


@pytest.fixture(scope="module")
def ssim_frames() -> dict[str, np.ndarray]:
    """Three low-contrast grey frames (local variance comparable to C2) and edits of them."""
    a = np.stack([grey_texture(s, 24, 32, cell=8) // 4 + 90 for s in (1, 2, 3)])
    rng = np.random.default_rng(0)
    noisy = np.clip(a.astype(np.int16) + rng.integers(-6, 7, size=a.shape), 0, 255).astype(np.uint8)
    mask = np.zeros(a.shape, bool)
    mask[0, 4:20, 6:30] = True
    mask[2, 10:14, 2:12] = True  # frame 1 has no foreground and is skipped
    return {"a": a, "noisy": noisy, "dark": (a * 0.4).astype(np.uint8), "mask": mask}


@pytest.mark.parametrize("luminance", [True, False])
@pytest.mark.parametrize("edit", ["noisy", "dark"])
def test_masked_ssim_matches_the_written_out_formula(ssim_frames: dict, edit: str, luminance: bool) -> None:
    a, b, mask = ssim_frames["a"], ssim_frames[edit], ssim_frames["mask"]
    got = masked_ssim(a, b, mask, luminance=luminance)
    assert got == pytest.approx(ssim_reference(a, b, mask, luminance), abs=1e-5)
    assert 0.0 < got < 0.99


def test_masked_ssim_luminance_term(ssim_frames: dict) -> None:
    a, mask = ssim_frames["a"], ssim_frames["mask"]
    brighter = a + 40
    assert masked_ssim(a, a, mask) == 1.0 and masked_ssim(a, a, mask, luminance=False) == 1.0
    assert masked_ssim(a, brighter, mask, luminance=False) == pytest.approx(1.0, abs=1e-6)  # offsets vanish
    with_luminance = masked_ssim(a, brighter, mask)  # luminance is on by default
    assert with_luminance == masked_ssim(a, brighter, mask, luminance=True) < 0.99
    assert with_luminance == pytest.approx(ssim_reference(a, brighter, mask, True), abs=1e-5)


def test_masked_ssim_luminance_constant_on_near_black_frames() -> None:
    # flat frames: the contrast-structure term is C2 / C2 = 1, the luminance term (2 * 1 * 3 + C1) / (1 + 9 + C1)
    a, b = np.ones((1, 12, 12), np.uint8), np.full((1, 12, 12), 3, np.uint8)
    mask = np.ones((1, 12, 12), bool)
    c1 = (0.01 * 255) ** 2
    assert masked_ssim(a, b, mask) == pytest.approx((6 + c1) / (10 + c1), abs=1e-6)
    assert masked_ssim(a, b, mask, luminance=False) == pytest.approx(1.0, abs=1e-6)


def test_masked_ssim_is_clipped_empty_masks_are_nan_and_lengths_must_match(ssim_frames: dict) -> None:
    mask = ssim_frames["mask"]
    a = np.stack([grey_texture(s, 24, 32) for s in (1, 2, 3)])  # full contrast
    assert ssim_reference(a, 255 - a, mask, False) < -0.5
    assert masked_ssim(a, 255 - a, mask, luminance=False) == 0.0  # anticorrelated: clipped at 0
    assert math.isnan(masked_ssim(a, a, np.zeros_like(mask)))
    with pytest.raises(ValueError):
        masked_ssim(a[:2], a, mask)


def test_motion_consistency_formula() -> None:
    src = np.zeros((1, 2, 4, 2), np.float32)
    src[..., 0] = 2.0
    edit = src.copy()
    edit[0, 0, :2] = 0.0  # frozen on two pixels
    edit[0, 1, 3] = (-2.0, 0.0)  # backwards on one
    fg = np.ones((1, 2, 4), bool)
    # sum |fe - fs| = 2 + 2 + 4 = 8; sum(|fe| + |fs| + eps) = (6 * 2 + 2 * 0) + 8 * (2 + 0.5) = 32
    assert motion_consistency(src, edit, fg, 0.5) == pytest.approx(1 - 8 / 32)
    fg[0, 0, :2] = fg[0, 1, 3] = False  # only the agreeing pixels
    assert motion_consistency(src, edit, fg, 0.5) == 1.0
    opposite = motion_consistency(src, -src, np.ones((1, 2, 4), bool), 0.0)
    assert opposite == 0.0
    assert math.isnan(motion_consistency(src, edit, np.zeros_like(fg), 0.5))


def test_motion_consistency_stays_in_the_unit_interval_for_a_negative_floor() -> None:
    src = np.zeros((1, 1, 2, 2), np.float32)
    edit = src.copy()
    edit[..., 0] = 1.0
    fg = np.ones((1, 1, 2), bool)
    assert motion_consistency(src, edit, fg, -0.9) == 0.0  # 1 - 2 / 0.2 before clipping
    assert motion_consistency(src, edit, fg, -2.0) == 1.0  # 1 - 2 / -2 before clipping


def shifted_frames(seed: int, frames: int, dx: int, dy: int, height: int = 20, width: int = 24) -> np.ndarray:
    """Random grey frames, each the previous one moved by ``(dx, dy)`` pixels."""
    out = [np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)]
    for _ in range(frames - 1):
        out.append(np.roll(out[-1], (dy, dx), axis=(0, 1)))
    return np.stack(out)


def test_warp_residual_without_flow_is_the_mean_frame_difference() -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(3, 10, 12), dtype=np.uint8)
    flow = np.zeros((2, 10, 12, 2), np.float32)
    diffs = [np.abs(gray[t + 1].astype(float) - gray[t]).mean() for t in range(2)]
    assert warp_residual(gray, flow) == pytest.approx(sum(diffs) / 2, rel=1e-6)
    assert warp_residual(gray[:2], flow[:1]) == pytest.approx(diffs[0], rel=1e-6)
    assert warp_residual(gray[:1], flow[:0]) == 0.0


def test_warp_residual_explains_motion_away_inside_the_frame() -> None:
    gray = shifted_frames(2, 3, dx=2, dy=1)
    flow = np.zeros((2, 20, 24, 2), np.float32)
    flow[..., 0], flow[..., 1] = 2.0, 1.0
    assert warp_residual(gray, flow) == 0.0  # only pixels whose flow stays inside the frame count
    assert warp_residual(gray, -flow) > 50.0
    swapped = flow[..., ::-1].copy()
    assert warp_residual(gray, swapped) > 50.0
    assert warp_residual(gray, np.full_like(flow, 1000.0)) == 0.0  # nothing left to compare


def test_warp_residual_interpolates_between_pixels() -> None:
    ramp = np.tile(np.arange(0, 48, 2, dtype=np.uint8), (6, 1))  # 2 grey levels per pixel
    gray = np.stack([ramp + 1, ramp])  # frame 0 sits half a pixel to the right of frame 1
    flow = np.zeros((1, 6, 24, 2), np.float32)
    flow[..., 0] = 0.5
    assert warp_residual(gray, flow) == 0.0


# -- decoding a pair -----------------------------------------------------------------------------
class FrameList:
    """A reader over in-memory RGB frames with the two things :func:`decode_small` uses."""

    def __init__(self, frames: np.ndarray, name: str = "frames.mp4"):
        self.frames = [av.VideoFrame.from_ndarray(f, format="rgb24") for f in frames]
        self.name = name

    def iter_decoded(self, stop: int | None = None) -> Iterator[av.VideoFrame]:
        return iter(self.frames[:stop])


def block_frames(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(frames at 32x48, the same at 16x24)``: 2x2 blocks of one colour, which an area filter halves
    exactly."""
    blocks = np.random.default_rng(seed).integers(0, 256, size=(frames, 16, 24, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 2, axis=1), 2, axis=2), blocks


def test_decode_small_area_scales_rgb_and_grey_frames() -> None:
    full, half = block_frames(4)
    small, grey = decode_small(FrameList(full), 3, (16, 24), (0, 2), (16, 24))  # type: ignore[arg-type]
    assert small.dtype == np.uint8 and small.shape == (3, 16, 24, 3)
    assert np.array_equal(small, half[:3])
    assert grey.dtype == np.uint8 and grey.shape == (2, 16, 24)
    assert np.abs(grey.astype(int) - to_gray(half[[0, 2]])).max() <= 1  # swscale's luma rounds its own way
    _, grey = decode_small(FrameList(full), 3, (16, 24), (1,), (32, 48))  # type: ignore[arg-type]
    assert np.abs(grey.astype(int) - to_gray(full[1:2])).max() <= 1


def test_decode_small_raises_on_truncated_videos() -> None:
    full, _ = block_frames(2)
    with pytest.raises(SparkleDataError, match="only 2 of 3 frames decode") as err:
        decode_small(FrameList(full, "short.mp4"), 3, (16, 24), (0,), (16, 24))  # type: ignore[arg-type]
    assert err.value.path == "short.mp4"
    with pytest.raises(SparkleDataError, match="only 0 of 2 frames"):
        decode_small(FrameList(full[:0]), 2, (16, 24), (0,), (16, 24))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def videos() -> dict[str, object]:
    """Encoded clips (bytes) of a 13-frame 48x64 source and edits of it, plus the source frames and mask."""
    src, mask = source_clip(frames=13, height=48, width=64, box=16)
    edt = edit_clip(src, mask, "lively")
    small_edit = np.stack([cv2.resize(f, (64, 40), interpolation=cv2.INTER_AREA) for f in edt[:5]])
    clips = {"source": src, "edited": edt, "short_small": small_edit, "two": src[:2], "one": src[:1]}
    return {**{k: mp4(v) for k, v in clips.items()}, "source_frames": src, "mask": mask}


def test_load_pair_decodes_both_at_the_source_working_size(videos: dict) -> None:
    pair = load_pair(videos["source"], videos["short_small"])
    assert (pair.source_frames, pair.edited_frames) == (13, 5)
    assert pair.source_size == (48, 64) and pair.edited_size == (40, 64)
    assert pair.source.shape == pair.edited.shape == (5, 48, 64, 3)
    assert pair.source.dtype == pair.edited.dtype == np.uint8
    assert np.abs(pair.source.astype(int) - videos["source_frames"][:5]).mean() < 8  # not swapped
    assert np.abs(pair.edited.astype(int) - videos["source_frames"][:5]).mean() > 20
    assert pair.detail_indices == (0, 1, 2, 3, 4)  # fewer frames than detail_frames: all of them
    assert pair.source_detail is not None and pair.edited_detail is not None
    assert pair.source_detail.shape == pair.edited_detail.shape == (5, 48, 64)  # never above the source
    # the same frames, grey straight from YUV
    assert np.abs(pair.source_detail.astype(int) - to_gray(pair.source)).mean() < 3
    assert np.abs(pair.edited_detail.astype(int) - to_gray(pair.edited)).mean() < 3


def test_load_pair_compares_the_common_frames_up_to_the_cap(videos: dict) -> None:
    longer = load_pair(videos["two"], videos["source"])
    assert longer.source.shape[0] == 2 and (longer.source_frames, longer.edited_frames) == (2, 13)
    capped = load_pair(videos["source"], videos["edited"], MetricConfig(max_frames=3))
    assert capped.source.shape[0] == capped.edited.shape[0] == 3 and capped.detail_indices == (0, 1, 2)
    with pytest.raises(SparkleDataError, match="need at least 2 frames to compare, got 1") as err:
        load_pair(videos["source"], videos["one"])
    assert err.value.path == as_video_reader(videos["one"]).name  # the short clip is named


def test_load_pair_detail_frames_and_sizes(videos: dict) -> None:
    pair = load_pair(videos["source"], videos["edited"])
    assert pair.detail_indices == (0, 2, 3, 5, 7, 9, 10, 12)  # 8 evenly spread over 13 frames
    three = load_pair(videos["source"], videos["edited"], MetricConfig(detail_frames=3))
    assert three.detail_indices == (0, 6, 12)
    one = load_pair(videos["source"], videos["edited"], MetricConfig(detail_frames=1))
    assert one.detail_indices == (0,) and one.source_detail.shape == (1, 48, 64)
    small = load_pair(videos["source"], videos["edited"], MetricConfig(work_height=32, detail_height=16))
    assert small.source.shape == (13, 32, 42, 3)
    assert small.source_detail.shape == (8, 32, 42)  # the detail frames are never below the working size
    sharp = load_pair(videos["source"], videos["edited"], MetricConfig(work_height=24, detail_height=40))
    assert sharp.source.shape[1:3] == (24, 32) and sharp.edited_detail.shape == (8, 40, 54)


def test_compute_metrics_decodes_then_scores_with_one_config(videos: dict) -> None:
    config = MetricConfig(work_height=32, max_frames=6, bg_margin=2, motion_eps_px=1.0, stability_scale=3.0)
    got = compute_metrics(videos["source"], videos["edited"], mask=videos["mask"], config=config).as_dict()
    pair = load_pair(videos["source"], videos["edited"], config)
    assert got == pair_metrics(pair, mask=videos["mask"], config=config).as_dict()
    assert got["frames_compared"] == 6 and got["mask"] == "bait" and got["truncated"] is False
    assert got != pair_metrics(pair, mask=videos["mask"]).as_dict()


# -- foreground integrity on the detail frames -----------------------------------------------------
def detail_pair(detail_size: tuple[int, int], seed: int = 0) -> tuple[PairFrames, np.ndarray]:
    """A 4-frame 24x32 working pair with detail frames 0 and 3 at ``detail_size``, and its foreground
    (a square moving right): the edit's detail frames carry unevenly spread noise and a relit top half."""
    src, fg = source_clip(seed=seed, frames=4, height=24, width=32, speed=2, box=14)
    dh, dw = detail_size
    rng = np.random.default_rng(seed)
    sd = np.stack(
        [cv2.resize(to_gray(src[[t]])[0], (dw, dh), interpolation=cv2.INTER_LINEAR) for t in (0, 3)]
    )
    ys, xs = np.mgrid[0:dh, 0:dw]
    ring = np.abs(np.sin(xs / 3.0) * np.cos(ys / 2.0))  # uneven damage, so the margin matters
    ed = np.clip(sd + rng.normal(0, 40, size=sd.shape) * ring, 0, 255).astype(np.uint8)
    ed[:, : dh // 2] = np.clip(ed[:, : dh // 2].astype(np.int16) + 30, 0, 255)  # relit top half
    pair = PairFrames(src, src.copy(), 4, 4, (24, 32), (24, 32), sd, ed, (0, 3))
    return pair, fg


@pytest.mark.parametrize(("detail_size", "margin"), [((60, 80), 8), ((24, 32), 3), ((6, 8), 1)])
def test_detail_integrity_uses_the_detail_frames_with_a_scaled_margin(
    detail_size: tuple[int, int], margin: int
) -> None:
    pair, fg = detail_pair(detail_size)
    masks = fit_mask(fg[[0, 3]], 2, detail_size)
    expected = masked_ssim(pair.source_detail, pair.edited_detail, interior(masks, margin), luminance=False)
    assert detail_integrity(pair, fg) == expected
    assert expected < 0.95
    wider = masked_ssim(pair.source_detail, pair.edited_detail, interior(masks, margin + 1), luminance=False)
    assert wider != expected  # the margin is not arbitrary: another one gives another number


def test_detail_integrity_falls_back_to_the_working_frames() -> None:
    pair, fg = detail_pair((60, 80))
    noise = np.random.default_rng(1).normal(0, 30, size=pair.source[:, :, 10:20].shape)
    edited = pair.source.copy()
    edited[:, :, 10:20] = np.clip(edited[:, :, 10:20] + noise, 0, 255).astype(np.uint8)
    expected = masked_ssim(to_gray(pair.source), to_gray(edited), interior(fg, 3), luminance=False)
    assert 0.0 < expected < 0.9
    sd, ed = pair.source_detail, pair.edited_detail
    incomplete = [(None, None, ()), (sd, None, (0, 3)), (None, ed, (0, 3)), (sd, ed, ())]
    for source_detail, edited_detail, indices in incomplete:
        fallback = PairFrames(
            pair.source, edited, 4, 4, (24, 32), (24, 32), source_detail, edited_detail, indices
        )
        assert detail_integrity(fallback, fg) == expected


# -- pair_metrics: how the pieces are put together ----------------------------------------------------
#: Every knob away from its default, so a knob that is dropped or swapped changes a number.
CUSTOM = MetricConfig(
    bg_margin=3,
    texture_floor=1.0,
    texture_full=5.0,
    motion_eps_px=0.5,
    stability_scale=4.0,
    dynamics_scale_px=10.0,
    fg_threshold=60.0,
    min_fg_fraction=0.001,
)


@pytest.fixture(scope="module")
def working_pair() -> tuple[PairFrames, np.ndarray]:
    src, mask = source_clip(seed=2, frames=6, height=32, width=48, speed=2, box=12)
    edt = edit_clip(src, mask, "lively", speed=1)
    edt[1::2] = np.clip(edt[1::2].astype(np.int16) + 6, 0, 255).astype(np.uint8)  # a little flicker
    return PairFrames(src, edt, 6, 6, (32, 48), (30, 48)), mask


def expected_record(pair: PairFrames, fg: np.ndarray, kind: str, config: MetricConfig) -> dict:
    """The metrics of ``pair`` assembled from the public building blocks, as the module docstring says."""
    gs, ge = to_gray(pair.source), to_gray(pair.edited)
    flow_s, flow_e = optical_flow(gs), optical_flow(ge)
    bg = background_region(fg, config.bg_margin)
    width = pair.source.shape[2]
    motion = background_motion(
        flow_e, bg, width, flow_reliability(ge, config.texture_floor, config.texture_full)
    )
    source_motion = background_motion(
        flow_s, bg, width, flow_reliability(gs, config.texture_floor, config.texture_full)
    )
    residual = warp_residual(ge, flow_e)
    return {
        "background_dynamics": background_dynamics(motion, config.dynamics_scale_px),
        "foreground_integrity": detail_integrity(pair, fg),
        "foreground_motion_consistency": motion_consistency(
            flow_s, flow_e, fg[:-1] | fg[1:], config.motion_eps_px
        ),
        "temporal_stability": temporal_stability(residual, config.stability_scale),
        "background_motion_px": motion,
        "source_background_motion_px": source_motion,
        "flicker_residual": residual,
        "foreground_fraction": float(fg.mean()),
        "mask": kind,
        "frames_compared": len(pair.source),
        "source_frames": pair.source_frames,
        "edited_frames": pair.edited_frames,
        "source_size": list(pair.source_size),
        "edited_size": list(pair.edited_size),
        "truncated": False,
    }


@pytest.mark.parametrize("config", [MetricConfig(), CUSTOM], ids=["defaults", "custom"])
def test_pair_metrics_with_a_mask_is_assembled_from_the_building_blocks(
    working_pair: tuple[PairFrames, np.ndarray], config: MetricConfig
) -> None:
    pair, mask = working_pair
    got = pair_metrics(pair, mask=mask, config=config).as_dict()
    expected = expected_record(pair, fit_mask(mask, 6, (32, 48)), "bait", config)
    assert got == expected
    assert 0.0 < got["background_dynamics"] < 1.0 and 0.0 < got["temporal_stability"] < 1.0
    assert 0.0 < got["foreground_motion_consistency"] < 1.0


def test_pair_metrics_estimates_the_foreground_with_the_config(
    working_pair: tuple[PairFrames, np.ndarray],
) -> None:
    pair, _ = working_pair
    fg, kind = estimate_foreground(pair.source, CUSTOM)
    assert kind == "estimated" and fg.sum() != estimate_foreground(pair.source)[0].sum()
    assert pair_metrics(pair, config=CUSTOM).as_dict() == expected_record(pair, fg, "estimated", CUSTOM)
    still = PairFrames(np.repeat(pair.source[:1], 4, axis=0), pair.edited[:4], 4, 4, (32, 48), (32, 48))
    assert pair_metrics(still).mask == "prior"


def test_pair_metrics_uses_the_detail_frames(working_pair: tuple[PairFrames, np.ndarray]) -> None:
    pair, mask = working_pair
    sd = np.stack([cv2.resize(g, (96, 64)) for g in to_gray(pair.source[[0, 5]])])
    ed = np.stack([cv2.resize(g, (96, 64)) for g in to_gray(pair.edited[[0, 5]])])
    detailed = PairFrames(pair.source, pair.edited, 6, 6, (32, 48), (32, 48), sd, ed, (0, 5))
    got = pair_metrics(detailed, mask=mask).foreground_integrity
    assert got == detail_integrity(detailed, fit_mask(mask, 6, (32, 48)))
    assert got != pair_metrics(pair, mask=mask).foreground_integrity


@pytest.mark.parametrize(
    ("source_frames", "edited_frames", "truncated"),
    [(6, 6, False), (9, 6, True), (6, 9, False), (100, 81, False), (100, 80, True)],
)
def test_pair_metrics_flags_edits_shorter_than_their_capped_source(
    working_pair: tuple[PairFrames, np.ndarray], source_frames: int, edited_frames: int, truncated: bool
) -> None:
    pair, mask = working_pair
    counted = PairFrames(pair.source, pair.edited, source_frames, edited_frames, (32, 48), (32, 48))
    m = pair_metrics(counted, mask=mask)
    assert m.truncated is truncated and (m.source_frames, m.edited_frames) == (source_frames, edited_frames)


# -- ranks and Spearman --------------------------------------------------------------------------------
def test_rank_averages_ties() -> None:
    assert rank([10.0, 30.0, 20.0]).tolist() == [1.0, 3.0, 2.0]
    assert rank([1, 1, 2]).tolist() == [1.5, 1.5, 3.0]
    assert rank([3, 1, 3, 3, 0]).tolist() == [4.0, 2.0, 4.0, 4.0, 1.0]
    assert rank([5, 5, 5, 5]).tolist() == [2.5] * 4
    assert rank([2, 1, 2, 1]).tolist() == [3.5, 1.5, 3.5, 1.5]
    assert rank([]).tolist() == []
    assert rank([7]).dtype == np.float64


def test_rank_puts_missing_values_last_in_input_order() -> None:
    # None reads as NaN; NaNs never tie, rank after every number and keep their input order
    assert rank([2.0, None, 1.0]).tolist() == [2.0, 3.0, 1.0]  # type: ignore[list-item]
    values = [float("nan")] * 40 + [1.0, 0.0, 1.0]
    assert rank(values).tolist() == [float(r) for r in range(4, 44)] + [2.5, 1.0, 2.5]


def test_spearman_edge_cases() -> None:
    assert spearman([1, 2], [1, 2]) == 1.0 and spearman([1, 2], [5, 3]) == -1.0  # two samples are enough
    assert math.isnan(spearman([1], [1])) and math.isnan(spearman([], []))
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert spearman([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(5 / 6)  # ties share their average rank
    with pytest.raises(ValueError, match=r"^sequences differ in length$"):
        spearman([1, 2, 3], [1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant side is NaN, not a division by zero
        assert math.isnan(spearman([4, 4, 4], [1, 2, 3])) and math.isnan(spearman([1, 2, 3], [0, 0, 0]))
