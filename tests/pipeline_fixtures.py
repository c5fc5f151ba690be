"""Fixtures shared by the pipeline test modules: one tiny random-weight pipeline and one 9-frame clip."""

from __future__ import annotations

import numpy as np
import pytest

from sparkle_video.data.synthetic import make_pair
from sparkle_video.pipelines import SparkleEditPipeline, tiny_pipeline


@pytest.fixture(name="pipe", scope="module")
def pipe_fixture() -> SparkleEditPipeline:
    p = tiny_pipeline(seed=0)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(name="clip", scope="module")
def clip_fixture() -> np.ndarray:
    return make_pair(1, num_frames=9, height=64, width=64).source


def one_by_one_patch_transformer():
    """A one-block tiny DiT with a 1x1x1 patch (the stock tiny one patches 2x2), for size rules."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 1, 1),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=8,
        out_channels=8,
        text_dim=32,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
        rope_max_seq_len=64,
    )
