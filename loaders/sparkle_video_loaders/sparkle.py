"""Builder for the Sparkle training set (one config per theme, or all themes)."""

from __future__ import annotations

import datasets

from sparkle_video.data.layout import THEMES

from .common import SourceBuilderMixin, SourceConfig, features

_DESCRIPTION = "Sparkle: (source video, edited video, instruction) pairs for video background replacement."
_LICENSE = "cc-by-4.0"


class SparkleConfig(SourceConfig):
    """A Sparkle selection; ``name`` is a theme or ``all``."""


class Sparkle(SourceBuilderMixin, datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = SparkleConfig
    BUILDER_CONFIGS = [SparkleConfig(name=t) for t in (*THEMES, "all")]  # noqa: RUF012
    DEFAULT_CONFIG_NAME = "all"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=features(("source_video", "edited_video")),
            license=_LICENSE,
        )
