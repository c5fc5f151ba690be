"""``SparkleEditPipeline``: instruction-guided video editing with the Kiwi-Edit / Kiwi-Sparkle model.

Architecture (stock classes throughout): a ``WanTransformer3DModel`` (Wan2.2-TI2V-5B), an
``AutoencoderKLWan`` (Wan2.2 VAE), a ``SparkleMLLMEncoder`` (stock Qwen2.5-VL with learnable queries and
a connector), and ``SparkleConditionEmbedder``s for the source video and an optional reference image.

Two things differ from a plain Wan text-to-video call, and both are attached around the stock
transformer only for the duration of a call:

* the encoder's context is already in the DiT's width, so the DiT's own text projection is bypassed;
* the source video's latents, patch-embedded, are added to the patchified noisy latents scaled by the
  current sigma (a forward hook on the stock ``patch_embedding``); a reference image's tokens are
  appended as one extra latent frame (so RoPE extends along time) and dropped from the output.

Classifier-free guidance: Kiwi-Edit's training never drops the instruction (its training step runs
with ``cfg_scale=1`` and has no prompt dropout), so no unconditional branch was ever trained. Its
DiffSynth pipeline accepts ``cfg_scale``/``negative_prompt=""`` but denoises with the conditional
branch only; its diffusers port plans a zero context for the negative branch and leaves guidance
commented out. Here guidance runs for ``guidance_scale > 1`` (two branches per step) with, by default,
the empty instruction through the encoder as the unconditional branch (what ``negative_prompt=""``
means in the upstream API); ``unconditional="zeros"`` uses the port's all-zero context instead, and
``guidance_scale=1`` reproduces the upstream sampler's single branch.

Sampler: sigmas ``linspace(1, sigma_min, N + 1)[:-1]`` shifted by 5, timestep ``1000 * sigma``, Euler
steps ending at sigma 0. ``sigma_min`` defaults to ``0.003 / 1.002`` (Kiwi-Edit's diffusers port and
DiffSynth's scheduler default); Kiwi-Edit's DiffSynth pipeline builds its scheduler with ``0.0``;
pass ``sigma_min=0.0`` to match it (at 50 steps the last sigma is 0.105 against 0.093).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from diffusers import (
    AutoencoderKLWan,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    WanTransformer3DModel,
)
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from PIL import Image, ImageOps
from torch import nn

from ..models.configs import SIGMA_MIN, sampler_sigmas
from ..models.embedders import SparkleConditionEmbedder
from ..models.mllm_encoder import SparkleMLLMEncoder
from ..video import MODEL_MAX_FRAMES, MODEL_MAX_PIXELS, VideoReader, model_frame_size, model_num_frames

VideoInput = Any  # VideoReader | list[PIL.Image] | np.ndarray | torch.Tensor


@dataclass
class SparkleEditPipelineOutput(BaseOutput):
    """``frames``: ``(B, T, H, W, 3)`` float in [0, 1] (``"np"``), ``B`` lists of PIL images (``"pil"``),
    ``(B, T, 3, H, W)`` tensor (``"pt"``), or latents ``(B, C, F, h, w)`` (``"latent"``)."""

    frames: Any


def video_to_frames(video: VideoInput, max_frames: int = MODEL_MAX_FRAMES) -> np.ndarray:
    """Any supported video input -> ``(T, H, W, 3) uint8`` (at most ``max_frames`` frames)."""
    if isinstance(video, VideoReader):
        n = min(video.num_frames, max_frames)
        if n < 1:
            raise ValueError("video is empty (the file has no frames)")
        arr = video.get_frames(range(n))
    elif isinstance(video, (list, tuple)):
        if not video:
            raise ValueError("video is empty")
        items = [np.asarray(f.convert("RGB")) if hasattr(f, "convert") else np.asarray(f) for f in video]
        shapes = sorted({item.shape for item in items})
        if len(shapes) > 1:
            raise ValueError(f"video frames differ in size: {shapes}")
        arr = np.stack(items)
    elif isinstance(video, torch.Tensor):
        t = video.detach().cpu()
        if t.ndim == 4 and t.shape[1] == 3 and t.shape[-1] != 3:
            t = t.permute(0, 2, 3, 1)
        arr = t.numpy()
    else:
        arr = np.asarray(video)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"video must be (T, H, W, 3) frames, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"video is empty (shape {tuple(arr.shape)})")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255).round().astype(np.uint8)
    return arr[:max_frames]


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def image_to_array(image: Any) -> np.ndarray:
    """A PIL image, ``(H, W, 3)`` array (uint8 or float in [0, 1]) or ``(3, H, W)``/``(H, W, 3)`` tensor -> uint8."""
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"))
    return video_to_frames([image] if not isinstance(image, torch.Tensor) else image[None])[0]


def pad_to_size(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fit ``image`` inside ``height x width`` keeping its aspect ratio, centred on white.

    This is how Kiwi-Edit prepares a reference image for the VAE at inference (no stretching).
    """
    padded = ImageOps.pad(Image.fromarray(image), (width, height), color="white", centering=(0.5, 0.5))
    return np.asarray(padded)


@contextmanager
def attach_conditioning(
    transformer: WanTransformer3DModel,
    source_tokens: torch.Tensor,
    ref_tokens: torch.Tensor | None,
    state: dict,
    ref_pad_first: bool = False,
):
    """Attach source/reference conditioning and the text-projection bypass to a stock Wan DiT.

    Inside the context the patch embedding's output gets ``state["sigma"] * source_tokens`` added (and,
    with a reference, its placeholder frame replaced by ``ref_tokens``), and the encoder context goes to
    the cross-attention as is. Everything is undone on exit.
    """

    def add_conditions(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        src = source_tokens.to(output.dtype)
        if src.shape[0] != output.shape[0]:
            src = src.repeat(output.shape[0] // src.shape[0], 1, 1, 1, 1)
        scaled = state["sigma"] * src
        if ref_tokens is None:
            return output + scaled
        ref = ref_tokens.to(output.dtype).expand(output.shape[0], -1, -1, -1, -1)
        if ref_pad_first:
            return torch.cat([ref, output[:, :, 1:] + scaled], dim=2)
        return torch.cat([output[:, :, :-1] + scaled, ref], dim=2)

    embedder = transformer.condition_embedder
    text_projection = embedder.text_embedder
    handle = transformer.patch_embedding.register_forward_hook(add_conditions)
    embedder.text_embedder = nn.Identity()
    try:
        yield
    finally:
        handle.remove()
        embedder.text_embedder = text_projection


class SparkleEditPipeline(DiffusionPipeline):
    r"""Edit a video from an instruction (Kiwi-Edit architecture; Kiwi-Sparkle weights).

    Args:
        transformer: the Wan2.2 DiT.
        vae: the Wan2.2 VAE.
        scheduler: a flow-matching Euler scheduler (shift 5, see ``sparkle_video.models.make_scheduler``).
        mllm_encoder: instruction encoder producing the DiT context.
        tokenizer: the Qwen2.5-VL tokenizer (the video half of Qwen's processor is done in
            ``sparkle_video.models.qwen_video``, which needs no torchvision).
        source_embedder: patch embedder for the source video latents.
        ref_embedder: optional patch embedder for a reference image's latents.
    """

    model_cpu_offload_seq = "mllm_encoder->source_embedder->ref_embedder->transformer->vae"
    _optional_components = ["ref_embedder"]  # noqa: RUF012 - diffusers API
    _callback_tensor_inputs = ["latents"]  # noqa: RUF012 - diffusers API

    def __init__(
        self,
        transformer: WanTransformer3DModel,
        vae: AutoencoderKLWan,
        scheduler: FlowMatchEulerDiscreteScheduler,
        mllm_encoder: SparkleMLLMEncoder,
        tokenizer: Any,
        source_embedder: SparkleConditionEmbedder,
        ref_embedder: SparkleConditionEmbedder | None = None,
    ):
        super().__init__()
        self.register_modules(
            transformer=transformer,
            vae=vae,
            scheduler=scheduler,
            mllm_encoder=mllm_encoder,
            tokenizer=tokenizer,
            source_embedder=source_embedder,
            ref_embedder=ref_embedder,
        )
        self.vae_scale_factor_temporal = vae.config.scale_factor_temporal if vae is not None else 4
        self.vae_scale_factor_spatial = vae.config.scale_factor_spatial if vae is not None else 16
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)
        self.last_branches = 0  # how many guidance branches the last call ran (1 or 2)

    # -- helpers -----------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        patch = self.transformer.config.patch_size[-1] if self.transformer is not None else 2
        return self.vae_scale_factor_spatial * patch

    def enable_vae_tiling(self, **tile_sizes: Any) -> None:
        """Encode and decode in overlapping spatial tiles (long 720p clips on small GPUs).

        ``tile_sizes`` go to ``AutoencoderKLWan.enable_tiling`` (``tile_sample_min_height``, ...).
        """
        self.vae.enable_tiling(**tile_sizes)

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    def _latent_stats(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean, device=device, dtype=dtype).view(1, z, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std, device=device, dtype=dtype).view(1, z, 1, 1, 1)
        return mean, inv_std

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, device: torch.device) -> torch.Tensor:
        """``(T, H, W, 3) uint8`` -> normalised VAE latents ``(1, z, F, h, w)``."""
        x = torch.from_numpy(np.array(frames, dtype=np.uint8)).to(device=device, dtype=self.vae.dtype)  # own copy
        x = x.permute(3, 0, 1, 2).unsqueeze(0) / 127.5 - 1.0
        latents = self.vae.encode(x).latent_dist.mode()
        mean, inv_std = self._latent_stats(device, latents.dtype)
        return (latents - mean) * inv_std

    def _conditioning(self, source_tokens: torch.Tensor, ref_tokens: torch.Tensor | None, state: dict):
        pad_first = bool(self.ref_embedder.config.ref_pad_first) if ref_tokens is not None else False
        return attach_conditioning(self.transformer, source_tokens, ref_tokens, state, pad_first)

    def check_inputs(self, prompt: Any, height: int, width: int, num_frames: int, available: int) -> list[str]:
        if prompt is None:
            raise ValueError("prompt is required (a non-empty string or list of strings)")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError("prompt must be a non-empty string or a list of non-empty strings")
        m = self.size_multiple
        if height % m or width % m or height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive multiples of {m}, got {height}x{width}")
        if num_frames < 1 or (num_frames - 1) % self.vae_scale_factor_temporal:
            raise ValueError(f"num_frames must be 4k+1, got {num_frames}")
        if num_frames > available:
            raise ValueError(f"num_frames={num_frames} but the video has only {available} frames")
        return prompts

    # -- the call ----------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        video: VideoInput,
        ref_image: Any = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        max_pixels: int = MODEL_MAX_PIXELS,
        max_frames: int = MODEL_MAX_FRAMES,
        max_sequence_frames: int | None = None,
        max_sequence_pixels: int | None = None,
        unconditional: str = "empty-prompt",
        sigma_min: float = SIGMA_MIN,
        restore_size: bool = False,
    ) -> SparkleEditPipelineOutput | tuple:
        """Edit ``video`` following ``prompt``.

        Args:
            prompt: instruction, or a list (one edit of the same video per instruction).
            video: ``VideoReader``, list of PIL images, ``(T, H, W, 3)`` array (uint8 or float in [0, 1])
                or tensor (``(T, H, W, 3)`` or ``(T, 3, H, W)``).
            ref_image: optional reference image (PIL or ``(H, W, 3)`` array); needs ``ref_embedder``. The
                encoder sees it as given; the VAE sees it padded (white, centred) to the working size.
            negative_prompt: instruction of the unconditional branch (default: empty).
            height, width: working size, multiples of 32; default: the source shrunk to ``max_pixels``
                and floored to multiples of 32 (1280x720 -> 1280x704).
            num_frames: ``4k+1`` frames; default: the largest such count up to ``max_frames``.
            num_inference_steps: Euler steps.
            guidance_scale: classifier-free guidance; ``> 1`` runs a second, unconditional branch.
            output_type: ``"np"``, ``"pil"``, ``"pt"`` or ``"latent"``.
            callback_on_step_end: ``f(pipe, step, timestep, tensors) -> dict`` after every step.
            max_sequence_frames, max_sequence_pixels: frames / pixels per frame given to the encoder
                (defaults: the encoder's config, 16 and 512*512).
            unconditional: ``"empty-prompt"`` or ``"zeros"`` (see the module docstring).
            restore_size: resize the output back to the source video's size.
        """
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs may only name {self._callback_tensor_inputs}, got {sorted(unknown)}")
        if output_type not in ("np", "pil", "pt", "latent"):
            raise ValueError(f"output_type must be np, pil, pt or latent, got {output_type!r}")
        if unconditional not in ("empty-prompt", "zeros"):
            raise ValueError("unconditional must be 'empty-prompt' or 'zeros'")
        if ref_image is not None and self.ref_embedder is None:
            raise ValueError("this pipeline has no ref_embedder; it cannot take a ref_image")
        frames = video_to_frames(video, max_frames)
        src_h, src_w = frames.shape[1:3]
        if height is None or width is None:
            auto_h, auto_w = model_frame_size(src_h, src_w, max_pixels, self.size_multiple)
            height, width = height or auto_h, width or auto_w
        if num_frames is None:
            num_frames = model_num_frames(len(frames), max_frames)
        prompts = self.check_inputs(prompt, height, width, num_frames, len(frames))
        device = self._execution_device
        frames = resize_frames(frames[:num_frames], height, width)
        ref = ref_for_vae = None
        if ref_image is not None:
            ref = image_to_array(ref_image)
            ref_for_vae = pad_to_size(ref, height, width)

        # 1. instruction context (and the unconditional one)
        encoder = self.mllm_encoder
        saved = (encoder.config.max_frames, encoder.config.max_pixels_per_frame)
        if max_sequence_frames is not None:
            encoder.register_to_config(max_frames=max_sequence_frames)
        if max_sequence_pixels is not None:
            encoder.register_to_config(max_pixels_per_frame=max_sequence_pixels)
        try:
            context = encoder.encode_batch(self.tokenizer, frames, prompts, ref)
            do_cfg = guidance_scale > 1.0
            if do_cfg:
                if unconditional == "zeros":
                    negative = torch.zeros_like(context)
                else:
                    negative = encoder.encode_batch(self.tokenizer, frames, [negative_prompt or ""] * len(prompts), ref)
                context = torch.cat([negative, context])
        finally:
            encoder.register_to_config(max_frames=saved[0], max_pixels_per_frame=saved[1])
        dtype = self.transformer.dtype
        context = context.to(device=device, dtype=dtype)
        self.last_branches = 2 if do_cfg else 1

        # 2. source (and reference) conditioning tokens
        source_latents = self.encode_video(frames, device)
        source_tokens = self.source_embedder(source_latents.to(self.source_embedder.dtype)).to(dtype)
        ref_tokens = None
        if ref_for_vae is not None:
            ref_latents = self.encode_video(ref_for_vae[None], device)
            ref_tokens = self.ref_embedder(ref_latents.to(self.ref_embedder.dtype)).to(dtype)

        # 3. noise
        batch = len(prompts)
        shape = (batch, self.vae.config.z_dim, *source_latents.shape[2:])
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=torch.float32)

        # 4. denoise
        self.scheduler.set_timesteps(sigmas=sampler_sigmas(num_inference_steps, sigma_min), device=device)
        timesteps = self.scheduler.timesteps
        state: dict[str, Any] = {"sigma": 1.0}
        with self._conditioning(source_tokens, ref_tokens, state), self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                state["sigma"] = float(self.scheduler.sigmas[i])
                model_input = latents.to(dtype)
                if ref_tokens is not None:  # a placeholder frame whose tokens the hook replaces
                    pad = torch.zeros_like(model_input[:, :, :1])
                    first = bool(self.ref_embedder.config.ref_pad_first)
                    model_input = torch.cat([pad, model_input] if first else [model_input, pad], dim=2)
                if do_cfg:
                    model_input = torch.cat([model_input] * 2)
                timestep = t.expand(model_input.shape[0]).to(dtype)
                pred = self.transformer(
                    hidden_states=model_input, timestep=timestep, encoder_hidden_states=context, return_dict=False
                )[0].float()
                if ref_tokens is not None:
                    pred = pred[:, :, 1:] if self.ref_embedder.config.ref_pad_first else pred[:, :, :-1]
                if do_cfg:
                    uncond, cond = pred.chunk(2)
                    pred = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(pred, t, latents, return_dict=False)[0]
                if not torch.isfinite(latents).all():
                    raise FloatingPointError(
                        f"non-finite latents at step {i} (t={float(t):.1f}); try float32 or bfloat16 instead of float16"
                    )
                if callback_on_step_end is not None:
                    available = {"latents": latents}
                    tensors = {k: available[k] for k in callback_on_step_end_tensor_inputs}
                    out = callback_on_step_end(self, i, t, tensors) or {}
                    latents = out.pop("latents", latents)
                bar.update()

        # 5. decode
        if output_type == "latent":
            result: Any = latents
        else:
            mean, inv_std = self._latent_stats(device, torch.float32)
            decoded = self.vae.decode((latents / inv_std + mean).to(self.vae.dtype), return_dict=False)[0]
            if restore_size and (height, width) != (src_h, src_w):
                b, c, f = decoded.shape[:3]
                flat = decoded.float().permute(0, 2, 1, 3, 4).reshape(b * f, c, height, width)
                flat = torch.nn.functional.interpolate(flat, size=(src_h, src_w), mode="bilinear", align_corners=False)
                decoded = flat.reshape(b, f, c, src_h, src_w).permute(0, 2, 1, 3, 4)
            result = self.video_processor.postprocess_video(decoded.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result,)
        return SparkleEditPipelineOutput(frames=result)
