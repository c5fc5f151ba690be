"""Editors the inference runner can drive: any ``(VideoReader, prompt) -> frames`` callable.

Two baselines give sanity floors for any metric or judge: ``identity`` (returns the source: perfect
foreground, unchanged background) and ``static-background`` (freezes the first frame's background under
the moving foreground: a cheap stand-in for the static-background failure the Sparkle paper describes).
``model_editor`` loads a pipeline folder or Hub repo by its ``model_index.json``: ``SparkleEditPipeline``,
diffusers' ``LucyEditPipeline`` or any diffusers pipeline taking ``video`` + ``prompt`` (needs the
``[model]`` extra); ``import_editor`` takes any callable by ``module:function``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..data.video import (
    MODEL_MAX_FRAMES,
    MODEL_MAX_PIXELS,
    VideoReader,
    model_frame_size,
    model_num_frames,
)
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


def read_model_index(path_or_repo: str) -> dict[str, Any]:
    """The ``model_index.json`` of a pipeline folder or Hub repo (what ``bench infer`` dispatches on)."""
    import json
    from pathlib import Path

    local = Path(path_or_repo)
    if local.is_dir():
        index = local / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{local} is not a diffusers pipeline folder (no model_index.json)")
    else:
        from huggingface_hub import hf_hub_download

        index = Path(hf_hub_download(path_or_repo, "model_index.json"))
    try:
        config = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{index}: unreadable model_index.json ({e})") from e
    if not isinstance(config, dict) or not isinstance(config.get("_class_name"), str):
        raise ValueError(f"{index}: model_index.json names no pipeline class (_class_name)")
    return config


def _torch_dtype(dtype: str) -> Any:
    import torch

    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown torch dtype {dtype!r} (e.g. bfloat16, float16, float32)")
    return value


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def pipeline_editor(
    path_or_repo: str,
    *,
    dtype: str = "bfloat16",
    device: str | None = None,
    torch_dtype: str | None = None,
    **kwargs: Any,
) -> PipelineEditor:
    """Load a ``SparkleEditPipeline`` (local folder or Hub repo) and wrap it as an editor.

    ``dtype`` names the torch dtype (``torch_dtype``, diffusers' older spelling, is accepted too).
    """
    try:
        from ..pipelines.pipeline_sparkle_edit import SparkleEditPipeline
    except (ImportError, AttributeError) as e:  # pragma: no cover - depends on the [model] extra
        raise ImportError("running a model needs the model extra: pip install 'sparkle-video[model]'") from e
    pipe = SparkleEditPipeline.from_pretrained(path_or_repo, dtype=_torch_dtype(torch_dtype or dtype))
    _quiet_steps(pipe)
    return PipelineEditor(pipe.to(_device(device)), **kwargs)


def _quiet_steps(pipe: Any) -> None:
    """The runner's one bar per video is enough: a loaded pipeline's per-step bar shows only with ``-v``."""
    from ..data.loading import progress_default

    pipe.set_progress_bar_config(disable=not progress_default())


def orientation_size(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """``size`` (landscape ``(h, w)``) turned to the source's orientation: portrait sources get ``(w, h)``."""
    small, large = sorted(size)
    return (large, small) if height > width else (small, large)


#: ``LucyEditPipeline``'s own working size and settings (its ``__call__`` defaults and model card). The
#: Sparkle paper does not say how its Lucy-Edit-1.1 row was produced, so the baseline runs as Lucy ships.
LUCY_SIZE = (480, 832)
LUCY_STEPS = 50
LUCY_GUIDANCE = 5.0


class DiffusersVideoEditor:
    """Any diffusers pipeline whose ``__call__`` takes ``video`` (PIL frames) and ``prompt``.

    The source's frames go to the pipeline as PIL images at full size; the pipeline does its own
    preprocessing to ``height x width``. Only the arguments its ``__call__`` declares are passed, so
    pipelines without e.g. ``guidance_scale`` still run. Used for ``LucyEditPipeline`` (with Lucy's own
    defaults, :data:`LUCY_SIZE`, :data:`LUCY_STEPS`, :data:`LUCY_GUIDANCE`) and as the generic path.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        size: tuple[int, int] | None = None,
        max_pixels: int | None = None,
        size_multiple: int = 32,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        max_frames: int = MODEL_MAX_FRAMES,
        keep_orientation: bool = True,
        **call_kwargs: Any,
    ):
        import inspect

        self.pipe = pipe
        self.size = size
        self.max_pixels = max_pixels
        self.size_multiple = size_multiple
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.max_frames = max_frames
        self.keep_orientation = keep_orientation
        self.call_kwargs = call_kwargs
        self.name = type(pipe).__name__
        params = inspect.signature(pipe.__call__).parameters
        if "video" not in params or "prompt" not in params:
            raise TypeError(f"{self.name}.__call__ takes no video + prompt: not a video-to-video editor")
        self.accepts = set(params)

    def working_size(self, height: int, width: int) -> tuple[int, int] | None:
        """``(h, w)`` for the pipeline: the given size (turned to the source's orientation), or the source
        shrunk to ``max_pixels``, or ``None`` (the pipeline's own default)."""
        if self.size is not None:
            return orientation_size(height, width, self.size) if self.keep_orientation else self.size
        if self.max_pixels is not None:
            return model_frame_size(height, width, self.max_pixels, self.size_multiple)
        return None

    def __call__(self, video: VideoReader, prompt: str) -> np.ndarray:
        import torch
        from PIL import Image

        num_frames = model_num_frames(video.num_frames, self.max_frames)
        frames = [Image.fromarray(f) for f in video.get_frames(range(num_frames))]
        wanted: dict[str, Any] = {
            "video": frames,
            "prompt": prompt,
            "num_frames": num_frames,
            "generator": torch.Generator().manual_seed(self.seed),
            "output_type": "np",
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
        }
        size = self.working_size(video.height, video.width)
        if size is not None:
            wanted["height"], wanted["width"] = size
        wanted.update(self.call_kwargs)
        kwargs = {k: v for k, v in wanted.items() if v is not None and k in self.accepts}
        out = self.pipe(**kwargs)
        frames_out = getattr(out, "frames", None)
        if frames_out is None:
            frames_out = out[0] if isinstance(out, tuple) else out
        return to_uint8_frames(frames_out[0] if isinstance(frames_out, list) else frames_out)


def diffusers_editor(
    path_or_repo: str,
    *,
    dtype: str = "bfloat16",
    device: str | None = None,
    torch_dtype: str | None = None,
    config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> DiffusersVideoEditor:
    """Load a stock diffusers video pipeline (``LucyEditPipeline`` or any ``video`` + ``prompt`` pipeline)."""
    import diffusers

    config = config or read_model_index(path_or_repo)
    name = config["_class_name"]
    pipeline_class = getattr(diffusers, name, None)
    if pipeline_class is None:
        raise ValueError(
            f"{path_or_repo}: pipeline class {name!r} is not in diffusers {diffusers.__version__}; "
            "wrap it as an editor and pass --editor module:function"
        )
    if name == "LucyEditPipeline":
        kwargs.setdefault("size", LUCY_SIZE)
        kwargs.setdefault("num_inference_steps", LUCY_STEPS)
        kwargs.setdefault("guidance_scale", LUCY_GUIDANCE)
    pipe = pipeline_class.from_pretrained(path_or_repo, dtype=_torch_dtype(torch_dtype or dtype))
    _quiet_steps(pipe)
    return DiffusersVideoEditor(pipe.to(_device(device)), **kwargs)


def model_editor(path_or_repo: str, **kwargs: Any) -> Editor:
    """Load the pipeline at ``path_or_repo`` as an editor, dispatching on its ``model_index.json``.

    ``SparkleEditPipeline`` folders get the official bench settings (:class:`PipelineEditor`); stock
    diffusers video pipelines (``LucyEditPipeline`` with Lucy's own defaults, or any pipeline taking
    ``video`` + ``prompt``) go through :class:`DiffusersVideoEditor`. ``None`` values mean "the editor's
    default". ``size`` / ``max_pixels`` / ``num_inference_steps`` / ``guidance_scale`` / ``seed`` apply to
    both kinds.
    """
    options = {k: v for k, v in kwargs.items() if v is not None}
    config = read_model_index(path_or_repo)
    if config["_class_name"] == "SparkleEditPipeline":
        size = options.pop("size", None)
        if size is not None:
            options["height"], options["width"] = size
        return pipeline_editor(path_or_repo, **options)
    return diffusers_editor(path_or_repo, config=config, **options)


def import_editor(spec: str) -> Editor:
    """``module:function`` -> the named ``(VideoReader, prompt) -> frames`` callable.

    The module is imported as Python imports it (the current folder is searched first, so a local
    ``my_editor.py`` works); a class is instantiated with no arguments.
    """
    import importlib
    import os
    import sys

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--editor wants module:function, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--editor {spec}: cannot import {module_name} ({e})") from e
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"--editor {spec}: {module_name} has no {attr}")
    if isinstance(target, type):
        target = target()
    if not callable(target):
        raise ValueError(f"--editor {spec}: {attr} is not callable")
    return target


#: Built-in editors by name.
BASELINES: dict[str, Callable[[], Editor]] = {
    "identity": IdentityEditor,
    "static-background": StaticBackgroundEditor,
}


def load_editor(spec: str, **kwargs: Any) -> Editor:
    """``identity`` / ``static-background``, or a pipeline folder / Hub repo id (see :func:`model_editor`)."""
    if spec in BASELINES:
        return BASELINES[spec]()
    return model_editor(spec, **kwargs)
