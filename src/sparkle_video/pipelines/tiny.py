"""A complete random-weight ``SparkleEditPipeline`` with tiny configs, for tests, docs and CI."""

from __future__ import annotations

from ..models.tiny import tiny_components
from .pipeline_sparkle_edit import SparkleEditPipeline


def tiny_pipeline(seed: int = 0) -> SparkleEditPipeline:
    """Tiny components (``sparkle_video.models.tiny_components``) assembled into the real pipeline class;
    runs the full code path on a CPU in seconds."""
    return SparkleEditPipeline(**tiny_components(seed))
