"""Qwen2.5-VL's visual input layout, done in numpy/torch.

The stock Qwen video processor needs torchvision (no CPU wheels on many machines); the layout itself
is small and fixed: frames resized to multiples of ``patch * merge`` within a pixel budget, CLIP
normalisation, time padded to the temporal patch, and patches ordered merge-window by merge-window.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def qwen_frame_size(height: int, width: int, factor: int = 28, min_pixels: int = 4 * 28 * 28,
                    max_pixels: int = 512 * 512) -> tuple[int, int]:
    """Qwen's ``smart_resize``: nearest multiples of ``factor`` whose area lies in the pixel budget."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def sample_encoder_frames(num_frames: int, max_frames: int = 16) -> np.ndarray:
    """Evenly spaced frame indices, an even count (the temporal patch is 2), at most ``max_frames``."""
    n = max(2, min(max_frames, num_frames))
    n -= n % 2
    return np.round(np.linspace(0, num_frames - 1, n)).astype(np.int64)


def patchify_video(
    frames: np.ndarray,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    max_pixels: int = 512 * 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, H, W, 3) uint8`` -> (``pixel_values_videos`` ``(N, 3*tp*p*p)``, ``video_grid_thw`` ``(1, 3)``)."""
    arr = np.asarray(frames)
    t, height, width = arr.shape[:3]
    h, w = qwen_frame_size(height, width, factor=patch_size * merge_size, max_pixels=max_pixels)
    resized = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in arr]).astype(np.float32) / 255.0
    resized = (resized - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    if t % temporal_patch_size:
        pad = temporal_patch_size - t % temporal_patch_size
        resized = np.concatenate([resized, np.repeat(resized[-1:], pad, axis=0)])
    x = torch.from_numpy(resized).permute(0, 3, 1, 2)  # T, C, H, W
    gt, gh, gw = x.shape[0] // temporal_patch_size, h // patch_size, w // patch_size
    x = x.reshape(gt, temporal_patch_size, 3, gh // merge_size, merge_size, patch_size, gw // merge_size, merge_size, patch_size)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixels = x.reshape(gt * gh * gw, 3 * temporal_patch_size * patch_size * patch_size)
    return pixels.contiguous(), torch.tensor([[gt, gh, gw]])
