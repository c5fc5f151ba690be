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

Defaults reproduce the released model's inference (Kiwi-Edit's DiffSynth pipeline, which produced
the published numbers):

* **conditional branch only** (``guidance_scale=1``): Kiwi-Edit's training never drops the instruction,
  so no unconditional branch was ever trained; its DiffSynth pipeline accepts ``cfg_scale`` but never
  runs a negative branch, and its diffusers port leaves guidance commented out. ``guidance_scale > 1``
  is available as an extension beyond upstream (two branches per step); the unconditional branch is
  the empty instruction through the encoder (``unconditional="empty-prompt"``) or the port's all-zero
  context (``unconditional="zeros"``).
* **cover and centre-crop** to the working size (``resize_mode="crop"``): 1280x720 -> 1280x704 drops 8
  rows at the top and bottom; the VAE and the encoder both see the crop. ``resize_mode="resize"``
  squashes instead.
* a single-frame source without a reference is encoded as an image (image queries).

Sampler: sigmas ``linspace(1, sigma_min, N + 1)[:-1]`` shifted by 5, timestep ``1000 * sigma``, Euler
steps ending at sigma 0. ``sigma_min`` defaults to ``0.003 / 1.002`` (Kiwi-Edit's diffusers port and
DiffSynth's scheduler default); Kiwi-Edit's DiffSynth pipeline builds its scheduler with ``0.0``;
pass ``sigma_min=0.0`` to match it (at 50 steps the last sigma is 0.105 against 0.093).

The pieces a training step needs are public and differentiable, and the sampler is built from them:
``preprocess_video`` (working-size frames), ``encode_video_latents`` (normalised VAE latents),
``encode_prompt`` (the DiT context) and ``predict_flow`` (one DiT forward with the conditioning).
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

from ..data.video import MODEL_MAX_FRAMES, MODEL_MAX_PIXELS, VideoReader, model_frame_size, model_num_frames
from ..models.configs import SIGMA_MIN, sampler_sigmas
from ..models.embedders import SparkleConditionEmbedder
from ..models.mllm_encoder import SparkleMLLMEncoder

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


RESIZE_MODES = ("crop", "resize")


def crop_box(height: int, width: int, target_height: int, target_width: int) -> tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)``: the centred region of a ``height x width`` frame with the
    target's aspect ratio, which is then resized to the target (cover-and-crop).

    The arithmetic (``int`` of the scaled side, floor-halved margins) is the released inference code's,
    so 1280x720 -> 1280x704 keeps rows 8..711 exactly.
    """
    if height / width < target_height / target_width:  # wider than the target: cut columns
        crop_w = int(height / target_height * target_width)
        return 0, (width - crop_w) // 2, height, crop_w
    crop_h = int(width / target_width * target_height)
    return (height - crop_h) // 2, 0, crop_h, width


def cover_crop_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop ``(T, H, W, 3) uint8`` frames to the target aspect, then resize (PIL bicubic) to it.

    This is how the released model's inference fits frames to the working size (no distortion; the
    overhanging rows or columns are dropped). Frames already at the target size are returned as is.
    """
    if frames.shape[1:3] == (height, width):
        return frames
    top, left, ch, cw = crop_box(frames.shape[1], frames.shape[2], height, width)
    cropped = frames[:, top : top + ch, left : left + cw]
    if (ch, cw) == (height, width):
        return np.ascontiguousarray(cropped)
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in cropped])


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Squash ``(T, H, W, 3) uint8`` frames to ``height x width`` (area averaging; ``resize_mode="resize"``)."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def fit_frames(frames: np.ndarray, height: int, width: int, resize_mode: str = "crop") -> np.ndarray:
    """Bring frames to the working size: ``"crop"`` (cover, centre-crop; upstream) or ``"resize"`` (squash)."""
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if resize_mode == "crop":
        return cover_crop_frames(frames, height, width)
    return resize_frames(frames, height, width)


def restore_frames(video: torch.Tensor, height: int, width: int, resize_mode: str = "crop") -> torch.Tensor:
    """Map ``(B, C, T, h, w)`` output frames back onto a ``height x width`` source.

    ``"resize"`` stretches back. ``"crop"`` undoes the crop geometrically: the output is resized to the
    crop region and put where the region was, so every pixel lands on the source pixel it came from; the
    rows or columns the crop dropped (8 at top and bottom for 1280x720) repeat the nearest edge.
    """
    b, c, f, h, w = video.shape
    flat = video.float().permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    resize = torch.nn.functional.interpolate
    if resize_mode == "crop":
        top, left, ch, cw = crop_box(height, width, h, w)
        flat = resize(flat, size=(ch, cw), mode="bilinear", align_corners=False)
        pad = (left, width - cw - left, top, height - ch - top)
        flat = torch.nn.functional.pad(flat, pad, mode="replicate")
    else:
        flat = resize(flat, size=(height, width), mode="bilinear", align_corners=False)
    return flat.reshape(b, f, c, height, width).permute(0, 2, 1, 3, 4)


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


def _match_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"a batch of {x.shape[0]} cannot be spread over {batch} rows")
    return x.repeat(batch // x.shape[0], *([1] * (x.ndim - 1)))


@contextmanager
def attach_conditioning(
    transformer: WanTransformer3DModel,
    source_tokens: torch.Tensor,
    ref_tokens: torch.Tensor | None,
    sigma: torch.Tensor,
    ref_pad_first: bool = False,
):
    """Attach source/reference conditioning and the text-projection bypass to a stock Wan DiT.

    Inside the context the patch embedding's output gets ``sigma * source_tokens`` added (``sigma`` a
    scalar or one value per row; with a reference, its placeholder frame is replaced by ``ref_tokens``),
    and the encoder context goes to the cross-attention as is. Everything is undone on exit.
    """

    def add_conditions(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        batch = output.shape[0]
        src = _match_batch(source_tokens.to(output.dtype), batch)
        s = sigma.to(device=output.device, dtype=output.dtype)
        s = _match_batch(s.reshape(-1, 1, 1, 1, 1), batch) if s.ndim else s
        scaled = s * src
        if ref_tokens is None:
            return output + scaled
        ref = _match_batch(ref_tokens.to(output.dtype), batch)
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
        """``latents_mean`` and ``latents_std`` of the VAE config, shaped ``(1, z, 1, 1, 1)``."""
        z = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean, device=device, dtype=dtype).view(1, z, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=device, dtype=dtype).view(1, z, 1, 1, 1)
        return mean, std

    # -- building blocks (public, differentiable; also what a training step uses) -----------
    def working_size(self, height: int, width: int, max_pixels: int = MODEL_MAX_PIXELS) -> tuple[int, int]:
        """The working size for a ``height x width`` source: shrunk to ``max_pixels``, floored to 32."""
        return model_frame_size(height, width, max_pixels, self.size_multiple)

    def preprocess_video(
        self,
        video: VideoInput,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        max_pixels: int = MODEL_MAX_PIXELS,
        max_frames: int = MODEL_MAX_FRAMES,
        resize_mode: str = "crop",
    ) -> np.ndarray:
        """Any video input -> the ``(T, height, width, 3) uint8`` frames the VAE and the encoder see.

        The first ``num_frames`` frames (default: the largest ``4k+1`` count up to ``max_frames``), fitted
        to the working size (default: ``working_size``) by ``fit_frames``. Idempotent on its own output.
        """
        frames = video_to_frames(video, max_frames)
        if height is None or width is None:
            auto_h, auto_w = self.working_size(*frames.shape[1:3], max_pixels)
            height, width = height or auto_h, width or auto_w
        if num_frames is None:
            num_frames = model_num_frames(len(frames), max_frames)
        if num_frames > len(frames):
            raise ValueError(f"num_frames={num_frames} but the video has only {len(frames)} frames")
        return fit_frames(frames[:num_frames], height, width, resize_mode)

    def encode_video_latents(self, video: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames -> normalised VAE latents ``(B, z, T', H', W')``: posterior mode, then ``(z - mean) / std``.

        ``video``: ``(T, H, W, 3)`` or ``(B, T, H, W, 3)`` uint8 frames, or a float ``(B, 3, T, H, W)``
        tensor in [-1, 1] (used as is, gradients flow). No resizing: see ``preprocess_video``.
        """
        device = self._execution_device
        if isinstance(video, torch.Tensor) and video.is_floating_point():
            if video.ndim != 5 or video.shape[1] != 3:
                raise ValueError(f"expected a (B, 3, T, H, W) tensor, got shape {tuple(video.shape)}")
            x = video.to(device=device, dtype=self.vae.dtype)
        else:
            arr = np.array(video, dtype=np.uint8)  # own copy: torch must not share the caller's buffer
            if arr.ndim == 4:
                arr = arr[None]
            if arr.ndim != 5 or arr.shape[-1] != 3:
                raise ValueError(f"expected (T, H, W, 3) or (B, T, H, W, 3) frames, got shape {arr.shape}")
            x = torch.from_numpy(arr).to(device=device, dtype=self.vae.dtype)
            x = x.permute(0, 4, 1, 2, 3) / 127.5 - 1.0
        latents = self.vae.encode(x).latent_dist.mode()
        mean, std = self._latent_stats(latents.device, latents.dtype)
        return (latents - mean) / std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> ``(B, 3, T, H, W)`` frames in about [-1, 1] (``z * std + mean``, VAE decode)."""
        mean, std = self._latent_stats(latents.device, torch.float32)
        z = latents.float() * std + mean
        return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]

    def encode_reference_latents(self, ref_image: Any, height: int, width: int) -> torch.Tensor:
        """A reference image -> latents ``(1, z, 1, h, w)``: padded white and centred to the working size."""
        return self.encode_video_latents(pad_to_size(image_to_array(ref_image), height, width)[None])

    def encode_prompt(
        self,
        prompt: str | Sequence[str],
        video: VideoInput,
        ref_image: Any = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        max_pixels: int = MODEL_MAX_PIXELS,
        max_frames: int = MODEL_MAX_FRAMES,
        resize_mode: str = "crop",
        max_sequence_frames: int | None = None,
        max_sequence_pixels: int | None = None,
    ) -> torch.Tensor:
        """The DiT context ``(B, num_queries, dit_dim)``, one row per prompt, all on the same ``video``.

        ``video`` goes through ``preprocess_video`` first (so the encoder sees the frames the VAE sees;
        frames that already are its output pass unchanged). A single frame without ``ref_image`` takes
        the image path (``num_image_queries``), otherwise the video path (``num_video_queries``); with a
        reference, its tokens come first, then ``num_ref_queries``. ``max_sequence_frames`` /
        ``max_sequence_pixels`` override the encoder's frame and per-frame pixel budgets for this call.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        frames = self.preprocess_video(video, height, width, num_frames, max_pixels, max_frames, resize_mode)
        ref = image_to_array(ref_image) if ref_image is not None else None
        encoder = self.mllm_encoder
        saved = (encoder.config.max_frames, encoder.config.max_pixels_per_frame)
        if max_sequence_frames is not None:
            encoder.register_to_config(max_frames=max_sequence_frames)
        if max_sequence_pixels is not None:
            encoder.register_to_config(max_pixels_per_frame=max_sequence_pixels)
        try:
            return encoder.encode_batch(self.tokenizer, frames, prompts, ref)
        finally:
            encoder.register_to_config(max_frames=saved[0], max_pixels_per_frame=saved[1])

    def predict_flow(
        self,
        latents: torch.Tensor,
        sigma: float | torch.Tensor,
        context: torch.Tensor,
        source_latents: torch.Tensor,
        ref_latents: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One DiT forward: the flow (velocity) prediction ``(B, z, F, h, w)``, float32.

        ``latents`` are the noisy latents ``x_sigma = (1 - sigma) x0 + sigma noise``; ``sigma`` a float or
        one value per row; ``context`` from ``encode_prompt``; ``source_latents`` (and ``ref_latents``)
        from ``encode_video_latents``, one row or one per row. The source tokens are added to the
        patchified latents scaled by ``sigma``; a reference is one extra latent frame whose prediction is
        dropped. ``timestep`` defaults to ``sigma * num_train_timesteps``. The sampler calls exactly this.
        """
        # the input layers' dtypes: ModelMixin.dtype walks every submodule, too slow to ask once per step
        dtype = self.transformer.patch_embedding.weight.dtype
        device = latents.device
        sigma_t = torch.as_tensor(sigma, device=device, dtype=torch.float32)
        if timestep is None:
            timestep = sigma_t * self.scheduler.config.num_train_timesteps
        timestep = torch.as_tensor(timestep, device=device).expand(latents.shape[0]).to(dtype)
        source_tokens = self.source_embedder(
            source_latents.to(device, self.source_embedder.patch_embedding.weight.dtype)
        )
        ref_tokens = None
        pad_first = False
        model_input = latents.to(dtype)
        if ref_latents is not None:
            if self.ref_embedder is None:
                raise ValueError("this pipeline has no ref_embedder; it cannot take reference latents")
            ref_tokens = self.ref_embedder(
                ref_latents.to(device, self.ref_embedder.patch_embedding.weight.dtype)
            )
            pad_first = bool(self.ref_embedder.config.ref_pad_first)
            placeholder = torch.zeros_like(model_input[:, :, :1])  # its tokens are replaced by ref_tokens
            model_input = torch.cat(
                [placeholder, model_input] if pad_first else [model_input, placeholder], dim=2
            )
        with attach_conditioning(self.transformer, source_tokens.to(dtype), ref_tokens, sigma_t, pad_first):
            pred = self.transformer(
                hidden_states=model_input,
                timestep=timestep,
                encoder_hidden_states=context.to(device=device, dtype=dtype),
                return_dict=False,
            )[0].float()
        if ref_tokens is not None:
            pred = pred[:, :, 1:] if pad_first else pred[:, :, :-1]
        return pred

    def check_inputs(
        self, prompt: Any, height: int, width: int, num_frames: int, available: int, prompt_embeds: Any = None
    ) -> list[str]:
        if prompt_embeds is not None:
            if prompt is not None:
                raise ValueError("pass either prompt or prompt_embeds, not both")
            if prompt_embeds.ndim != 3:
                raise ValueError(
                    f"prompt_embeds must be (B, num_queries, dim), got {tuple(prompt_embeds.shape)}"
                )
            prompts = [""] * prompt_embeds.shape[0]
        elif prompt is None:
            raise ValueError("prompt is required (a non-empty string or list of strings), or prompt_embeds")
        else:
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
        prompt: str | Sequence[str] | None = None,
        video: VideoInput = None,
        ref_image: Any = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
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
        resize_mode: str = "crop",
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
            guidance_scale: ``1`` (default, upstream): the conditional branch only, one DiT forward per
                step. ``> 1`` runs a second, unconditional branch (beyond upstream: never trained).
            prompt_embeds, negative_prompt_embeds: contexts from ``encode_prompt`` used instead of
                encoding ``prompt`` / ``negative_prompt``.
            output_type: ``"np"``, ``"pil"``, ``"pt"`` or ``"latent"``.
            callback_on_step_end: ``f(pipe, step, timestep, tensors) -> dict`` after every step.
            max_sequence_frames, max_sequence_pixels: frames / pixels per frame given to the encoder
                (defaults: the encoder's config, 16 and 512*512).
            unconditional: ``"empty-prompt"`` or ``"zeros"`` (see the module docstring).
            resize_mode: ``"crop"`` (cover and centre-crop, upstream) or ``"resize"`` (squash).
            restore_size: map the output back onto the source video's size (see ``restore_frames``).
        """
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs may only name {self._callback_tensor_inputs}, got {sorted(unknown)}"
            )
        if output_type not in ("np", "pil", "pt", "latent"):
            raise ValueError(f"output_type must be np, pil, pt or latent, got {output_type!r}")
        if unconditional not in ("empty-prompt", "zeros"):
            raise ValueError("unconditional must be 'empty-prompt' or 'zeros'")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        if ref_image is not None and self.ref_embedder is None:
            raise ValueError("this pipeline has no ref_embedder; it cannot take a ref_image")
        if video is None:
            raise ValueError("video is required")
        frames = video_to_frames(video, max_frames)
        src_h, src_w = frames.shape[1:3]
        if height is None or width is None:
            auto_h, auto_w = self.working_size(src_h, src_w, max_pixels)
            height, width = height or auto_h, width or auto_w
        if num_frames is None:
            num_frames = model_num_frames(len(frames), max_frames)
        prompts = self.check_inputs(prompt, height, width, num_frames, len(frames), prompt_embeds)
        device = self._execution_device
        frames = self.preprocess_video(
            frames, height, width, num_frames, max_frames=max_frames, resize_mode=resize_mode
        )
        encode = dict(  # the frames are already fitted: these only keep encode_prompt from refitting them
            height=height,
            width=width,
            num_frames=num_frames,
            max_frames=max_frames,
            max_sequence_frames=max_sequence_frames,
            max_sequence_pixels=max_sequence_pixels,
        )

        # 1. instruction context (and the unconditional one)
        context = (
            prompt_embeds
            if prompt_embeds is not None
            else self.encode_prompt(prompts, frames, ref_image, **encode)
        )
        do_cfg = guidance_scale > 1.0
        if do_cfg:
            if negative_prompt_embeds is not None:
                negative = negative_prompt_embeds
            elif unconditional == "zeros":
                negative = torch.zeros_like(context)
            else:
                negative = self.encode_prompt(
                    [negative_prompt or ""] * len(prompts), frames, ref_image, **encode
                )
            if negative.shape != context.shape:
                raise ValueError(
                    f"negative context {tuple(negative.shape)} != context {tuple(context.shape)}"
                )
            context = torch.cat([negative, context.to(negative.device, negative.dtype)])
        context = context.to(device=device, dtype=self.transformer.dtype)
        self.last_branches = 2 if do_cfg else 1

        # 2. source (and reference) latents
        source_latents = self.encode_video_latents(frames)
        ref_latents = None
        if ref_image is not None:
            ref_latents = self.encode_reference_latents(ref_image, height, width)

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
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                sigma = self.scheduler.sigmas[i]
                model_input = torch.cat([latents] * 2) if do_cfg else latents
                pred = self.predict_flow(model_input, sigma, context, source_latents, ref_latents, timestep=t)
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
            decoded = self.decode_latents(latents)
            if restore_size and (height, width) != (src_h, src_w):
                decoded = restore_frames(decoded, src_h, src_w, resize_mode)
            result = self.video_processor.postprocess_video(decoded.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result,)
        return SparkleEditPipelineOutput(frames=result)
