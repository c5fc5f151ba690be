"""diffusers pipelines of sparkle-video."""

from .pipeline_sparkle_edit import SparkleEditPipeline, SparkleEditPipelineOutput
from .tiny import tiny_pipeline

__all__ = ["SparkleEditPipeline", "SparkleEditPipelineOutput", "tiny_pipeline"]
