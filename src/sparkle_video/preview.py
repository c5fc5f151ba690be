"""Side-by-side previews: source | edited videos and contact sheets, with the prompt written on them."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import cv2
import numpy as np

from .video import VideoReader, uniform_indices, write_video

BANNER_LINE_PX = 18


def caption_banner(text: str, width: int, max_lines: int = 4) -> np.ndarray:
    """A dark banner of ``width`` pixels holding ``text`` wrapped to fit."""
    chars = max(10, width // 8)
    lines = textwrap.wrap(text, chars)[:max_lines] or [""]
    banner = np.full((BANNER_LINE_PX * len(lines) + 8, width, 3), 24, np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(banner, line, (6, 16 + k * BANNER_LINE_PX), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (240, 240, 240), 1, cv2.LINE_AA)
    return banner


def side_by_side(columns: Sequence[np.ndarray], height: int) -> np.ndarray:
    """Resize ``(T, H, W, 3)`` clips to a common height (and length) and put them side by side."""
    n = min(len(c) for c in columns)
    resized = []
    for clip in columns:
        h, w = clip.shape[1:3]
        new_w = max(2, round(w * height / h) // 2 * 2)
        resized.append(np.stack([cv2.resize(f, (new_w, height), interpolation=cv2.INTER_AREA) for f in clip[:n]]))
    return np.concatenate(resized, axis=2)


def preview_frames(videos: Sequence[VideoReader], prompt: str, height: int = 240, max_frames: int = 81) -> np.ndarray:
    """Frames of a side-by-side preview video with the prompt in a banner above."""
    clips = []
    for v in videos:
        n = min(v.num_frames, max_frames)
        h = height
        w = max(2, round(v.width * h / v.height) // 2 * 2)
        clips.append(v.get_frames(range(n), size=(h, w)))
    grid = side_by_side(clips, height)
    banner = caption_banner(prompt, grid.shape[2])
    return np.concatenate([np.repeat(banner[None], len(grid), 0), grid], axis=1)


def contact_sheet(videos: Sequence[VideoReader], prompt: str, num: int = 4, height: int = 160) -> np.ndarray:
    """One image: a row of ``num`` uniformly sampled frames per video, with the prompt on top."""
    rows = []
    for v in videos:
        w = max(2, round(v.width * height / v.height))
        frames = v.get_frames(uniform_indices(v.num_frames, num), size=(height, w))
        rows.append(np.concatenate(list(frames), axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate([caption_banner(prompt, width), *rows], axis=0)


def write_preview(videos: Sequence[VideoReader], prompt: str, out: str, fps: float | None = None) -> str:
    """``.mp4`` -> side-by-side video; ``.png``/``.jpg`` -> contact sheet."""
    if out.lower().endswith(".mp4"):
        frames = preview_frames(videos, prompt)
        write_video(frames, out, fps=fps or videos[0].fps or 16)
    else:
        from PIL import Image

        Image.fromarray(contact_sheet(videos, prompt)).save(out)
    return out
