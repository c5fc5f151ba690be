"""Model components of the Kiwi-Sparkle editor (stock diffusers/transformers classes plus small heads)."""

from __future__ import annotations

from typing import Any

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
    "tiny_pipeline",
    "tiny_tokenizer",
]


def __getattr__(name: str) -> Any:
    # The pipeline is built on these components, so it lives in ``sparkle_video.pipelines``; the name
    # stays reachable here, resolved on first use so that importing the components never imports it.
    if name == "tiny_pipeline":
        from ..pipelines.tiny import tiny_pipeline

        return tiny_pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
