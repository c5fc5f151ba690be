"""diffusers pipelines of sparkle-video."""

from .pipeline_sparkle_edit import SparkleEditPipeline, SparkleEditPipelineOutput

__all__ = ["SparkleEditPipeline", "SparkleEditPipelineOutput"]
