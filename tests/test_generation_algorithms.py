"""The pipeline's algorithms on their own: camera check, BAIT vote, edge fusion, taxonomy, stage 4/5 helpers."""

from __future__ import annotations

import glob
from pathlib import Path

import cv2
import numpy as np
import pytest

from sparkle_video.data.synthetic import make_pair
from sparkle_video.generation import taxonomy
from sparkle_video.generation.backends.protocols import GroundedObject
from sparkle_video.generation.bait import MajorityVote, anchor_indices, majority_vote, valid_pixel_box
from sparkle_video.generation.camera import (
    check_camera,
    decide,
    homography_stats,
    needed_frames,
    sample_pairs,
)
from sparkle_video.generation.edges import canny_video, control_video, fuse_edges
from sparkle_video.generation.settings import CameraThresholds
from sparkle_video.generation.stages import score_frame_indices, track_foreground

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "sparkle"


def scene(seed: int = 1, height: int = 450, width: int = 800) -> np.ndarray:
    """A textured still, larger than the clip cut from it, so the camera can move over it."""
    rng = np.random.default_rng(seed)
    return cv2.resize(
        (rng.random((60, 100, 3)) * 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_CUBIC
    )


def camera_clip(motion, frames: int = 33, seed: int = 1) -> np.ndarray:
    """A 320x560 clip filmed over a still scene by a camera moving as ``motion(t) -> (dx, dy, scale, deg)``,
    with a subject (a disc) walking across it so a moving foreground is always present."""
    still = scene(seed)
    out = []
    for t in range(frames):
        dx, dy, s, deg = motion(t)
        m = cv2.getRotationMatrix2D((400, 225), deg, s)
        m[:, 2] += (dx, dy)
        frame = cv2.warpAffine(still, m, (800, 450))[65:385, 120:680].copy()
        cv2.circle(frame, (100 + 10 * t, 200), 40, (240, 230, 60), -1)
        out.append(frame)
    return np.stack(out)


def test_static_camera_with_moving_foreground_is_accepted() -> None:
    report = check_camera(camera_clip(lambda t: (0, 0, 1.0, 0)))
    assert report.static, report.reason
    assert report.max_translation < 0.2 and report.moving_pairs == 0
    assert check_camera(make_pair(0, 33, 180, 320).source).static  # the procedural clips too


@pytest.mark.parametrize(
    ("name", "motion", "stat"),
    [
        ("pan", lambda t: (-2.0 * t, 0, 1.0, 0), "translation"),
        ("tilt", lambda t: (0, 1.5 * t, 1.0, 0), "translation"),
        ("zoom", lambda t: (0, 0, 1 + 0.003 * t, 0), "scale"),
        ("roll", lambda t: (0, 0, 1.0, 0.1 * t), "rotation"),
        ("hand-held shake", lambda t: (*np.random.default_rng(t).normal(0, 1.5, 2), 1.0, 0), "translation"),
    ],
)
def test_moving_cameras_are_rejected(name: str, motion, stat: str) -> None:
    report = check_camera(camera_clip(motion))
    assert not report.static, name
    assert report.moving_pairs > report.num_pairs // 2
    assert stat in report.reason


def test_decision_statistics() -> None:
    assert sample_pairs(81, 8, 4)[0] == (0, 4) and sample_pairs(81, 8, 4)[-1] == (76, 80)
    assert sample_pairs(3, 8, 4) == [(0, 2)] and sample_pairs(1, 8, 4) == []
    assert needed_frames(81)[:2] == [0, 4]
    assert not decide([], CameraThresholds()).static
    shift = np.array([[1, 0, 3], [0, 1, 4], [0, 0, 1]], np.float64)
    t, r, s = homography_stats(shift, 160, 90)
    assert (round(t, 6), round(r, 6), round(s, 6)) == (5.0, 0.0, 0.0)
    rot = np.vstack([cv2.getRotationMatrix2D((80, 45), 2.0, 1.1), [0, 0, 1]])
    t, r, s = homography_stats(rot, 160, 90)
    assert t < 1e-6 and abs(r - 2.0) < 1e-6 and abs(s - 0.1) < 1e-6


@pytest.mark.skipif(not SAMPLES.exists(), reason="shared sample clips are absent")
def test_real_sample_clips_are_static() -> None:
    from sparkle_video.data.video import VideoReader

    paths = sorted(glob.glob(str(SAMPLES / "*" / "source_video" / "*.mp4")))
    assert paths
    for path in paths:
        reader = VideoReader(path)
        idx = needed_frames(min(reader.num_frames, 81))
        frames = dict(zip(idx, reader.get_frames(idx, size=(320, 180)), strict=True))
        report = check_camera(frames)
        assert report.static, (path, report)


# -- BAIT --------------------------------------------------------------------------------------------
def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def noisy_pass(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible bad pass: random speckle, a lost stretch of frames and a spurious blob."""
    out = truth ^ (rng.random(truth.shape) < 0.08)
    t = truth.shape[0]
    start = int(rng.integers(0, t - 4))
    out[start : start + 4] = False  # entity loss
    y, x = rng.integers(0, truth.shape[1] - 10), rng.integers(0, truth.shape[2] - 10)
    out[:, y : y + 10, x : x + 10] = True  # a glitch
    return out


def test_majority_vote_beats_every_noisy_pass() -> None:
    truth = make_pair(3, 17, 64, 96).mask
    rng = np.random.default_rng(0)
    passes = [noisy_pass(truth, rng) for _ in range(5)]
    voted = majority_vote(passes)
    best_single = max(iou(p, truth) for p in passes)
    assert iou(voted, truth) > best_single + 0.05
    assert iou(voted, truth) > 0.7


def test_vote_is_a_strict_majority() -> None:
    a, b, c = (np.array([[[v]]], bool) for v in (True, True, False))
    assert majority_vote([a, b, c]).item() and not majority_vote([a, c]).item()
    vote = MajorityVote()
    with pytest.raises(ValueError, match="no pass"):
        vote.result()
    vote.add(a)
    with pytest.raises(ValueError, match="shape"):
        vote.add(np.zeros((2, 1, 1), bool))


def test_boxes_and_anchors() -> None:
    assert anchor_indices(81, 16, 2.0) == list(range(0, 81, 8))
    assert anchor_indices(20, 15, 2.0) == [0, 8, 16]
    assert valid_pixel_box([], 100, 50) is None
    assert valid_pixel_box([500, 500, 500, 900], 100, 50) is None  # zero width
    assert valid_pixel_box([1200, 0, 1500, 1000], 100, 50) is None  # wholly outside
    assert valid_pixel_box([-100, -50, 500, 2000], 100, 50) == (0, 0, 50, 50)  # clipped into the frame
    assert valid_pixel_box(["a", 1, 2, 3], 100, 50) is None
    assert valid_pixel_box([float("nan"), 0, 500, 500], 100, 50) is None


class ScriptedVLM:
    """Returns boxes from a known mask on some anchors and nothing on others."""

    def __init__(self, mask: np.ndarray, empty: set[int]):
        self.mask, self.empty, self.calls = mask, empty, 0

    def relocate(self, frames, labels):
        from sparkle_video.data.synthetic import mask_qwen_box

        out = []
        for k, _ in enumerate(frames):
            index = k * 8
            box = () if index in self.empty else mask_qwen_box(self.mask[index])
            out.append([GroundedObject(labels[0], box), GroundedObject("ghost", (2000, 2000, 3000, 3000))])
        return out


class NoisySegmenter:
    """Each pass is the true mask with noise; the pass at ``fail_at`` raises, the one at ``wrong_at`` returns garbage."""

    def __init__(self, truth: np.ndarray, fail_at: int, wrong_at: int):
        self.truth, self.fail_at, self.wrong_at, self.anchors = truth, fail_at, wrong_at, []

    def segment(self, frames, anchor, boxes):
        self.anchors.append(anchor)
        assert len(boxes) == 1  # the out-of-frame "ghost" box never reaches the segmenter
        if anchor == self.fail_at:
            raise RuntimeError("out of memory")
        if anchor == self.wrong_at:
            return np.zeros((1, 2, 2, 2), bool)
        return noisy_pass(self.truth, np.random.default_rng(anchor))[None]


def test_bait_survives_empty_anchors_and_failing_passes() -> None:
    pair = make_pair(5, 41, 64, 96)
    anchors = anchor_indices(41, 16)  # 0, 8, 16, 24, 32, 40
    seg = NoisySegmenter(pair.mask, fail_at=16, wrong_at=24)
    result = track_foreground(pair.source, ["moving subject"], 16, ScriptedVLM(pair.mask, {8}), seg)
    assert result.passed and result.frame_indices == anchors
    assert seg.anchors == [0, 16, 24, 32, 40]  # anchor 8 had no box: no pass
    assert result.passes == [0, 32, 40]
    skipped = dict(result.skipped)
    assert set(skipped) == {8, 16, 24}
    assert "RuntimeError: out of memory" in skipped[16] and "segmenter returned" in skipped[24]
    assert result.frame_objects[1][0].bbox_2d == ()
    singles = [noisy_pass(pair.mask, np.random.default_rng(a)) for a in result.passes]
    assert iou(result.mask, pair.mask) > max(iou(s, pair.mask) for s in singles)


def test_bait_rejects_when_nothing_is_found() -> None:
    pair = make_pair(5, 17, 64, 96)
    result = track_foreground(
        pair.source, ["x"], 16, ScriptedVLM(pair.mask, {0, 8, 16}), NoisySegmenter(pair.mask, -1, -1)
    )
    assert not result.passed and result.mask is None
    assert result.reason == "foreground not found on any anchor frame"
    result = track_foreground(
        pair.source, ["x"], 16, ScriptedVLM(pair.mask, set()), NoisySegmenter(pair.mask, 0, 8)
    )
    assert result.passed and result.passes == [16]  # 0 and 8 fail; a vote of one pass is still a mask
    assert [a for a, _ in result.skipped] == [0, 8]


# -- edges ---------------------------------------------------------------------------------------
def test_canny_fusion_is_exact() -> None:
    pair = make_pair(2, 9, 64, 96)
    src_edges, bg_edges = canny_video(pair.source), canny_video(pair.background)
    fused = control_video(pair.source, pair.background, pair.mask)
    assert fused.shape == (*pair.mask.shape, 3) and fused.dtype == np.uint8
    assert np.array_equal(fused[..., 0], fused[..., 2])
    inside, outside = pair.mask, ~pair.mask
    assert np.array_equal(fused[..., 0][inside], src_edges[inside])
    assert np.array_equal(fused[..., 0][outside], bg_edges[outside])
    assert src_edges[inside].any() and bg_edges[outside].any()  # both sources contribute
    with pytest.raises(ValueError, match="shapes differ"):
        fuse_edges(src_edges, bg_edges[:2], pair.mask)
    assert set(np.unique(src_edges)) <= {0, 255}


def test_final_frame_indices() -> None:
    assert score_frame_indices(81) == [1, 26, 51, 76]
    assert score_frame_indices(21) == [1, 7, 14, 20]
    assert 0 not in score_frame_indices(5)
    with pytest.raises(ValueError):
        score_frame_indices(1)


# -- taxonomy ------------------------------------------------------------------------------------
def test_taxonomy_size_and_keywords() -> None:
    themes, subthemes, scenes = taxonomy.count()
    assert (themes, subthemes, scenes) == (4, 22, 100)
    assert taxonomy.THEMES == ("location", "season", "time", "style")
    all_scenes = [k for t in taxonomy.THEMES for k in taxonomy.scenes(t)]
    assert len(set(all_scenes)) == len(all_scenes)
    kw = taxonomy.scenes("season")[4]
    sub, scene = kw.split(": ")
    assert sub in taxonomy.subthemes("season")
    prompt = taxonomy.compose_prompt("season", kw)
    assert scene in prompt and taxonomy.find_in_prompt(prompt)[1] == sub
    with pytest.raises(ValueError, match="unknown theme 'openve3m'"):
        taxonomy.check_themes(["openve3m"])
