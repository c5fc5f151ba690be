"""The reference pipeline on procedural clips: what ``sparkle-video demo`` shows of generation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..data.synthetic import make_pair
from ..data.video import write_video
from .runner import RunResult, generate, preview_pair


@dataclass
class DemoGeneration:
    """Where the demo's generated dataset and its preview PNG are, and the run's summary."""

    sources: str
    dataset: str
    preview: str | None
    result: RunResult


def run_reference_demo(
    out: str | os.PathLike,
    *,
    num_clips: int = 4,
    num_frames: int = 33,
    height: int = 256,
    width: int = 448,
    seed: int = 0,
    progress: bool = True,
) -> DemoGeneration:
    """Write ``num_clips`` procedural fixed-camera clips to ``out/sources``, run the reference pipeline
    on them into ``out/dataset`` and preview one generated pair as ``out/preview.png``.

    Rerunning with the same arguments resumes (and finds the work done).
    """
    out = Path(out)
    sources = out / "sources"
    for n in range(num_clips):
        path = sources / f"clip_{n:03d}.mp4"
        if not path.exists():
            write_video(make_pair(seed + 7919 * n, num_frames, height, width).source, path, fps=16)
    result = generate(sources, out / "dataset", backends="reference", progress=progress)
    preview = None
    if result.published:
        preview = preview_pair(out / "dataset", result.published[0], out / "preview.png")
    return DemoGeneration(str(sources), str(out / "dataset"), preview, result)
