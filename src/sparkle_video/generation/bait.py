"""BAIT (Bbox-Anchor-In-Temporal) helpers: anchor sampling, box conversion and the majority vote.

Stage 4 runs the segmenter once per anchor frame (prompted by that frame's boxes) and merges the
resulting mask videos by a pixel-wise majority vote, which removes a single pass's glitches and recovers
an object another pass lost. These are the pure pieces, testable on their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..data.masks import qwen_box_to_pixels


def anchor_indices(num_frames: int, fps: float, rate: float = 2.0) -> list[int]:
    """Frames sampled at ``rate`` per second, starting at frame 0."""
    if num_frames <= 0:
        return []
    step = max(1, round(fps / rate)) if rate > 0 else num_frames
    return list(range(0, num_frames, step))


def valid_pixel_box(bbox_2d: Sequence[float], width: int, height: int, min_side: int = 2) -> tuple | None:
    """A Qwen [0, 1000] box as pixels, or ``None`` when it is empty, malformed or degenerate.

    Out-of-range coordinates are clipped to the frame first; a box left with a side under ``min_side``
    pixels (or wholly outside the frame) is not a prompt worth running.
    """
    if not bbox_2d or len(bbox_2d) != 4:
        return None
    try:
        values = [float(v) for v in bbox_2d]
    except (TypeError, ValueError):
        return None
    if not all(np.isfinite(values)):
        return None
    x1, y1, x2, y2 = qwen_box_to_pixels(values, width, height)
    if x2 - x1 < min_side or y2 - y1 < min_side:
        return None
    return (x1, y1, x2, y2)


class MajorityVote:
    """Pixel-wise majority over mask videos, accumulated one pass at a time (keeps memory to one count).

    A pixel is foreground when strictly more than half of the passes that ran say so.
    """

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None
        self.passes = 0

    def add(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask, dtype=bool)
        if self.counts is None:
            self.counts = np.zeros(mask.shape, np.uint16)
        elif mask.shape != self.counts.shape:
            raise ValueError(f"pass mask shape {mask.shape} != {self.counts.shape}")
        self.counts += mask
        self.passes += 1

    def result(self) -> np.ndarray:
        if self.counts is None:
            raise ValueError("no pass to vote on")
        return self.counts * 2 > self.passes


def majority_vote(passes: Iterable[np.ndarray]) -> np.ndarray:
    """The pixel-wise majority of boolean ``(T, H, W)`` mask videos."""
    vote = MajorityVote()
    for mask in passes:
        vote.add(mask)
    return vote.result()


def union_of_objects(object_masks: np.ndarray) -> np.ndarray:
    """``(N, T, H, W)`` per-object masks -> ``(T, H, W)`` foreground (their union)."""
    object_masks = np.asarray(object_masks, dtype=bool)
    if object_masks.ndim != 4:
        raise ValueError(f"segmenter output must be (num_boxes, T, H, W), got {object_masks.shape}")
    return object_masks.any(axis=0)
