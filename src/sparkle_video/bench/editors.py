"""Editors the inference runner can drive: any ``(VideoReader, prompt) -> frames`` callable.

Two baselines give sanity floors for any metric or judge: ``identity`` (returns the source: perfect
foreground, unchanged background) and ``static-background`` (freezes the first frame's background under
the moving foreground: a cheap stand-in for the static-background failure the Sparkle paper describes).
``pipeline_editor`` wraps a ``SparkleEditPipeline`` folder or Hub repo (needs the ``[model]`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..data.video import MODEL_MAX_FRAMES, MODEL_MAX_PIXELS, VideoReader, model_num_frames
from .metrics import MetricConfig, estimate_foreground, fit_mask, working_size


@runtime_checkable
class Editor(Protocol):
    """Edits one source video following an instruction; returns ``(T, H, W, 3)`` frames.

    Frames may be ``uint8`` or float in ``[0, 1]``; the runner converts them.
    """

    def __call__(self, video: VideoReader, prompt: str) -> np.ndarray: ...


def to_uint8_frames(frames: Any) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 or float-in-[0, 1] frames (numpy or torch) -> uint8 numpy."""
    if hasattr(frames, "detach"):  # a torch tensor
        frames = frames.detach().float().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim == 5 and arr.shape[0] == 1:  # a batch of one
        arr = arr[0]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"editor must return (T, H, W, 3) frames, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"editor frames must be uint8 or float in [0, 1], got {arr.dtype}")
    return (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)


class IdentityEditor:
    """Returns the source's first ``max_frames`` frames: the 'do nothing' floor."""

    name = "identity"

    def __init__(self, max_frames: int = MODEL_MAX_FRAMES):
        self.max_frames = max_frames

    def __call__(self, video: VideoReader, prompt: str) -> np.ndarray:
        return video.get_frames(range(min(video.num_frames, self.max_frames)))


def freeze_background(frames: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Composite each frame's foreground over a still plate made from frame 0's background.

    Where frame 0 is covered by its own foreground, the plate takes the clip's temporal median.
    """
    plate = frames[0].copy()
    hidden = foreground[0]
    if hidden.any():  # the median is only needed where frame 0's subject hides the background
        plate[hidden] = np.median(frames[:, hidden], axis=0).astype(np.uint8)
    return np.where(foreground[..., None], frames, plate[None]).astype(np.uint8)


class StaticBackgroundEditor:
    """Keeps the moving foreground, freezes the background: the 'static background' floor."""

    name = "static-background"

    def __init__(self, max_frames: int = MODEL_MAX_FRAMES, config: MetricConfig = MetricConfig()):
        self.max_frames = max_frames
        self.config = config

    def __call__(self, video: VideoReader, prompt: str) -> np.ndarray:
        indices = range(min(video.num_frames, self.max_frames))
        frames = video.get_frames(indices)
        t, h, w, _ = frames.shape
        small = working_size(h, w, self.config.work_height)
        if small != (h, w):  # estimate at the metrics' working size: fast, and the same notion of foreground
            mask, _ = estimate_foreground(video.get_frames(indices, size=small), self.config)
            mask = fit_mask(mask, t, (h, w))
        else:
            mask, _ = estimate_foreground(frames, self.config)
        return freeze_background(frames, mask)


class PipelineEditor:
    """A ``SparkleEditPipeline`` at the official bench settings (81 frames, 1280*720 px, seed 0).

    The official scripts pass ``cfg_scale=5`` but the released pipeline never runs an unconditional
    branch, so the upstream behaviour is ``guidance_scale=1`` (one DiT forward per step); pass a larger
    ``guidance_scale`` to try guidance beyond upstream.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        max_frames: int = MODEL_MAX_FRAMES,
        max_pixels: int = MODEL_MAX_PIXELS,
        guidance_scale: float = 1.0,
        seed: int = 0,
        **call_kwargs: Any,
    ):
        self.pipe = pipe
        self.max_frames = max_frames
        self.max_pixels = max_pixels
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.call_kwargs = call_kwargs
        self.name = type(pipe).__name__

    def __call__(self, video: VideoReader, prompt: str) -> np.ndarray:
        import torch

        out = self.pipe(
            prompt=prompt,
            video=video,
            num_frames=model_num_frames(video.num_frames, self.max_frames),
            max_pixels=self.max_pixels,
            guidance_scale=self.guidance_scale,
            generator=torch.Generator().manual_seed(self.seed),
            output_type="np",
            **self.call_kwargs,
        )
        return to_uint8_frames(out.frames[0])


def pipeline_editor(
    path_or_repo: str, *, torch_dtype: str = "bfloat16", device: str | None = None, **kwargs: Any
) -> PipelineEditor:
    """Load a ``SparkleEditPipeline`` (local folder or Hub repo) and wrap it as an editor."""
    import torch

    try:
        from ..pipelines.pipeline_sparkle_edit import SparkleEditPipeline
    except (ImportError, AttributeError) as e:  # pragma: no cover - depends on the [model] extra
        raise ImportError("running a model needs the model extra: pip install 'sparkle-video[model]'") from e
    pipe = SparkleEditPipeline.from_pretrained(path_or_repo, torch_dtype=getattr(torch, torch_dtype))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = pipe.to(device)
    return PipelineEditor(pipe, **kwargs)


#: Built-in editors by name.
BASELINES: dict[str, Callable[[], Editor]] = {
    "identity": IdentityEditor,
    "static-background": StaticBackgroundEditor,
}


def load_editor(spec: str, **kwargs: Any) -> Editor:
    """``identity`` / ``static-background``, or a ``SparkleEditPipeline`` folder / Hub repo id."""
    if spec in BASELINES:
        return BASELINES[spec]()
    return pipeline_editor(spec, **kwargs)
