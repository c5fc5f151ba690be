"""The full-size architecture and the sampler equal the published ones.

A wrong number here does not fail loudly: the released weights either refuse to load or, worse, load into
a model that computes something else. The expected values below come from the published checkpoints'
configs (Wan2.2-TI2V-5B in diffusers' and in Kiwi-Edit's DiffSynth form, the Wan2.2 VAE, Qwen2.5-VL-3B)
and the parameter counts were checked against upstream's own model classes built with the same configs
(DiffSynth ``WanModel`` 4,999,787,712, ``WanVideoVAE38`` 704,688,668; Qwen2.5-VL-3B 3,754,622,976).
"""

from __future__ import annotations

import numpy as np
import torch

from sparkle_video.models import full_size_components, make_scheduler, sampler_sigmas
from sparkle_video.models.configs import SAMPLER_SHIFT, SIGMA_MIN

#: diffusers' ``WanTransformer3DModel`` config of Wan2.2-TI2V-5B (= DiffSynth's dim 3072 = 24 x 128, ...).
PUBLISHED_DIT = {
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
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}
PUBLISHED_VAE = {
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
PUBLISHED_QWEN_TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 128000,
    "tie_word_embeddings": True,
}
PUBLISHED_QWEN_VISION = {
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
}
#: Qwen2.5-VL's vision token ids in its released tokenizer.
PUBLISHED_QWEN_TOKEN_IDS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_architecture_is_the_published_one() -> None:
    # one build (a few seconds on the meta device, the default) checked whole: configs, sizes, device
    parts = full_size_components()
    assert set(parts) == {"transformer", "vae", "mllm_encoder", "source_embedder", "ref_embedder"}
    for name, module in parts.items():
        assert {p.device.type for p in module.parameters()} == {"meta"}, name

    dit = dict(parts["transformer"].config)
    assert {k: dit[k] for k in PUBLISHED_DIT} == PUBLISHED_DIT
    assert dit["num_attention_heads"] * dit["attention_head_dim"] == 3072
    assert n_params(parts["transformer"]) == 4_999_787_712

    vae = dict(parts["vae"].config)
    assert {k: vae[k] for k in PUBLISHED_VAE} == PUBLISHED_VAE
    # per-channel statistics come with the real weights; placeholders of the right length and identity
    assert vae["latents_mean"] == [0.0] * 48 and vae["latents_std"] == [1.0] * 48
    assert n_params(parts["vae"]) == 704_688_668

    encoder = parts["mllm_encoder"]
    qwen = encoder.mllm.config
    text, vision = qwen.text_config.to_dict(), qwen.vision_config.to_dict()
    assert {k: text[k] for k in PUBLISHED_QWEN_TEXT} == PUBLISHED_QWEN_TEXT
    rope = text["rope_parameters"]
    assert rope["rope_type"] == "default" and rope["rope_theta"] == 1000000.0
    assert rope["mrope_section"] == [16, 24, 24]
    assert {k: vision[k] for k in PUBLISHED_QWEN_VISION} == PUBLISHED_QWEN_VISION
    assert {k: getattr(qwen, k) for k in PUBLISHED_QWEN_TOKEN_IDS} == PUBLISHED_QWEN_TOKEN_IDS
    assert qwen.tie_word_embeddings is True
    assert n_params(encoder.mllm) == 3_754_622_976
    # connector: Linear 2048 -> 3072, GELU, Linear 3072 -> 3072 (twice: instruction and reference)
    connector = 2048 * 3072 + 3072 + 3072 * 3072 + 3072
    assert n_params(encoder.connector) == n_params(encoder.ref_connector) == connector
    assert tuple(encoder.image_queries.shape) == (256, 2048)
    assert tuple(encoder.video_queries.shape) == (512, 2048)
    assert tuple(encoder.ref_queries.shape) == (512, 2048)

    # source / reference patch embedders: Conv3d 48 -> 3072, kernel (1, 2, 2), with bias
    for name in ("source_embedder", "ref_embedder"):
        assert n_params(parts[name]) == 48 * 3072 * 4 + 3072, name
        assert tuple(parts[name].patch_embedding.weight.shape) == (3072, 48, 1, 2, 2), name


def test_scheduler_is_kiwi_edits_sampler() -> None:
    config = make_scheduler().config
    assert config.num_train_timesteps == 1000
    assert config.shift == SAMPLER_SHIFT == 5.0
    assert config.use_dynamic_shifting is False


def test_sampler_sigmas_are_the_unshifted_linspace() -> None:
    assert SIGMA_MIN == 0.003 / 1.002
    sigmas = sampler_sigmas(4)
    assert sigmas.dtype == np.float32
    expected = np.linspace(1.0, 0.003 / 1.002, 5)[:-1].astype(np.float32)
    np.testing.assert_array_equal(sigmas, expected)
    np.testing.assert_array_equal(sampler_sigmas(3, 0.0), np.array([1.0, 2 / 3, 1 / 3], np.float32))
