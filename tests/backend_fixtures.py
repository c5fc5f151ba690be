"""Helpers for the model-backend tests: seeded random pictures and clips, a pipeline-call recorder.

Random weights make arbitrary pictures whatever goes in, so noise is as good an input as any; a seed
makes every call reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def random_image(seed: int, height: int = 40, width: int = 72) -> np.ndarray:
    """A seeded ``(height, width, 3) uint8`` noise picture."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def random_video(seed: int, frames: int = 10, height: int = 36, width: int = 60) -> np.ndarray:
    """A seeded ``(frames, height, width, 3) uint8`` noise clip."""
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def record_pipeline_calls(monkeypatch: pytest.MonkeyPatch, pipeline: Any) -> dict[str, Any]:
    """The keyword arguments of ``pipeline``'s last call, filled in as it runs (the call still runs)."""
    seen: dict[str, Any] = {}
    original = pipeline.__class__.__call__

    def spy(pipe: Any, *args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return original(pipe, *args, **kwargs)

    monkeypatch.setattr(pipeline.__class__, "__call__", spy)
    return seen
