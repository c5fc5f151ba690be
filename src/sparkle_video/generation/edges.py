"""Stage 5's decoupled guidance: one control video from two edge maps.

Inside the BAIT foreground mask the edges come from the source video (the subject keeps its shape and
motion); outside they come from the generated background video (the new, moving scene).
"""

from __future__ import annotations

import cv2
import numpy as np


def canny_video(frames: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """``(T, H, W)`` uint8 Canny edge maps (0 or 255) of ``(T, H, W, 3)`` RGB frames."""
    return np.stack(
        [cv2.Canny(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), low, high) for f in frames]
    )


def fuse_edges(source_edges: np.ndarray, background_edges: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Source edges where ``mask`` is set, background edges elsewhere (all ``(T, H, W)``)."""
    if not (source_edges.shape == background_edges.shape == mask.shape):
        raise ValueError(
            f"shapes differ: source {source_edges.shape}, background {background_edges.shape}, mask {mask.shape}"
        )
    return np.where(mask.astype(bool), source_edges, background_edges)


def control_video(
    source: np.ndarray, background: np.ndarray, mask: np.ndarray, low: int = 100, high: int = 200
) -> np.ndarray:
    """The ``(T, H, W, 3)`` uint8 control video (edges replicated over RGB, as it is stored)."""
    fused = fuse_edges(canny_video(source, low, high), canny_video(background, low, high), mask)
    return np.repeat(fused[..., None], 3, axis=-1)
