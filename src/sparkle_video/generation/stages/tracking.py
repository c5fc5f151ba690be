"""Stage 4, BAIT: re-ground at 2 fps, one segmenter pass per anchor frame, pixel-wise majority vote."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..backends.protocols import GroundedObject, VideoSegmenter, VisionLanguageModel
from ..bait import MajorityVote, anchor_indices, union_of_objects, valid_pixel_box

logger = logging.getLogger(__name__)


@dataclass
class TrackingResult:
    frame_indices: list[int]
    frame_objects: list[list[GroundedObject]]
    mask: np.ndarray | None
    passes: list[int] = field(default_factory=list)  # anchors whose pass joined the vote
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (anchor, why) for the others
    passed: bool = False
    reason: str = ""


def track_foreground(
    frames: np.ndarray,
    labels: Sequence[str],
    fps: float,
    vlm: VisionLanguageModel,
    segmenter: VideoSegmenter,
    anchor_fps: float = 2.0,
) -> TrackingResult:
    """The BAIT foreground mask ``(T, H, W)`` of ``frames``.

    Anchors whose boxes are all empty or invalid are skipped; a pass that raises or returns the wrong
    shape is recorded and left out of the vote; with no pass left the sample is rejected.
    """
    t, h, w = frames.shape[:3]
    anchors = anchor_indices(t, fps, anchor_fps)
    found = vlm.relocate([frames[i] for i in anchors], list(labels))
    if len(found) != len(anchors):
        raise ValueError(f"VLM relocated {len(found)} frames, asked for {len(anchors)}")
    vote = MajorityVote()
    result = TrackingResult(anchors, [list(objs) for objs in found], None)
    for anchor, objects in zip(anchors, found, strict=True):
        boxes = [b for b in (valid_pixel_box(o.bbox_2d, w, h) for o in objects) if b is not None]
        if not boxes:
            result.skipped.append((anchor, "no box on this anchor"))
            continue
        try:
            masks = np.asarray(segmenter.segment(frames, anchor, boxes))
            if masks.shape != (len(boxes), t, h, w):
                raise ValueError(f"segmenter returned {masks.shape}, expected {(len(boxes), t, h, w)}")
            vote.add(union_of_objects(masks))
        except Exception as e:  # one bad pass must not sink the sample: the vote is there for this
            logger.warning("BAIT pass at anchor %d failed: %s", anchor, e)
            result.skipped.append((anchor, f"{type(e).__name__}: {e}"))
            continue
        result.passes.append(anchor)
    if not result.passes:
        result.reason = (
            "no segmenter pass succeeded"
            if any("no box" not in why for _, why in result.skipped)
            else "foreground not found on any anchor frame"
        )
        return result
    result.mask = vote.result()
    if not result.mask.any():
        result.reason = "majority vote left an empty foreground mask"
        return result
    result.passed = True
    return result
