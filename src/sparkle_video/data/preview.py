"""Side-by-side previews: source | edited videos and contact sheets, with the prompt written on them."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .display import HTML_HEIGHT, image_tag
from .video import VideoReader, uniform_indices, write_video

BANNER_LINE_PX = 18


def caption_banner(text: str, width: int, max_lines: int = 4) -> np.ndarray:
    """A dark banner of ``width`` pixels holding ``text`` wrapped to fit."""
    chars = max(10, width // 8)
    lines = textwrap.wrap(text, chars)[:max_lines] or [""]
    banner = np.full((BANNER_LINE_PX * len(lines) + 8, width, 3), 24, np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(
            banner,
            line,
            (6, 16 + k * BANNER_LINE_PX),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (240, 240, 240),
            1,
            cv2.LINE_AA,
        )
    return banner


def side_by_side(columns: Sequence[np.ndarray], height: int) -> np.ndarray:
    """Resize ``(T, H, W, 3)`` clips to a common height (and length) and put them side by side."""
    n = min(len(c) for c in columns)
    resized = []
    for clip in columns:
        h, w = clip.shape[1:3]
        new_w = max(2, round(w * height / h) // 2 * 2)
        resized.append(
            np.stack([cv2.resize(f, (new_w, height), interpolation=cv2.INTER_AREA) for f in clip[:n]])
        )
    return np.concatenate(resized, axis=2)


def preview_frames(
    videos: Sequence[VideoReader], prompt: str, height: int = 240, max_frames: int = 81
) -> np.ndarray:
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


#: Output kinds ``write_preview`` knows, by extension.
PREVIEW_FORMATS = {
    ".mp4": "side-by-side video",
    ".gif": "side-by-side animation",
    ".png": "contact sheet",
    ".jpg": "contact sheet",
    ".jpeg": "contact sheet",
}


def check_preview_path(out: str) -> str:
    """The lower-case extension of ``out``; anything not in :data:`PREVIEW_FORMATS` is a ``ValueError``."""
    ext = os.path.splitext(out)[1].lower()
    if ext not in PREVIEW_FORMATS:
        known = ", ".join(f"{e} ({what})" for e, what in PREVIEW_FORMATS.items())
        raise ValueError(f"preview output {out!r} has an unknown extension; use one of {known}")
    return ext


def write_preview(videos: Sequence[VideoReader], prompt: str, out: str, fps: float | None = None) -> str:
    """``.mp4`` -> side-by-side video; ``.gif`` -> the same as a small animation; ``.png``/``.jpg`` -> contact sheet."""
    ext = check_preview_path(out)
    rate = fps or videos[0].fps or 16
    if ext == ".mp4":
        write_video(preview_frames(videos, prompt), out, fps=rate)
    elif ext == ".gif":
        from PIL import Image

        frames = preview_frames(videos, prompt, height=160)
        images = [Image.fromarray(f) for f in frames]
        images[0].save(out, save_all=True, append_images=images[1:], duration=round(1000 / rate), loop=0)
    else:
        from PIL import Image

        Image.fromarray(contact_sheet(videos, prompt)).save(out)
    return out


# -- notebooks ------------------------------------------------------------------------------------
def _image_html(image: Any, height: int = HTML_HEIGHT) -> str:
    import io

    thumb = image.copy()
    thumb.thumbnail((height * 4, height))
    buf = io.BytesIO()
    thumb.convert("RGB").save(buf, format="JPEG", quality=80)
    return image_tag(buf.getvalue(), "image/jpeg")


class RowPreview:
    """Inline notebook display of a loaded row: its id and prompt, then source | edited (or reference image).

    ``datasets`` hands rows out as plain dicts, which cannot carry a display method; wrap one with
    :func:`show` (or this class). Nothing is decoded before the notebook asks for the HTML.
    """

    def __init__(self, row: dict):
        self.row = row

    def __repr__(self) -> str:
        return f"RowPreview({self.row.get('id')!r}: {self.row.get('prompt')!r})"

    def _repr_html_(self) -> str:
        import html

        cells = []
        for key in ("source_video", "edited_video", "ref_image"):
            value = self.row.get(key)
            if value is None:
                continue
            body = value._repr_html_() if isinstance(value, VideoReader) else _image_html(value)
            label = key.replace("_", " ")
            cells.append(f'<figure style="margin:0 8px 0 0">{body}<figcaption>{label}</figcaption></figure>')
        keyword = ": ".join(str(self.row[k]) for k in ("subtheme", "scene") if self.row.get(k))
        head = f"<b>{html.escape(str(self.row.get('id', '')))}</b>"
        if keyword:
            head += f" <i>({html.escape(keyword)})</i>"
        return (
            f"<div>{head}<p>{html.escape(str(self.row.get('prompt', '')))}</p>"
            f'<div style="display:flex;align-items:flex-start">{"".join(cells)}</div></div>'
        )


def show(row: dict) -> RowPreview:
    """Display a loaded row inline in Jupyter: ``show(ds[0])`` as the last line of a cell."""
    return RowPreview(row)
