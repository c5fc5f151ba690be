"""Model components of the Kiwi-Sparkle editor (stock diffusers/transformers classes plus small heads)."""

from .configs import (
    full_size_components,
    make_scheduler,
    sampler_sigmas,
    tiny_components,
    tiny_pipeline,
    tiny_tokenizer,
)
from .embedders import SparkleConditionEmbedder
from .mllm_encoder import SparkleMLLMEncoder

__all__ = [
    "SparkleConditionEmbedder",
    "SparkleMLLMEncoder",
    "full_size_components",
    "make_scheduler",
    "sampler_sigmas",
    "tiny_components",
    "tiny_pipeline",
    "tiny_tokenizer",
]
