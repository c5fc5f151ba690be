"""Model components of the Kiwi-Sparkle editor (stock diffusers/transformers classes plus small heads).

The pipeline built on them (and ``tiny_pipeline``) lives above, in ``sparkle_video.pipelines``.
"""

from __future__ import annotations

from .configs import full_size_components, make_scheduler, sampler_sigmas
from .embedders import SparkleConditionEmbedder
from .mllm_encoder import SparkleMLLMEncoder
from .tiny import tiny_components, tiny_tokenizer

__all__ = [
    "SparkleConditionEmbedder",
    "SparkleMLLMEncoder",
    "full_size_components",
    "make_scheduler",
    "sampler_sigmas",
    "tiny_components",
    "tiny_tokenizer",
]
