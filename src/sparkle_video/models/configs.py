"""Configs of the Kiwi-Sparkle architecture at full size (Wan2.2-TI2V-5B + Qwen2.5-VL-3B) and its sampler.

These numbers must equal the published checkpoints' configs, or the released weights do not load (or,
worse, load into a model that computes something else). ``full_size_components(device="meta")`` builds
the real architecture without allocating weights. The tiny random-weight configs used by tests, docs and
CI live in :mod:`sparkle_video.models.tiny`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

from .embedders import SparkleConditionEmbedder
from .mllm_encoder import SparkleMLLMEncoder

#: Flow-matching sampler of Kiwi-Edit: shift 5, sigmas from 1 down to ``SIGMA_MIN`` (section 7).
SAMPLER_SHIFT = 5.0
SIGMA_MIN = 0.003 / 1.002

WAN22_TI2V_5B_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "in_channels": 48,
    "out_channels": 48,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 14336,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
WAN22_VAE: dict[str, Any] = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
}
QWEN25_VL_3B: dict[str, Any] = {
    "text_config": {
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 128000,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "tie_word_embeddings": True,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": True,
}


def make_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """diffusers' flow-matching Euler scheduler set up as Kiwi-Edit's sampler (static shift 5)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=SAMPLER_SHIFT, use_dynamic_shifting=False
    )


def sampler_sigmas(num_inference_steps: int, sigma_min: float = SIGMA_MIN) -> np.ndarray:
    """Unshifted sigmas ``linspace(1, sigma_min, N + 1)[:-1]``; the scheduler applies the shift."""
    return np.linspace(1.0, sigma_min, num_inference_steps + 1)[:-1].astype(np.float32)


def full_size_components(device: str = "meta") -> dict[str, Any]:
    """The real architecture (Wan2.2-TI2V-5B DiT, Wan2.2 VAE, Qwen2.5-VL-3B encoder) on ``device``."""
    with torch.device(device):
        transformer = WanTransformer3DModel(**WAN22_TI2V_5B_TRANSFORMER)
        # statistics come with the real weights; placeholders of the right length here
        vae = AutoencoderKLWan(**WAN22_VAE, latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
        mllm_encoder = SparkleMLLMEncoder(qwen_config=QWEN25_VL_3B, dit_dim=3072)
        source_embedder = SparkleConditionEmbedder(in_channels=48, dim=3072)
        ref_embedder = SparkleConditionEmbedder(in_channels=48, dim=3072)
    return {
        "transformer": transformer,
        "vae": vae,
        "mllm_encoder": mllm_encoder,
        "source_embedder": source_embedder,
        "ref_embedder": ref_embedder,
    }
