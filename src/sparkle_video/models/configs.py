"""Configs of the Kiwi-Sparkle architecture: full size (Wan2.2-TI2V-5B + Qwen2.5-VL-3B) and tiny.

``tiny_components`` builds random-weight components with the same classes and code path in seconds on
a CPU, including an offline tokenizer with Qwen's special tokens (``sparkle_video.pipelines.tiny_pipeline``
assembles them into a pipeline). ``full_size_components(device="meta")`` builds the real architecture
without allocating weights.
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

#: Qwen2.5-VL special tokens the encoder's chat uses (same strings as the real tokenizer).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def make_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """diffusers' flow-matching Euler scheduler set up as Kiwi-Edit's sampler (static shift 5)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=SAMPLER_SHIFT, use_dynamic_shifting=False
    )


def sampler_sigmas(num_inference_steps: int, sigma_min: float = SIGMA_MIN) -> np.ndarray:
    """Unshifted sigmas ``linspace(1, sigma_min, N + 1)[:-1]``; the scheduler applies the shift."""
    return np.linspace(1.0, sigma_min, num_inference_steps + 1)[:-1].astype(np.float32)


#: The vision tower of every tiny random-weight Qwen2.5-VL (one block, 16 wide); Qwen's real patch layout.
TINY_QWEN25_VL_VISION: dict[str, Any] = {
    "depth": 1,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_heads": 2,
    "out_hidden_size": 32,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 56,
    "fullatt_block_indexes": [0],
}


def tiny_tokenizer() -> Any:
    """A character-level fast tokenizer with Qwen's special tokens, built entirely offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {tok: i for i, tok in enumerate([*QWEN_SPECIAL_TOKENS, *chars, "[UNK]"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.add_special_tokens(list(QWEN_SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
    )


def tiny_components(seed: int = 0) -> dict[str, Any]:
    """Random-weight components with tiny configs (same classes, same code path)."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    dim, z_dim = 16, 8
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=z_dim,
        out_channels=z_dim,
        text_dim=32,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=64,
    )
    vae = AutoencoderKLWan(
        base_dim=8,
        decoder_base_dim=8,
        z_dim=z_dim,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        # not 0 / 1, so that the latent normalisation is exercised wherever the tiny model runs
        latents_mean=[round(-0.35 + 0.1 * i, 2) for i in range(z_dim)],
        latents_std=[round(0.6 + 0.3 * i, 2) for i in range(z_dim)],
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    qwen = {
        "text_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        "vision_config": dict(TINY_QWEN25_VL_VISION),
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    mllm_encoder = SparkleMLLMEncoder(
        qwen_config=qwen,
        dit_dim=dim,
        num_image_queries=4,
        num_video_queries=8,
        num_ref_queries=8,
        max_frames=4,
        max_pixels_per_frame=56 * 56,
        max_ref_pixels=56 * 56,
        min_pixels_per_frame=56 * 56,
    )
    # random (not zero) embedders so that conditioning visibly matters in tests
    source_embedder = SparkleConditionEmbedder(in_channels=z_dim, dim=dim, zero_init=False)
    ref_embedder = SparkleConditionEmbedder(in_channels=z_dim, dim=dim, zero_init=False)
    with torch.no_grad():
        for module in (mllm_encoder.connector[2], mllm_encoder.ref_connector[2]):
            module.weight.normal_(0, 0.02)
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": make_scheduler(),
        "mllm_encoder": mllm_encoder,
        "tokenizer": tokenizer,
        "source_embedder": source_embedder,
        "ref_embedder": ref_embedder,
    }


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
