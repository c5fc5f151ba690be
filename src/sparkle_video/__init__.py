"""sparkle-video: load, evaluate, generate and edit with Sparkle (video background replacement)."""

from __future__ import annotations

from typing import Any

from .data.masks import load_mask, pack_mask, qwen_box_to_pixels, save_mask, unpack_mask
from .data.video import (
    VideoMetadata,
    VideoReader,
    frames_to_tensor,
    model_frame_size,
    model_num_frames,
    tensor_to_frames,
    uniform_indices,
    write_video,
)
from .errors import SkipReport, SparkleDataError, SparkleHubError
from .safe_write import SparkleWriteError

__version__ = "0.1.0"

#: Heavier public names, resolved on first use (``datasets``, ``diffusers`` load only when needed).
_LAZY: dict[str, str] = {
    "load_sparkle": "data.loading",
    "load_sparkle_bench": "data.loading",
    "SparkleCollator": "data.collate",
    "SparkleArtifacts": "data.artifacts",
    "write_sparkle": "data.writer",
    "write_sparkle_bench": "data.writer",
    "pack_shards": "data.writer",
    "export_kiwi_csv": "data.export",
    "export_hub_folder": "data.export",
    "show": "data.preview",
    "SparkleEditPipeline": "pipelines",
    "SparkleEditPipelineOutput": "pipelines",
}

__all__ = [
    "SkipReport",
    "SparkleDataError",
    "SparkleHubError",
    "SparkleWriteError",
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
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:  # heavy, optional parts load on first use
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sparkle_video' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
