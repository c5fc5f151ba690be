"""SAM3 tracker backend (``Sam3TrackerVideoModel`` + inference session), tiny random weights.

The hand-written input preparation is checked against the processor's own coordinate method and its
documented resize/normalise/upsample behaviour; propagation is checked frame by frame in both
directions from a middle anchor, per object id, and the BAIT vote consumes the result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkle_video.generation.backends.protocols import GroundedObject, VideoSegmenter
from sparkle_video.generation.backends.registry import build_backend
from sparkle_video.generation.backends.sam3 import (
    clip_boxes,
    sam3_box_points,
    sam3_masks_to_frame,
    sam3_pixel_values,
)

T, H, W = 9, 40, 60


@pytest.fixture(scope="module")
def segmenter():
    return build_backend("segmenter", "sam3", {"tiny": True})


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def test_box_points_match_the_processor():
    from transformers.models.sam3_tracker_video.processing_sam3_tracker_video import Sam3TrackerVideoProcessor

    boxes = [(5.0, 4.0, 30.0, 33.0), (20.0, 10.0, 59.0, 39.0)]
    points, labels = sam3_box_points(boxes, H, W, 1008)
    expected = Sam3TrackerVideoProcessor._normalize_coordinates(
        None, 1008, torch.tensor(boxes), (H, W), is_bounding_box=True
    )
    assert points.shape == (2, 1, 2, 2) and labels.shape == (2, 1, 2)
    torch.testing.assert_close(points.reshape(2, 4), expected)
    assert labels.tolist() == [[[2, 3]], [[2, 3]]]


def test_pixel_values_follow_the_processor_contract():
    clip = np.zeros((2, H, W, 3), np.uint8)
    clip[0] = (0, 128, 255)
    clip[1] = 51
    x = sam3_pixel_values(clip, 56)
    assert x.shape == (2, 3, 56, 56) and x.dtype == torch.float32
    # rescale 1/255, then (x - 0.5) / 0.5: constant frames stay constant through the resize
    torch.testing.assert_close(x[0, :, 10, 10], torch.tensor([-1.0, 128 / 255 * 2 - 1, 1.0]))
    torch.testing.assert_close(x[1].mean(), torch.tensor(51 / 255 * 2 - 1))
    # a resized (non-constant) frame lands on the uint8 grid, as the processor's uint8 resize does
    noisy = np.random.default_rng(0).integers(0, 256, (1, H, W, 3), dtype=np.uint8)
    levels = (sam3_pixel_values(noisy, 56) * 0.5 + 0.5) * 255
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        sam3_pixel_values(clip[0], 56)


def test_masks_upsampled_to_the_clip_and_thresholded():
    logits = torch.full((2, 1, 4, 4), -5.0)
    logits[0, 0, :2, :2] = 5.0  # object 0 in the top-left quarter
    masks = sam3_masks_to_frame(logits, 40, 60)
    assert masks.shape == (2, 40, 60) and masks.dtype == bool
    assert masks[0, :15, :25].all() and not masks[0, 25:, :].any() and not masks[1].any()
    expected = (
        torch.nn.functional.interpolate(logits, (40, 60), mode="bilinear", align_corners=False)[:, 0] > 0
    )
    assert np.array_equal(masks, expected.numpy())


def test_clip_boxes_orders_clips_and_refuses_empty():
    assert clip_boxes([(30, 30, -5, 2)], H, W) == [(0.0, 2.0, 30.0, 30.0)]
    with pytest.raises(ValueError, match="box 1"):
        clip_boxes([(1, 1, 5, 5), (70, 50, 90, 60)], H, W)
    with pytest.raises(ValueError, match="4 numbers"):
        clip_boxes([(1, 2, 3)], H, W)


def test_middle_anchor_propagates_both_ways_per_object(segmenter, frames, monkeypatch):
    assert isinstance(segmenter, VideoSegmenter)
    model = segmenter.model
    assert model.__class__.__name__ == "Sam3TrackerVideoModel"
    visits: list[tuple[bool, int, list[int], torch.Tensor]] = []
    original = model.__class__.propagate_in_video_iterator

    def spy(self, session, start_frame_idx=None, max_frame_num_to_track=None, reverse=False, **kw):
        assert start_frame_idx == 4
        for out in original(self, session, start_frame_idx, max_frame_num_to_track, reverse, **kw):
            visits.append((reverse, out.frame_idx, list(out.object_ids), out.pred_masks.clone()))
            yield out

    monkeypatch.setattr(model.__class__, "propagate_in_video_iterator", spy)
    boxes = [(5, 5, 30, 30), (20, 10, 50, 35)]
    masks = segmenter.segment(frames, 4, boxes)
    assert masks.shape == (2, T, H, W) and masks.dtype == bool
    forward = [f for rev, f, _, _ in visits if not rev]
    backward = [f for rev, f, _, _ in visits if rev]
    assert forward == list(range(4, T)) and backward == list(range(4, -1, -1))
    assert all(ids == [1, 2] for _, _, ids, _ in visits)
    # every frame's mask is the last visit's logits for that object, upsampled and thresholded
    last = {f: logits for _, f, _, logits in visits}
    assert sorted(last) == list(range(T))
    for f, logits in last.items():
        assert logits.shape[0] == 2
        assert np.array_equal(masks[:, f], sam3_masks_to_frame(logits, H, W))
    again = segmenter.segment(frames, 4, boxes)
    assert np.array_equal(masks, again)


def test_first_and_last_anchor_and_no_boxes(segmenter, frames):
    assert segmenter.segment(frames, 0, [(2, 2, 20, 20)]).shape == (1, T, H, W)
    assert segmenter.segment(frames, T - 1, [(2, 2, 20, 20)]).shape == (1, T, H, W)
    empty = segmenter.segment(frames, 3, [])
    assert empty.shape == (0, T, H, W)
    with pytest.raises(ValueError, match="anchor"):
        segmenter.segment(frames, T, [(2, 2, 20, 20)])


def test_threshold_option_and_unknown_option():
    everything = build_backend("segmenter", "sam3", {"tiny": True, "mask_threshold": -1.0e9})
    clip = np.random.default_rng(1).integers(0, 256, (5, 24, 32, 3), dtype=np.uint8)
    assert everything.segment(clip, 2, [(2, 2, 20, 20)]).all()
    with pytest.raises(ValueError, match="'steps'"):
        build_backend("segmenter", "sam3", {"tiny": True, "steps": 4})


def test_bait_vote_consumes_sam3_passes(segmenter, frames, monkeypatch):
    from sparkle_video.generation.stages.tracking import track_foreground

    class ScriptedVLM:
        """Finds the same two objects on every anchor frame (boxes in Qwen's [0, 1000] frame)."""

        def relocate(self, anchor_frames, labels):
            return [
                [GroundedObject("person", (100, 100, 500, 800)), GroundedObject("dog", (400, 250, 850, 900))]
                for _ in anchor_frames
            ]

    passes = []
    original = segmenter.segment

    def recorded(clip, anchor, boxes):
        out = original(clip, anchor, boxes)
        passes.append((anchor, list(boxes), out))
        return out

    monkeypatch.setattr(segmenter, "segment", recorded)
    result = track_foreground(frames, ["person", "dog"], fps=8, vlm=ScriptedVLM(), segmenter=segmenter)
    assert result.frame_indices == [0, 4, 8]
    assert result.passes == [0, 4, 8] and result.skipped == []
    assert [a for a, _, _ in passes] == [0, 4, 8]
    # Qwen boxes reached SAM3 as pixel boxes of the 60x40 clip
    assert passes[0][1] == [(6, 4, 30, 32), (24, 10, 51, 36)]
    assert all(out.shape == (2, T, H, W) for _, _, out in passes)
    assert result.mask is not None and result.mask.shape == (T, H, W) and result.mask.dtype == bool
    # the vote is the pixel-wise majority of the three passes' object unions
    unions = [out.any(axis=0) for _, _, out in passes]
    assert np.array_equal(result.mask, np.sum(unions, axis=0) * 2 > 3)
