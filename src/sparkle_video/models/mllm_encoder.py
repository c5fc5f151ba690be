"""The instruction encoder: a stock Qwen2.5-VL with learnable query tokens and a connector MLP.

The chat holds a system prompt, the source video, the instruction and ``num_queries`` placeholder
tokens (``<|object_ref_start|>``). The placeholders' input embeddings are replaced by learnable query
vectors (a forward hook on the stock embedding layer: no forked modelling code), and the last hidden
states of the final ``num_queries`` positions, passed through the connector, are the DiT's
cross-attention context. Taking the *final* positions (which include the closing ``<|im_end|>\\n``)
matches how the released model was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from .qwen_video import VIDEO_MIN_PIXELS, patchify_image, patchify_video, sample_encoder_frames

#: Per-image budget of Qwen's vision utilities when a message sets none (16384 tokens of 28x28 pixels);
#: a single-frame source is sent this way, as an image.
IMAGE_MAX_PIXELS = 16384 * 28 * 28
#: Reference-image budget of the Wan2.2-5B recipe (``max_object_token=768`` tokens of 28x28 pixels).
REF_MAX_PIXELS = 768 * 28 * 28

SYSTEM_PROMPT = (
    "You will be given an image and instruction. Please describe the content of the image in detail "
    "based on instruction in your own words."
)
PLACEHOLDER = "<|object_ref_start|>"
REF_SUFFIX = " Use the reference input from last frame."


def connector(hidden: int, dim: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(hidden, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp


def chat_text(
    system_prompt: str, instruction: str, num_queries: int, video: bool = True, ref_image: bool = False
) -> str:
    """The Qwen chat rendering of ``[system] [user: video, instruction, (ref image), placeholders]``."""
    user = (
        "<|vision_start|><|video_pad|><|vision_end|>"
        if video
        else "<|vision_start|><|image_pad|><|vision_end|>"
    )
    user += instruction + (REF_SUFFIX if ref_image else "")
    if ref_image:
        user += "<|vision_start|><|image_pad|><|vision_end|>"
    user += PLACEHOLDER * num_queries
    return f"<|im_start|>system\n{system_prompt}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"


class SparkleMLLMEncoder(ModelMixin, ConfigMixin):
    """Qwen2.5-VL + learnable queries + connector -> DiT context ``(B, num_queries, dit_dim)``."""

    _no_split_modules = ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]  # noqa: RUF012 - diffusers API

    @register_to_config
    def __init__(
        self,
        qwen_config: dict | None = None,
        dit_dim: int = 3072,
        num_image_queries: int = 256,
        num_video_queries: int = 512,
        num_ref_queries: int = 512,
        max_frames: int = 16,
        max_pixels_per_frame: int = 512 * 512,
        max_ref_pixels: int = REF_MAX_PIXELS,
        system_prompt: str = SYSTEM_PROMPT,
        min_pixels_per_frame: int = VIDEO_MIN_PIXELS,
        max_image_pixels: int = IMAGE_MAX_PIXELS,
    ):
        super().__init__()
        self.mllm = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**(qwen_config or {})))
        self._init_heads()

    def _init_heads(self) -> None:
        """Learnable queries (N(0, 0.02), as in training) and zero-output connectors."""
        cfg = self.config
        hidden = self.mllm.config.text_config.hidden_size
        self.image_queries = nn.Parameter(torch.randn(cfg.num_image_queries, hidden) * 0.02)
        self.video_queries = nn.Parameter(torch.randn(cfg.num_video_queries, hidden) * 0.02)
        self.ref_queries = nn.Parameter(torch.randn(cfg.num_ref_queries, hidden) * 0.02)
        self.connector = connector(hidden, cfg.dit_dim)
        self.ref_connector = connector(hidden, cfg.dit_dim)

    @classmethod
    def from_qwen(cls, qwen: Qwen2_5_VLForConditionalGeneration, **config: Any) -> SparkleMLLMEncoder:
        """Wrap an already-loaded Qwen2.5-VL (no second copy of its weights is ever allocated)."""
        with torch.device("meta"):
            encoder = cls(qwen_config=qwen.config.to_dict(), **config)
        encoder.mllm = qwen
        encoder._init_heads()
        return encoder.to(qwen.dtype)

    @contextmanager
    def _queries_in_place_of(self, placeholder_id: int, queries: torch.Tensor):
        """Replace the placeholder tokens' input embeddings by ``queries`` for one forward."""

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            ids = args[0]
            mask = ids == placeholder_id
            if not mask.any():
                return output
            per_row = mask.sum(-1)
            if not bool((per_row == queries.shape[0]).all()):
                raise ValueError(
                    f"expected {queries.shape[0]} query placeholders per prompt, got {per_row.tolist()}"
                )
            out = output.clone()
            out[mask] = queries.to(out.dtype).repeat(ids.shape[0], 1)
            return out

        handle = self.mllm.get_input_embeddings().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def encode(
        self,
        tokenizer: Any,
        frames: np.ndarray,
        instruction: str,
        ref_image: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Context for one instruction on one ``(T, H, W, 3) uint8`` video -> ``(1, Q, dit_dim)``.

        A single frame without a reference is sent as an *image* message with the image queries (what
        the released encoder does for image edits); anything else as a video with the video queries.
        With ``ref_image`` (``(H, W, 3) uint8``, as the user gave it), the instruction gets Kiwi-Edit's
        reference suffix, the image follows it, the reference queries are used, and the reference
        image's own hidden states, through ``ref_connector``, are put before the query context.
        """
        cfg = self.config
        vcfg = self.mllm.config.vision_config
        device = self.device
        merge = vcfg.spatial_merge_size**2
        use_ref = ref_image is not None
        as_image = len(frames) == 1 and not use_ref
        if as_image:
            pixels, grid = patchify_image(
                np.asarray(frames[0]),
                vcfg.patch_size,
                vcfg.spatial_merge_size,
                vcfg.temporal_patch_size,
                cfg.max_image_pixels,
            )
            queries = self.image_queries
            text = chat_text(cfg.system_prompt, instruction, queries.shape[0], video=False)
            text = text.replace("<|image_pad|>", "<|image_pad|>" * int(grid.prod() // merge), 1)
            kwargs: dict[str, Any] = {
                "pixel_values": pixels.to(device, self.dtype),
                "image_grid_thw": grid.to(device),
            }
        else:
            picked = frames[sample_encoder_frames(len(frames), cfg.max_frames)]
            pixels, grid = patchify_video(
                picked,
                vcfg.patch_size,
                vcfg.spatial_merge_size,
                vcfg.temporal_patch_size,
                cfg.max_pixels_per_frame,
                cfg.min_pixels_per_frame,
            )
            queries = self.ref_queries if use_ref else self.video_queries
            text = chat_text(cfg.system_prompt, instruction, queries.shape[0], video=True, ref_image=use_ref)
            text = text.replace("<|video_pad|>", "<|video_pad|>" * int(grid.prod() // merge), 1)
            kwargs = {"pixel_values_videos": pixels.to(device, self.dtype), "video_grid_thw": grid.to(device)}
        if use_ref:
            ref_pixels, ref_grid = patchify_image(
                np.asarray(ref_image),
                vcfg.patch_size,
                vcfg.spatial_merge_size,
                vcfg.temporal_patch_size,
                cfg.max_ref_pixels,
            )
            parts = text.rsplit("<|image_pad|>", 1)
            text = parts[0] + "<|image_pad|>" * int(ref_grid.prod() // merge) + parts[1]
            kwargs.update(pixel_values=ref_pixels.to(device, self.dtype), image_grid_thw=ref_grid.to(device))
        ids = tokenizer(text, return_tensors="pt")
        input_ids = ids["input_ids"].to(device)
        placeholder_id = tokenizer.convert_tokens_to_ids(PLACEHOLDER)
        with self._queries_in_place_of(placeholder_id, queries):
            out = self.mllm(
                input_ids=input_ids,
                attention_mask=ids["attention_mask"].to(device),
                output_hidden_states=True,
                return_dict=True,
                **kwargs,
            )
        hidden = out.hidden_states[-1]
        context = self.connector(hidden[:, -queries.shape[0] :].to(self.connector[0].weight.dtype))
        if use_ref:
            start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
            end = tokenizer.convert_tokens_to_ids("<|vision_end|>")
            row = input_ids[0]
            last_start = int((row == start).nonzero()[-1])
            last_end = last_start + int((row[last_start:] == end).nonzero()[0])
            ref_features = self.ref_connector(
                hidden[:, last_start + 1 : last_end].to(self.connector[0].weight.dtype)
            )
            context = torch.cat([ref_features, context], dim=1)
        return context

    def encode_batch(
        self,
        tokenizer: Any,
        frames: np.ndarray,
        instructions: Sequence[str],
        ref_image: np.ndarray | None = None,
    ) -> torch.Tensor:
        return torch.cat([self.encode(tokenizer, frames, text, ref_image) for text in instructions])
