"""Qwen2.5-VL's visual input layout, done in numpy/torch.

The stock Qwen video processor needs torchvision (no CPU wheels on many machines, and the processor
class cannot even be built without it); the layout itself is small and fixed: frames resized to
multiples of ``patch * merge`` within a pixel budget, CLIP normalisation, time padded to the temporal
patch by repeating the last frame, and patches ordered merge-window by merge-window. The tests check
this layout against transformers' own Qwen2-VL image processor on still images.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Smallest per-image budget of Qwen's vision utilities (4 merged tokens).
IMAGE_MIN_PIXELS = 4 * 28 * 28
#: Smallest per-frame budget Qwen's vision utilities give video frames (128 merged tokens).
VIDEO_MIN_PIXELS = 128 * 28 * 28


def qwen_frame_size(
    height: int, width: int, factor: int = 28, min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: int = 512 * 512
) -> tuple[int, int]:
    """Qwen's ``smart_resize``: nearest multiples of ``factor`` whose area lies in the pixel budget."""
    if max(height, width) / max(1, min(height, width)) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} is beyond Qwen's limit of 200")
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


def video_frame_size(
    height: int, width: int, factor: int = 28, max_pixels: int = 512 * 512, min_pixels: int = VIDEO_MIN_PIXELS
) -> tuple[int, int]:
    """Size of video frames as Qwen's vision utilities produce it.

    Each frame is first fitted like an image (at least 4 tokens, at most ``max_pixels``), and the
    video as a whole is then brought up to ``min_pixels`` per frame if it is smaller.
    """
    h, w = qwen_frame_size(height, width, factor, IMAGE_MIN_PIXELS, max_pixels)
    return qwen_frame_size(h, w, factor, min(min_pixels, max_pixels), max_pixels)


def sample_encoder_frames(num_frames: int, max_frames: int = 16) -> np.ndarray:
    """All frames when there are at most ``max_frames``, else ``max_frames`` evenly spaced ones."""
    if num_frames < 1:
        raise ValueError("the encoder needs at least one frame")
    if num_frames <= max_frames:
        return np.arange(num_frames, dtype=np.int64)
    return np.round(np.linspace(0, num_frames - 1, max_frames)).astype(np.int64)


def resize_rgb(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of ``(T, H, W, 3) uint8`` frames with PIL (antialiased, as Qwen's utilities)."""
    if frames.shape[1:3] == (height, width):
        return np.asarray(frames)
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames])


def patchify_video(
    frames: np.ndarray,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    max_pixels: int = 512 * 512,
    min_pixels: int = VIDEO_MIN_PIXELS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, H, W, 3) uint8`` -> (``pixel_values_videos`` ``(N, 3*tp*p*p)``, ``video_grid_thw`` ``(1, 3)``).

    A still image is the same call on ``[image] * temporal_patch_size`` with ``min_pixels`` of an image.
    """
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[0] == 0 or arr.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {arr.shape}")
    t, height, width = arr.shape[:3]
    h, w = video_frame_size(height, width, patch_size * merge_size, max_pixels, min_pixels)
    resized = resize_rgb(arr, h, w).astype(np.float32) / 255.0
    resized = (resized - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    if t % temporal_patch_size:
        pad = temporal_patch_size - t % temporal_patch_size
        resized = np.concatenate([resized, np.repeat(resized[-1:], pad, axis=0)])
    x = torch.from_numpy(resized).permute(0, 3, 1, 2)  # T, C, H, W
    gt, gh, gw = x.shape[0] // temporal_patch_size, h // patch_size, w // patch_size
    x = x.reshape(
        gt,
        temporal_patch_size,
        3,
        gh // merge_size,
        merge_size,
        patch_size,
        gw // merge_size,
        merge_size,
        patch_size,
    )
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixels = x.reshape(gt * gh * gw, 3 * temporal_patch_size * patch_size * patch_size)
    return pixels.contiguous(), torch.tensor([[gt, gh, gw]])


def patchify_image(
    image: np.ndarray,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    max_pixels: int = 28 * 28 * 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, 3) uint8`` -> (``pixel_values`` , ``image_grid_thw``): the image repeated over one temporal patch."""
    still = np.repeat(np.asarray(image)[None], temporal_patch_size, axis=0)
    return patchify_video(still, patch_size, merge_size, temporal_patch_size, max_pixels, IMAGE_MIN_PIXELS)
