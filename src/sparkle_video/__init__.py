"""sparkle-video: load, evaluate, generate and edit with Sparkle (video background replacement)."""

from __future__ import annotations

from .errors import SkipReport, SparkleDataError, SparkleHubError
from .masks import load_mask, pack_mask, qwen_box_to_pixels, save_mask, unpack_mask
from .video import (
    VideoMetadata,
    VideoReader,
    frames_to_tensor,
    model_frame_size,
    model_num_frames,
    tensor_to_frames,
    uniform_indices,
    write_video,
)

__version__ = "0.1.0"

__all__ = [
    "SkipReport",
    "SparkleDataError",
    "SparkleHubError",
    "VideoMetadata",
    "VideoReader",
    "__version__",
    "frames_to_tensor",
    "load_mask",
    "model_frame_size",
    "model_num_frames",
    "pack_mask",
    "qwen_box_to_pixels",
    "save_mask",
    "tensor_to_frames",
    "uniform_indices",
    "unpack_mask",
    "write_video",
]


def __getattr__(name: str):  # heavy, optional parts load on first use
    if name in {"load_sparkle", "load_sparkle_bench"}:
        from . import data

        return getattr(data, name)
    if name == "show":
        from .preview import show

        return show
    if name in {"SparkleEditPipeline", "SparkleEditPipelineOutput"}:
        from . import pipelines

        return getattr(pipelines, name)
    raise AttributeError(f"module 'sparkle_video' has no attribute {name!r}")
