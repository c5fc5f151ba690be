"""Control-video role on Wan VACE: ``WanVACEPipeline`` regenerates the clip from the fused edge video.

The paper used Wan2.2-Fun-A14B-Control (first frame + control video). diffusers has no Fun-Control
pipeline, but VACE expresses the same conditioning with stock classes: the conditioning video's frame 0
is the edited first frame with mask 0 ("keep these pixels"), frames 1.. are the fused Canny control with
mask 1 ("generate, following these edges"), and the edited first frame also goes in as a reference
image. Wan2.2-VACE-Fun-A14B (VACE trained on Wan2.2-T2V-A14B, two experts) loads into this pipeline from a
diffusers-format export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .model_support import (
    COMMON_OPTION_KEYS,
    check_options,
    eval_mode,
    fit_size,
    float_to_uint8,
    frames_4k1,
    generator,
    place_pipeline,
    resize_image,
    resize_video,
    resolve_device,
    tiny_chat_tokenizer,
    to_pil,
    torch_dtype,
)
from .protocols import ControlInputs, Resources

REFERENCE_CHOICES = ("edited_frame0", "background", "none")


def vace_conditioning(
    edited_frame0: np.ndarray, control_video: np.ndarray, num_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """The VACE conditioning video and mask for first-frame + control generation.

    Returns ``(video (T, H, W, 3) uint8, mask (T, H, W) bool)``: frame 0 is ``edited_frame0`` with mask
    false (kept), frames ``1..T-1`` are ``control_video[1:]`` with mask true (generated). A control video
    shorter than ``num_frames`` repeats its last frame.
    """
    control = np.asarray(control_video)
    first = np.asarray(edited_frame0)
    if control.ndim != 4 or first.shape != control.shape[1:]:
        raise ValueError(f"edited frame {first.shape} and control video {control.shape} do not match")
    if control.shape[0] < num_frames:
        control = np.concatenate([control, np.repeat(control[-1:], num_frames - control.shape[0], axis=0)])
    video = control[:num_frames].copy()
    video[0] = first
    mask = np.ones(video.shape[:3], dtype=bool)
    mask[0] = False
    return video, mask


class WanVACEControlVideo:
    """Wan VACE as the control-video generator (stage 5).

    Options: the common ones (``model_id`` default ``linoyts/Wan2.2-VACE-Fun-14B-diffusers``, a
    diffusers-format export of Wan2.2-VACE-Fun-A14B; ``steps`` 40, ``guidance`` 5.0; ``resolution`` =
    pixel budget, default 1280*720) plus ``guidance_2`` (low-noise expert), ``negative_prompt``,
    ``conditioning_scale`` (VACE control strength), ``reference`` (``edited_frame0``, ``background``: the
    stage-3 background video's first frame, or ``none``), ``boundary_ratio`` and ``max_sequence_length``.
    """

    resources: ClassVar[Resources] = Resources(num_gpus=1.0, num_cpus=2.0, gpu_memory_gb=80.0)
    option_keys: ClassVar[tuple[str, ...]] = (
        *COMMON_OPTION_KEYS,
        "guidance_2",
        "negative_prompt",
        "conditioning_scale",
        "reference",
        "boundary_ratio",
        "max_sequence_length",
    )
    default_model_id: ClassVar[str] = "linoyts/Wan2.2-VACE-Fun-14B-diffusers"

    def __init__(
        self,
        pipeline: Any,
        *,
        steps: int = 40,
        guidance: float = 5.0,
        guidance_2: float | None = None,
        resolution: int = 1280 * 720,
        negative_prompt: str = "",
        conditioning_scale: float = 1.0,
        reference: str = "edited_frame0",
        boundary_ratio: float | None = None,
        max_sequence_length: int = 512,
    ) -> None:
        if reference not in REFERENCE_CHOICES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCE_CHOICES)}, got {reference!r}")
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        if boundary_ratio is not None:
            self.pipeline.register_to_config(boundary_ratio=float(boundary_ratio))
        self.steps = int(steps)
        self.guidance = float(guidance)
        self.guidance_2 = None if guidance_2 is None else float(guidance_2)
        self.resolution = int(resolution)
        self.negative_prompt = negative_prompt
        self.conditioning_scale = float(conditioning_scale)
        self.reference = reference
        self.max_sequence_length = int(max_sequence_length)
        patch = pipeline.transformer.config.patch_size[1]
        self.multiple = pipeline.vae_scale_factor_spatial * patch

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> WanVACEControlVideo:
        opts = check_options(cls.__name__, options, cls.option_keys)
        if opts.pop("tiny", False):
            opts.pop("model_id", None)
            return cls.tiny(**opts)
        return cls.from_pretrained(**opts)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | None = None,
        *,
        dtype: str = "bfloat16",
        device: str | None = "auto",
        offload: bool = True,
        seed: int | None = None,
        **settings: Any,
    ) -> WanVACEControlVideo:
        from diffusers import AutoencoderKLWan, WanVACEPipeline

        model_id = model_id or cls.default_model_id
        vae = AutoencoderKLWan.from_pretrained(model_id, subfolder="vae", dtype=torch_dtype("float32"))
        pipe = WanVACEPipeline.from_pretrained(model_id, vae=vae, dtype=torch_dtype(dtype))
        place_pipeline(pipe, resolve_device(device), bool(offload))
        return cls(pipe, **settings)

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        *,
        dtype: str = "float32",
        device: str | None = "cpu",
        offload: bool = False,
        **settings: Any,
    ) -> WanVACEControlVideo:
        """Random weights, tiny configuration, two VACE experts."""
        pipe = tiny_wan_vace_pipeline(seed)
        pipe.to(resolve_device(device))
        if dtype != "float32":
            pipe.to(dtype=torch_dtype(dtype))
        settings.setdefault("steps", 2)
        settings.setdefault("resolution", 32 * 48)
        settings.setdefault("max_sequence_length", 16)
        return cls(pipe, **settings)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        return fit_size(height, width, self.resolution, self.multiple)

    def _reference_image(self, inputs: ControlInputs) -> np.ndarray | None:
        if self.reference == "edited_frame0":
            return np.asarray(inputs.edited_frame0)
        if self.reference == "background":
            return np.asarray(inputs.background_video)[0]
        return None

    def generate(self, inputs: ControlInputs, *, seed: int = 0) -> np.ndarray:
        """The edited video, ``(T, H, W, 3) uint8`` at the control video's length and size."""
        control = np.asarray(inputs.control_video)
        num_frames, height, width = control.shape[:3]
        h, w = self.working_size(height, width)
        video, mask = vace_conditioning(inputs.edited_frame0, control, frames_4k1(num_frames))
        video = resize_video(video, h, w)
        masks = [np.where(m, 255, 0).astype(np.uint8) for m in mask]
        from PIL import Image

        reference = self._reference_image(inputs)
        out = self.pipeline(
            prompt=inputs.prompt,
            negative_prompt=self.negative_prompt,
            video=[to_pil(f) for f in video],
            mask=[Image.fromarray(m, mode="L").resize((w, h), Image.NEAREST) for m in masks],
            reference_images=None if reference is None else [to_pil(resize_image(reference, h, w))],
            conditioning_scale=self.conditioning_scale,
            height=h,
            width=w,
            num_frames=video.shape[0],
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            guidance_scale_2=self.guidance_2,
            generator=generator(seed),
            max_sequence_length=self.max_sequence_length,
            output_type="np",
        )
        frames = float_to_uint8(out.frames[0][:num_frames])
        return resize_video(frames, height, width)


def tiny_wan_vace_pipeline(seed: int = 0) -> Any:
    """A two-expert ``WanVACEPipeline`` with random weights.

    VACE's context input is the inactive and reactive latents (2 * z channels) plus the mask folded
    8x8 into channels (64), so ``vace_in_channels = 2 * 4 + 64``.
    """
    import torch
    from diffusers import WanVACEPipeline, WanVACETransformer3DModel

    from .wan_i2v import tiny_wan_text_encoder, tiny_wan_vae, wan_flow_scheduler

    torch.manual_seed(seed)
    tokenizer = tiny_chat_tokenizer()
    z_dim = 4

    def expert() -> Any:
        return WanVACETransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=z_dim,
            out_channels=z_dim,
            text_dim=16,
            freq_dim=16,
            ffn_dim=32,
            num_layers=2,
            rope_max_seq_len=32,
            vace_layers=[0],
            vace_in_channels=2 * z_dim + 64,
        )

    pipe = WanVACEPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_wan_text_encoder(tokenizer),
        vae=tiny_wan_vae(z_dim),
        scheduler=wan_flow_scheduler(),
        transformer=expert(),
        transformer_2=expert(),
        boundary_ratio=0.875,
    )
    return eval_mode(pipe)
