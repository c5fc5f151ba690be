"""Fixtures shared by the pipeline test modules: one tiny random-weight pipeline and one 9-frame clip."""

from __future__ import annotations

import numpy as np
import pytest

from sparkle_video.pipelines import SparkleEditPipeline, tiny_pipeline
from sparkle_video.synthetic import make_pair


@pytest.fixture(name="pipe", scope="module")
def pipe_fixture() -> SparkleEditPipeline:
    p = tiny_pipeline(seed=0)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(name="clip", scope="module")
def clip_fixture() -> np.ndarray:
    return make_pair(1, num_frames=9, height=64, width=64).source
