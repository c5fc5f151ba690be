"""Patch embedders for VAE-latent conditions (the source video, an optional reference image)."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class SparkleConditionEmbedder(ModelMixin, ConfigMixin):
    """Conv3d patchifier mapping VAE latents to DiT tokens (kernel = stride = the DiT's patch size).

    Zero-initialised, as in training, so an untrained embedder leaves the DiT unchanged. For reference
    images ``ref_pad_first`` says whether their tokens go before or after the video tokens.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 48,
        dim: int = 3072,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        zero_init: bool = True,
        ref_pad_first: bool = False,
    ):
        super().__init__()
        kernel = tuple(patch_size)
        self.patch_embedding = nn.Conv3d(in_channels, dim, kernel_size=kernel, stride=kernel)
        if zero_init:
            nn.init.zeros_(self.patch_embedding.weight)
            nn.init.zeros_(self.patch_embedding.bias)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, F, H, W)`` latents -> ``(B, dim, F, H/p, W/p)`` token grid."""
        return self.patch_embedding(latents)
