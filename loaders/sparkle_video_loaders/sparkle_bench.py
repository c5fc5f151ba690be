"""Builder for Sparkle-Bench (458 source videos; no ground-truth edits)."""

from __future__ import annotations

import datasets

from sparkle_video.data.layout import BENCH_THEMES

from .common import SourceBuilderMixin, SourceConfig, features

_DESCRIPTION = "Sparkle-Bench: source videos and instructions for evaluating video background replacement."
_LICENSE = "cc-by-4.0"


class SparkleBenchConfig(SourceConfig):
    """A Sparkle-Bench selection; ``name`` is a theme or ``all``."""


class SparkleBench(SourceBuilderMixin, datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = SparkleBenchConfig
    BUILDER_CONFIGS = [SparkleBenchConfig(name=t) for t in (*BENCH_THEMES, "all")]  # noqa: RUF012
    DEFAULT_CONFIG_NAME = "all"
    split_name = "test"
    bench = True

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=features(("source_video", "ref_image")),
            license=_LICENSE,
        )
