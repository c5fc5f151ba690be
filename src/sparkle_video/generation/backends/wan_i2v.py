"""Image-to-video role on Wan2.2-I2V-A14B: ``WanImageToVideoPipeline`` with its two experts.

Stage 3 animates the clean (foreground-free) edited first frame into a moving background video. Wan2.2's
A14B checkpoint is two transformers: ``transformer`` denoises the high-noise steps and ``transformer_2``
the rest, switching at ``boundary_ratio`` of the training timesteps (0.9 in the checkpoint's config).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .model_support import (
    COMMON_OPTION_KEYS,
    PipelineBackend,
    eval_mode,
    fit_size,
    float_to_uint8,
    frames_4k1,
    generator,
    resize_image,
    resize_video,
    tiny_chat_tokenizer,
    to_pil,
    torch_dtype,
)
from .protocols import Resources


class WanTwoExpertBackend(PipelineBackend):
    """What the Wan2.2 A14B pipelines (image-to-video and VACE) share: two experts, settings, loading.

    ``guidance_2`` is the low-noise expert's scale and ``boundary_ratio`` overrides the checkpoint's
    switch point; the VAE is loaded in float32, as the checkpoints' cards do. A subclass names its
    diffusers pipeline class (``pipeline_class``) and its checkpoint card's ``default_guidance``.
    """

    resources: ClassVar[Resources] = Resources(num_gpus=1.0, num_cpus=2.0, gpu_memory_gb=80.0)
    option_keys: ClassVar[tuple[str, ...]] = (
        *COMMON_OPTION_KEYS,
        "guidance_2",
        "negative_prompt",
        "boundary_ratio",
        "max_sequence_length",
    )
    default_offload: ClassVar[bool] = True
    tiny_settings: ClassVar[Mapping[str, Any]] = {
        "steps": 2,
        "resolution": 32 * 48,
        "max_sequence_length": 16,
    }
    pipeline_class: ClassVar[str]
    default_guidance: ClassVar[float]

    def __init__(
        self,
        pipeline: Any,
        *,
        steps: int = 40,
        guidance: float | None = None,
        guidance_2: float | None = None,
        resolution: int = 1280 * 720,
        negative_prompt: str = "",
        boundary_ratio: float | None = None,
        max_sequence_length: int = 512,
    ) -> None:
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        if boundary_ratio is not None:
            self.pipeline.register_to_config(boundary_ratio=float(boundary_ratio))
        self.steps = int(steps)
        self.guidance = float(self.default_guidance if guidance is None else guidance)
        self.guidance_2 = None if guidance_2 is None else float(guidance_2)
        self.resolution = int(resolution)
        self.negative_prompt = negative_prompt
        self.max_sequence_length = int(max_sequence_length)
        patch = pipeline.transformer.config.patch_size[1]
        self.multiple = pipeline.vae_scale_factor_spatial * patch

    @classmethod
    def load_pipeline(cls, model_id: str, dtype: Any) -> Any:
        import diffusers

        vae = diffusers.AutoencoderKLWan.from_pretrained(
            model_id, subfolder="vae", dtype=torch_dtype("float32")
        )
        return getattr(diffusers, cls.pipeline_class).from_pretrained(model_id, vae=vae, dtype=dtype)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        return fit_size(height, width, self.resolution, self.multiple)

    def sampler_kwargs(self, seed: int) -> dict[str, Any]:
        """The pipeline-call arguments both Wan roles pass alike (prompt, pictures and sizes aside)."""
        return {
            "negative_prompt": self.negative_prompt,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "guidance_scale_2": self.guidance_2,
            "generator": generator(seed),
            "max_sequence_length": self.max_sequence_length,
            "output_type": "np",
        }


class WanImageToVideo(WanTwoExpertBackend):
    """Wan2.2-I2V-A14B as the image-to-video model.

    Options: the common ones (``model_id`` default ``Wan-AI/Wan2.2-I2V-A14B-Diffusers``, ``steps`` 40,
    ``guidance`` 3.5 as the checkpoint's card, ``resolution`` = pixel budget, default 1280*720) plus
    ``guidance_2`` (the low-noise expert's scale; default = ``guidance``), ``negative_prompt``,
    ``boundary_ratio`` (overrides the checkpoint's) and ``max_sequence_length``.
    Frame counts that are not ``4k + 1`` are generated at the next ``4k + 1`` and cut.
    """

    default_model_id: ClassVar[str] = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
    pipeline_class: ClassVar[str] = "WanImageToVideoPipeline"
    default_guidance: ClassVar[float] = 3.5

    def __init__(self, pipeline: Any, **settings: Any) -> None:
        super().__init__(pipeline, **settings)
        if self.guidance_2 is None:  # one scale for both experts unless told
            self.guidance_2 = self.guidance

    @classmethod
    def tiny_pipeline(cls, seed: int) -> Any:
        """Random weights, tiny configuration, two experts (81 frames in well under a second on a CPU)."""
        return tiny_wan_i2v_pipeline(seed)

    def animate(self, image: np.ndarray, prompt: str, *, num_frames: int = 81, seed: int = 0) -> np.ndarray:
        """``(num_frames, H, W, 3) uint8`` starting from ``image``, at ``image``'s size."""
        height, width = np.asarray(image).shape[:2]
        h, w = self.working_size(height, width)
        out = self.pipeline(
            image=to_pil(resize_image(image, h, w)),
            prompt=prompt,
            height=h,
            width=w,
            num_frames=frames_4k1(num_frames),
            **self.sampler_kwargs(seed),
        )
        video = float_to_uint8(out.frames[0][:num_frames])
        return resize_video(video, height, width)


def tiny_wan_text_encoder(tokenizer: Any) -> Any:
    """A one-layer UMT5 encoder (16 channels) over the offline tokenizer's vocabulary."""
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=16,
            d_kv=4,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
        )
    )


def tiny_wan_vae(z_dim: int = 4) -> Any:
    """A Wan2.1-layout VAE (8x spatial, 4x temporal) with 4 latent channels."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=3,
        z_dim=z_dim,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )


def wan_flow_scheduler(shift: float = 5.0) -> Any:
    """The flow-matching UniPC sampler Wan's diffusers checkpoints ship (``flow_shift`` 5 at 720p)."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)


#: Latent channels of the tiny Wan VAE.
TINY_WAN_Z_DIM = 4


def tiny_wan_two_expert_pipeline(
    pipeline_class: type, transformer_class: type, seed: int, *, boundary_ratio: float, **transformer: Any
) -> Any:
    """A two-expert Wan pipeline with random weights: the tiny text encoder, VAE and sampler, and two
    ``transformer_class`` experts of one tiny configuration (``transformer`` overrides its entries)."""
    import torch

    torch.manual_seed(seed)
    tokenizer = tiny_chat_tokenizer()
    config = {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 8,
        "in_channels": TINY_WAN_Z_DIM,
        "out_channels": TINY_WAN_Z_DIM,
        "text_dim": 16,
        "freq_dim": 16,
        "ffn_dim": 32,
        "num_layers": 1,
        "rope_max_seq_len": 32,
        **transformer,
    }
    pipe = pipeline_class(
        tokenizer=tokenizer,
        text_encoder=tiny_wan_text_encoder(tokenizer),
        vae=tiny_wan_vae(TINY_WAN_Z_DIM),
        scheduler=wan_flow_scheduler(),
        transformer=transformer_class(**config),
        transformer_2=transformer_class(**config),
        boundary_ratio=boundary_ratio,
    )
    return eval_mode(pipe)


def tiny_wan_i2v_pipeline(seed: int = 0) -> Any:
    """A two-expert ``WanImageToVideoPipeline`` with random weights (no image encoder, as Wan2.2).

    An expert's input is the noisy latents, the first frame's latents and 4 mask channels (one per VAE
    time step): ``in_channels = 2 * 4 + 4``.
    """
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    return tiny_wan_two_expert_pipeline(
        WanImageToVideoPipeline,
        WanTransformer3DModel,
        seed,
        boundary_ratio=0.9,
        in_channels=2 * TINY_WAN_Z_DIM + 4,
    )
