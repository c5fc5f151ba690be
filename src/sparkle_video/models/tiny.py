"""Tiny random-weight Kiwi-Sparkle components: the same classes and code path as full size, in seconds.

``tiny_components`` builds every component with tiny configs, including an offline character-level
tokenizer with Qwen's special tokens (``sparkle_video.pipelines.tiny_pipeline`` assembles them into a
pipeline). These are fixtures for tests, docs, the demo and CI; the numbers are chosen to be small, not
to match anything published (see :mod:`sparkle_video.models.configs` for those).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from .configs import make_scheduler
from .embedders import SparkleConditionEmbedder
from .mllm_encoder import SparkleMLLMEncoder

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
