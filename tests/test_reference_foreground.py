"""The reference path on a subject whose head and torso stay still while its arms swing: grounding,
BAIT tracking and the erase cover the whole subject, the scorer fails an erase that leaves part of it
behind and a final frame that lost part of it, and the image editor finds a subject off the centre."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sparkle_video.generation.backends.protocols import ControlInputs
from sparkle_video.generation.backends.reference import (
    ReferenceControlVideo,
    ReferenceImageEditor,
    ReferenceScorer,
    ReferenceSegmenter,
    ReferenceVLM,
    grabcut_rect,
    join_with_median,
    kept_fraction,
    leftover_foreground,
    lost_subject,
    source_edge_region,
)
from sparkle_video.generation.edges import control_video
from sparkle_video.generation.stages import erase_mask, generate_edited_video, track_foreground

H, W, T = 144, 256, 24
HEAD = (W // 2, 40, 14, 17)  # centre x, centre y, half axes
SKIN, SHIRT = (215, 170, 140), (40, 50, 160)


def head_mask() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    cv2.ellipse(m, HEAD[:2], HEAD[2:], 0, 0, 360, 1, -1)
    return m.astype(bool)


def textured_scene(seed: int = 0) -> np.ndarray:
    """The clips' scene: a colour gradient with a soft random texture, float ``(H, W, 3)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    bg = np.stack([70 + 60 * xx / W, 120 + 40 * yy / H, np.full((H, W), 90.0)], -1)
    return bg + cv2.resize(rng.random((H // 8, W // 8)).astype(np.float32), (W, H))[..., None] * 30


def still_head_clip(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(video, subject masks)``: a still head and torso, two arms swinging, on a textured gradient."""
    bg = textured_scene(seed)
    cx = W // 2
    video, masks = np.empty((T, H, W, 3), np.uint8), np.zeros((T, H, W), bool)
    for t in range(T):
        body, arms = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
        cv2.rectangle(body, (cx - 22, 58), (cx + 22, H - 1), 1, -1)
        angle = 0.7 + 0.5 * np.sin(2 * np.pi * t / 12)
        for side in (-1, 1):
            sx, sy = cx + side * 24, 62
            end = (int(sx + side * 45 * np.cos(angle)), int(sy + 45 * np.sin(angle) + 10))
            cv2.line(arms, (sx, sy), end, 1, 9)
        frame = bg.copy()
        frame[body.astype(bool)] = SHIRT
        frame[arms.astype(bool)] = (200, 150, 120)
        frame[head_mask()] = SKIN
        frame[30:36, cx - 6 : cx + 6] = (60, 40, 30)  # hair
        video[t] = np.clip(frame, 0, 255).astype(np.uint8)
        masks[t] = body.astype(bool) | arms.astype(bool) | head_mask()
    return video, masks


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, np.ndarray]:
    return still_head_clip()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_motion_alone_misses_the_still_head(clip) -> None:
    """Why the reference needs more than motion: the head never departs from the temporal median."""
    from sparkle_video.generation.backends.reference import background_model, difference

    video, _ = clip
    median = background_model(video)
    moving = np.stack([difference(f, median) > 28 for f in video]).any(axis=0)
    assert moving[head_mask()].mean() < 0.05


def test_round1_grounding_covers_the_still_head(clip) -> None:
    video, masks = clip
    objects = ReferenceVLM().ground_clip(video)
    assert [o.label for o in objects] == ["moving subject"]  # both arms and the torso: one subject
    box = erase_mask(objects, H, W)
    assert box[masks[0]].mean() == 1.0 and box[head_mask()].all()
    assert box.mean() < 0.6  # the subject's box (itself 47% of the frame), not the frame


def test_bait_mask_covers_the_whole_subject_on_every_frame(clip) -> None:
    video, masks = clip
    result = track_foreground(video, ["moving subject"], 16.0, ReferenceVLM(), ReferenceSegmenter(), 2.0)
    assert result.passed and result.passes == [0, 8, 16]
    scores = [iou(result.mask[t], masks[t]) for t in range(T)]
    assert min(scores) >= 0.8, scores
    assert all(result.mask[t][head_mask()].mean() >= 0.95 for t in range(T))


def test_erase_leaves_no_subject_and_the_scorer_passes_it(clip) -> None:
    video, masks = clip
    hole = erase_mask(ReferenceVLM().ground_clip(video), H, W)
    erased = ReferenceImageEditor().erase(video[0], hole)
    # no subject pixel keeps its colour: skin and shirt are gone where the subject was
    kept = np.abs(erased.astype(int) - video[0].astype(int)).max(-1)[masks[0]] < 20
    assert kept.mean() < 0.02
    for colour in (SKIN, SHIRT):
        near = np.abs(erased.astype(int) - np.array(colour)).max(-1) < 25
        assert near.sum() == 0, colour
    assert leftover_foreground(video[0], erased, hole) < 0.03
    score = ReferenceScorer().score_erase(video[0], erased, "Remove the moving subject", hole)
    assert score.overall >= 8.5, score


def test_scorer_fails_an_erase_that_leaves_the_head(clip) -> None:
    video, masks = clip
    below_neck = masks[0].copy()
    below_neck[:58] = False  # torso and arms removed, the head left standing
    erased = ReferenceImageEditor().erase(video[0], below_neck)
    assert np.abs(erased.astype(int) - video[0].astype(int)).max(-1)[head_mask()].mean() < 5  # still there
    leftover = leftover_foreground(video[0], erased, below_neck)
    assert leftover > 0.1
    score = ReferenceScorer().score_erase(video[0], erased, "Remove the moving subject", below_neck)
    assert score.overall < 8.5 and score.prompt_following < 5
    assert f"{leftover:.2f} of the subject left" in score.SC_reasoning
    # hands only (what motion blobs alone would erase): most of the subject is left
    arms_only = masks[0].copy()
    arms_only[:, W // 2 - 30 : W // 2 + 30] = False
    erased = ReferenceImageEditor().erase(video[0], arms_only)
    assert (
        ReferenceScorer().score_erase(video[0], erased, "Remove the moving subject", arms_only).overall == 0
    )


def test_final_generator_follows_the_control_and_keeps_edited_frame0(clip) -> None:
    video, masks = clip
    background = np.repeat(np.full((1, H, W, 3), (30, 160, 60), np.uint8), T, axis=0)
    control = control_video(video, background, masks)
    edited0 = video[0] // 2 + 60
    inputs = ControlInputs("x", edited0, control, video, masks, background, {"canny": (100, 200)})
    out = ReferenceControlVideo().generate(inputs)
    assert np.array_equal(out[0], edited0)
    region = source_edge_region(control[5], video[5], background[5], masks[5], 100, 200)
    assert iou(region, masks[5]) > 0.95
    # the subject is relit as the edit relit frame 0; the background is the background video
    core = cv2.erode(masks[5].astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert (
        np.abs(
            out[5][~cv2.dilate(masks[5].astype(np.uint8), np.ones((7, 7))).astype(bool)].astype(int)
            - (30, 160, 60)
        ).max()
        == 0
    )
    shift = edited0[masks[0]].astype(float).mean(0) - video[0][masks[0]].astype(float).mean(0)
    got = out[5][core].astype(float).mean(0) - video[5][core].astype(float).mean(0)
    assert np.abs(got - shift).max() < 12
    # a mask part the control holds no source edge for is left to the background video
    empty = np.zeros_like(control)
    blank = ReferenceControlVideo().generate(
        ControlInputs("x", edited0, empty, video, masks, background, {"canny": (100, 200)})
    )
    assert np.abs(blank[5].astype(int) - (30, 160, 60)).max() <= 1


def new_scene(seed: int = 1) -> np.ndarray:
    """A textured scene unlike the clip's, for final frames made by hand."""
    rng = np.random.default_rng(seed)
    yy = np.mgrid[0:H, 0:W][0].astype(np.float32)
    bg = np.stack([np.full((H, W), 200.0), 80 + 60 * yy / H, np.full((H, W), 40.0)], -1)
    bg += cv2.resize(rng.random((H // 8, W // 8)).astype(np.float32), (W, H))[..., None] * 40
    return np.clip(bg, 0, 255).astype(np.uint8)


def test_final_scorer_fails_a_frame_that_lost_the_head(clip) -> None:
    """Told the subject's mask, the reference scorer fails a final frame whose subject lost a part next
    to what it kept (a mask that missed the head puts the new scene where the head was); told nothing,
    its centre rule cannot see it."""
    video, masks = clip
    scene, prompt = new_scene(), "Replace the background with a sunny desert"
    whole = np.where(masks[5][..., None], video[5], scene)
    headless_mask = masks[5] & ~head_mask()
    headless = np.where(headless_mask[..., None], video[5], scene)
    scorer = ReferenceScorer()
    good = scorer.score_replacement(video[5], whole, prompt, masks[5])
    assert good.overall >= 8.0, good
    assert "0.00 of the subject lost" in good.SC_reasoning
    bad = scorer.score_replacement(video[5], headless, prompt, headless_mask)
    assert bad.overall < 8.0 and bad.prompt_following < 5, bad
    assert lost_subject(video[5], headless, headless_mask) > 0.1
    assert scorer.score(video[5], headless, prompt).overall >= 8.0  # why the mask is needed


def test_final_stage_gives_a_subject_aware_scorer_each_frames_mask(clip) -> None:
    video, masks = clip
    marked = masks.copy()
    marked[:, 0, :] = False
    for i in range(T):
        marked[i, 0, i] = True  # frame i's mask carries a mark in column i of its top row
    seen: list[list[int]] = []

    class Recording(ReferenceScorer):
        def score_replacement(self, source, edited, prompt, subject):
            seen.append(np.flatnonzero(subject[0]).tolist())
            return super().score_replacement(source, edited, prompt, subject)

    background = np.repeat(new_scene()[None], T, axis=0)
    result = generate_edited_video(
        video,
        marked,
        background,
        video[0],
        "Replace the background",
        ReferenceControlVideo(),
        Recording(),
        frame_indices=(1, 5, 9, 13),
    )
    assert seen == [[1], [5], [9], [13]]
    assert result.frame_indices == [1, 5, 9, 13]


def off_centre_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One frame with a person (head and body) standing in the left fifth, and its mask."""
    frame = np.clip(textured_scene(seed), 0, 255).astype(np.uint8)
    subject = np.zeros((H, W), np.uint8)
    cv2.rectangle(subject, (32, 62), (72, H - 1), 1, -1)
    head = np.zeros((H, W), np.uint8)
    cv2.ellipse(head, (52, 42), (13, 16), 0, 0, 360, 1, -1)
    frame[subject.astype(bool)] = SHIRT
    frame[head.astype(bool)] = SKIN
    return frame, (subject | head).astype(bool)


def test_image_editor_finds_an_off_centre_subject() -> None:
    frame, subject = off_centre_frame()
    centred = grabcut_rect(frame, (W // 6, H // 20, W - W // 6, H))
    assert centred[subject].mean() < 0.8  # a centred box cuts a subject standing at the side
    editor = ReferenceImageEditor()
    mask = editor.subject_mask(frame)
    assert mask[subject].mean() >= 0.95 and iou(mask, subject) >= 0.7
    edited = editor.edit(frame, "Replace the background with a sunny beach")
    core = cv2.erode(subject.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert kept_fraction(frame, edited, core) >= 0.95
    assert np.abs(edited.astype(int) - frame.astype(int)).max(-1)[~subject].mean() > 20


def test_round2_boxes_are_joined_with_the_subjects_median_box() -> None:
    """One frame where GrabCut kept only a hand still gets the whole subject's box; one stray wide box
    does not widen the others; a frame without the second subject keeps its empty slot."""
    body, hand, wide = (40, 10, 120, 140), (100, 60, 115, 80), (0, 0, 250, 140)
    found = [[body, (200, 20, 230, 60)], [hand], [body, (205, 25, 235, 65)], [wide], [(42, 12, 118, 138)]]
    joined = join_with_median(found, 2)
    assert joined[1] == [body, None]  # the hand frame: the median body box (40, 10, 120, 140)
    assert joined[0][0] == body and joined[4][0] == body
    assert joined[3][0] == wide  # its own box is wider than the median: kept, not shrunk
    assert joined[0][1] == (200, 20, 232, 62) and joined[2][1] == (202, 22, 235, 65)


def test_single_frame_grounding_boxes_an_off_centre_subject() -> None:
    """The VLM's one-frame grounding finds the subject as the image editor does, off the centre too."""
    frame, subject = off_centre_frame()
    [found] = ReferenceVLM().ground(frame)
    box = erase_mask([found], H, W)
    assert box[subject].mean() >= 0.95
    assert box.sum() < 1.6 * subject.sum()  # the subject's box, not the centred one
