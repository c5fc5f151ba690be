"""Control-video role on Wan VACE: ``WanVACEPipeline`` regenerates the clip from the fused edge video.

The paper used Wan2.2-Fun-A14B-Control (first frame + control video). diffusers has no Fun-Control
pipeline, but VACE expresses the same conditioning with stock classes: the conditioning video's frame 0
is the edited first frame with mask 0 ("keep these pixels"), frames 1.. are the fused Canny control with
mask 1 ("generate, following these edges"), and the edited first frame also goes in as a reference
image. Wan2.2-VACE-Fun-A14B (VACE trained on Wan2.2-T2V-A14B, two experts) loads into this pipeline from a
diffusers-format export.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .model_support import (
    float_to_uint8,
    frames_4k1,
    resize_image,
    resize_video,
    to_pil,
)
from .protocols import ControlInputs
from .wan_i2v import TINY_WAN_Z_DIM, WanTwoExpertBackend, tiny_wan_two_expert_pipeline

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


class WanVACEControlVideo(WanTwoExpertBackend):
    """Wan VACE as the control-video generator (stage 5).

    Options: the common ones (``model_id`` default ``linoyts/Wan2.2-VACE-Fun-14B-diffusers``, a
    diffusers-format export of Wan2.2-VACE-Fun-A14B; ``steps`` 40, ``guidance`` 5.0; ``resolution`` =
    pixel budget, default 1280*720) plus ``guidance_2`` (low-noise expert), ``negative_prompt``,
    ``conditioning_scale`` (VACE control strength), ``reference`` (``edited_frame0``, ``background``: the
    stage-3 background video's first frame, or ``none``), ``boundary_ratio`` and ``max_sequence_length``.
    """

    option_keys: ClassVar[tuple[str, ...]] = (
        *WanTwoExpertBackend.option_keys,
        "conditioning_scale",
        "reference",
    )
    default_model_id: ClassVar[str] = "linoyts/Wan2.2-VACE-Fun-14B-diffusers"
    pipeline_class: ClassVar[str] = "WanVACEPipeline"
    default_guidance: ClassVar[float] = 5.0

    def __init__(
        self,
        pipeline: Any,
        *,
        conditioning_scale: float = 1.0,
        reference: str = "edited_frame0",
        **settings: Any,
    ) -> None:
        if reference not in REFERENCE_CHOICES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCE_CHOICES)}, got {reference!r}")
        super().__init__(pipeline, **settings)
        self.conditioning_scale = float(conditioning_scale)
        self.reference = reference

    @classmethod
    def tiny_pipeline(cls, seed: int) -> Any:
        """Random weights, tiny configuration, two VACE experts."""
        return tiny_wan_vace_pipeline(seed)

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
            video=[to_pil(f) for f in video],
            mask=[Image.fromarray(m, mode="L").resize((w, h), Image.NEAREST) for m in masks],
            reference_images=None if reference is None else [to_pil(resize_image(reference, h, w))],
            conditioning_scale=self.conditioning_scale,
            height=h,
            width=w,
            num_frames=video.shape[0],
            **self.sampler_kwargs(seed),
        )
        frames = float_to_uint8(out.frames[0][:num_frames])
        return resize_video(frames, height, width)


def tiny_wan_vace_pipeline(seed: int = 0) -> Any:
    """A two-expert ``WanVACEPipeline`` with random weights.

    VACE's context input is the inactive and reactive latents (2 * z channels) plus the mask folded
    8x8 into channels (64), so ``vace_in_channels = 2 * 4 + 64``.
    """
    from diffusers import WanVACEPipeline, WanVACETransformer3DModel

    return tiny_wan_two_expert_pipeline(
        WanVACEPipeline,
        WanVACETransformer3DModel,
        seed,
        boundary_ratio=0.875,
        num_layers=2,
        vace_layers=[0],
        vace_in_channels=2 * TINY_WAN_Z_DIM + 64,
    )
