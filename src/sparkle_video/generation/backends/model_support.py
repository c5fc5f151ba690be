"""What the model backends share: option parsing, placement, working sizes and picture conversions.

Every model backend is built from a config entry (``from_config(options)``). The keys common to all of
them are :data:`COMMON_OPTION_KEYS`; a backend adds its own and refuses any other key by name, so a typo
in a user's config fails before a model is downloaded. Heavy libraries (torch, diffusers, transformers)
are imported inside functions, never at module import.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
from PIL import Image

#: Option keys every model backend takes.
#:
#: ``model_id`` (Hub id or local folder), ``dtype`` (``bfloat16``/``float16``/``float32``), ``device``
#: (``auto`` = the first GPU if there is one, else the CPU), ``offload`` (``true`` = diffusers'/accelerate's
#: model CPU offload: one sub-model on the GPU at a time), ``steps`` and ``guidance`` (sampler), ``resolution``
#: (the working pixel budget; pictures keep their aspect), ``tiny`` (``true`` = random weights with a tiny
#: configuration built in code, for tests) and ``seed`` (weights seed of ``tiny``).
COMMON_OPTION_KEYS: tuple[str, ...] = (
    "model_id",
    "dtype",
    "device",
    "offload",
    "steps",
    "guidance",
    "resolution",
    "tiny",
    "seed",
)

_DTYPES = ("bfloat16", "float16", "float32")


def check_options(backend: str, options: Mapping[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    """A plain copy of ``options``, refusing the first key ``backend`` does not take (named in the error)."""
    allowed = tuple(allowed)
    for key in options:
        if key not in allowed:
            raise ValueError(
                f"unknown option {key!r} for backend {backend}; options: {', '.join(sorted(allowed))}"
            )
    return dict(options)


def torch_dtype(name: str | Any) -> Any:
    """``"bfloat16"`` -> ``torch.bfloat16`` (a torch dtype passes through)."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {name!r}")
    return getattr(torch, name)


def resolve_device(device: str | None) -> str:
    """``"auto"``/``None`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else as given."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def place_pipeline(pipe: Any, device: str, offload: bool) -> Any:
    """Move a diffusers pipeline to ``device``, or let it offload sub-models to the CPU between uses.

    Offloading needs an accelerator; on a CPU it is the same as placing the pipeline there.
    """
    if offload and device != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def generator(seed: int, device: str = "cpu") -> Any:
    """A seeded ``torch.Generator`` on the CPU (diffusers draws noise there and moves it: same noise on any device)."""
    import torch

    return torch.Generator("cpu").manual_seed(int(seed))


def fit_size(
    height: int, width: int, max_pixels: int, multiple: int, min_side: int | None = None
) -> tuple[int, int]:
    """The working size of a ``height x width`` picture: its aspect, at most ``max_pixels``, multiples of ``multiple``.

    Pictures already within the budget keep their size (rounded down to the multiple); larger ones are
    scaled down. ``min_side`` raises both sides (keeping the aspect) when the model has a minimum.
    """
    if height < 1 or width < 1:
        raise ValueError(f"picture size must be positive, got {width}x{height}")
    scale = min(1.0, math.sqrt(max_pixels / (height * width)))
    if min_side is not None and min(height, width) * scale < min_side:
        scale = min_side / min(height, width)
    h = max(multiple, int(height * scale) // multiple * multiple)
    w = max(multiple, int(width * scale) // multiple * multiple)
    return h, w


def to_pil(image: np.ndarray) -> Image.Image:
    """``(H, W, 3) uint8`` RGB -> PIL, refusing anything else with the shape named."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {arr.shape} {arr.dtype}")
    return Image.fromarray(arr)


def mask_to_pil(mask: np.ndarray) -> Image.Image:
    """``(H, W)`` bool -> an ``L`` image, 255 where ``mask`` is true (diffusers' white = repaint)."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {arr.shape}")
    return Image.fromarray(np.where(arr.astype(bool), 255, 0).astype(np.uint8), mode="L")


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of an ``(H, W, 3) uint8`` image; a no-op at the same size."""
    arr = np.asarray(image)
    if arr.shape[:2] == (height, width):
        return arr
    return np.asarray(Image.fromarray(arr).resize((width, height), Image.BICUBIC))


def resize_video(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of ``(T, H, W, 3) uint8`` frames; a no-op at the same size."""
    arr = np.asarray(frames)
    if arr.shape[1:3] == (height, width):
        return arr
    return np.stack([resize_image(f, height, width) for f in arr])


def float_to_uint8(pictures: np.ndarray) -> np.ndarray:
    """Pipeline output in ``[0, 1]`` floats -> ``uint8`` (rounded, clipped)."""
    return np.clip(np.round(np.asarray(pictures, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def frames_4k1(num_frames: int) -> int:
    """The smallest ``4k + 1 >= num_frames``: Wan's VAE compresses time by 4 and keeps the first frame."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    return (num_frames - 1 + 3) // 4 * 4 + 1


#: A chat template in Qwen's ChatML layout that also renders image and video entries of a message,
#: for the offline tiny tokenizer (the real checkpoints ship their own template).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_chat_tokenizer() -> Any:
    """The project's offline character-level tokenizer with Qwen's special tokens and a ChatML template."""
    from ...models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def eval_mode(pipe: Any) -> Any:
    """Put every torch module of a freshly built pipeline in eval mode (no dropout), as ``from_pretrained`` does."""
    for component in pipe.components.values():
        if hasattr(component, "eval") and hasattr(component, "parameters"):
            component.eval()
    return pipe


_Backend = TypeVar("_Backend", bound="ModelBackend")


class ModelBackend:
    """What every checkpoint-backed model backend does with its config entry.

    ``from_config`` refuses unknown keys, then builds the tiny random-weight model (``tiny: true``; a
    ``model_id`` is then ignored) or loads the checkpoint, both from the remaining options. A subclass
    names its ``option_keys`` and ``default_model_id`` and defines ``from_pretrained`` and ``tiny``.
    """

    option_keys: ClassVar[tuple[str, ...]] = COMMON_OPTION_KEYS
    default_model_id: ClassVar[str]

    @classmethod
    def from_config(cls: type[_Backend], options: Mapping[str, Any]) -> _Backend:
        opts = check_options(cls.__name__, options, cls.option_keys)
        if opts.pop("tiny", False):
            opts.pop("model_id", None)
            return cls.tiny(**opts)
        return cls.from_pretrained(**opts)

    @classmethod
    def from_pretrained(cls: type[_Backend], model_id: str | None = None, **options: Any) -> _Backend:
        raise NotImplementedError(f"{cls.__name__} does not load checkpoints")

    @classmethod
    def tiny(cls: type[_Backend], seed: int = 0, **options: Any) -> _Backend:
        raise NotImplementedError(f"{cls.__name__} has no tiny model")


_Pipeline = TypeVar("_Pipeline", bound="PipelineBackend")


class PipelineBackend(ModelBackend):
    """A model backend wrapping one diffusers pipeline, built as ``cls(pipeline, **settings)``.

    The checkpoint path loads the pipeline in ``dtype`` and places it (``offload``: model CPU offload;
    ``default_offload`` when not given); the tiny path builds it on the CPU in float32, then moves it, and
    fills the settings the tiny configuration needs (``tiny_settings``) unless given. A subclass says
    how its pipeline is loaded (``load_pipeline``) and built tiny (``tiny_pipeline``).
    """

    default_offload: ClassVar[bool] = False
    tiny_settings: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def load_pipeline(cls, model_id: str, dtype: Any) -> Any:
        """The checkpoint's pipeline with its weights in ``dtype`` (a torch dtype), on the CPU."""
        raise NotImplementedError

    @classmethod
    def tiny_pipeline(cls, seed: int) -> Any:
        """The pipeline with random weights and a tiny configuration, in float32 on the CPU."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls: type[_Pipeline],
        model_id: str | None = None,
        *,
        dtype: str = "bfloat16",
        device: str | None = "auto",
        offload: bool | None = None,
        seed: int | None = None,
        **settings: Any,
    ) -> _Pipeline:
        pipe = cls.load_pipeline(model_id or cls.default_model_id, torch_dtype(dtype))
        place_pipeline(
            pipe, resolve_device(device), bool(cls.default_offload if offload is None else offload)
        )
        return cls(pipe, **settings)

    @classmethod
    def tiny(
        cls: type[_Pipeline],
        seed: int = 0,
        *,
        dtype: str = "float32",
        device: str | None = "cpu",
        offload: bool = False,
        **settings: Any,
    ) -> _Pipeline:
        pipe = cls.tiny_pipeline(seed)
        if resolve_device(device) != "cpu":  # built on the CPU already
            pipe.to(resolve_device(device))
        if dtype != "float32":
            pipe.to(dtype=torch_dtype(dtype))
        return cls(pipe, **{**cls.tiny_settings, **settings})
