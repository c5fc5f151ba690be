"""Notebook HTML for encoded media: bytes in, a self-contained tag out.

It sits below ``video`` (which encodes a small clip and hands the bytes here) and ``preview`` (which lays
rows out), so a reader's notebook display needs nothing above it.
"""

from __future__ import annotations

import base64
import html

#: Size bound of one clip's inline HTML (the base64 payload); a row holds two clips.
HTML_MAX_BYTES = 250_000
#: Inline clips are this tall (pixels) and hold at most this many frames (sampled over the clip).
HTML_HEIGHT = 144
HTML_MAX_FRAMES = 48


def inline_size(payload: bytes) -> int:
    """Bytes ``payload`` takes once base64-encoded into a data URI."""
    return len(payload) * 4 // 3


def video_tag(mp4: bytes, width: int, height: int, title: str) -> str:
    """A looping, muted ``<video>`` playing ``mp4`` from a data URI."""
    data = base64.b64encode(mp4).decode("ascii")
    return (
        f'<video width="{width}" height="{height}" controls autoplay loop muted playsinline '
        f'src="data:video/mp4;base64,{data}" title="{html.escape(title)}"></video>'
    )


def image_tag(payload: bytes, mime: str, title: str | None = None) -> str:
    """An ``<img>`` showing ``payload`` (PNG or JPEG bytes) from a data URI."""
    data = base64.b64encode(payload).decode("ascii")
    title_attr = f' title="{html.escape(title)}"' if title is not None else ""
    return f'<img src="data:{mime};base64,{data}"{title_attr}/>'


def text_block(*parts: str) -> str:
    """A ``<pre>`` block of escaped text (what a display shows when it cannot show the media)."""
    return "<pre>" + ": ".join(html.escape(p) for p in parts) + "</pre>"
