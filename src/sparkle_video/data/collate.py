"""Training collation: fitting decoded clips to one size and stacking them into batches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SparkleDataError
from .video import VideoReader, uniform_indices

# -- training collation ---------------------------------------------------------------------------
RESIZE_POLICIES = ("crop", "stretch", "pad")


@dataclass(frozen=True)
class FitPlan:
    """How one clip reaches ``(height, width)``: decode at ``decode_size`` then crop or pad at ``top, left``.

    ``crop``: ``top, left`` is the window cut out of the decoded frame; ``pad``: where the decoded frame
    goes inside the (black) target; ``stretch``: decoded at the target size, nothing else.
    """

    decode_size: tuple[int, int]
    top: int = 0
    left: int = 0
    policy: str = "stretch"


def fit_plan(height: int, width: int, target: tuple[int, int], policy: str = "crop") -> FitPlan:
    """Plan to bring a ``height x width`` clip to ``target`` without distortion (``crop``/``pad``) or with it.

    ``crop`` uses the model's centred cover-crop geometry (the released inference code's ``int`` of the
    scaled side and floor-halved margins: 1280x720 -> 832x480 keeps columns 16..1263), applied while
    decoding: the frame is resized so that the crop window lands on the target (to within a pixel: the
    overhang is kept even, as odd sizes convert much slower), then cut.
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {policy!r}")
    th, tw = int(target[0]), int(target[1])
    if (height, width) == (th, tw) or policy == "stretch":
        return FitPlan((th, tw))
    if policy == "pad":
        scale = min(th / height, tw / width)
        dh, dw = min(th, max(1, round(height * scale))), min(tw, max(1, round(width * scale)))
        return FitPlan((dh, dw), (th - dh) // 2, (tw - dw) // 2, "pad")
    if height / width < th / tw:  # wider than the target: columns are cut
        crop_h, crop_w = height, int(height / th * tw)
        top, left = 0, (width - crop_w) // 2
    else:
        crop_h, crop_w = int(width / tw * th), width
        top, left = (height - crop_h) // 2, 0
    sy, sx = th / crop_h, tw / crop_w
    dh, dw = max(th, round(height * sy)), max(tw, round(width * sx))
    dh, dw = dh + (dh - th) % 2, dw + (dw - tw) % 2  # even overhang: swscale is ~1.5x slower on odd sizes
    return FitPlan((dh, dw), min(round(top * sy), dh - th), min(round(left * sx), dw - tw), "crop")


def fit_frames(frames: np.ndarray, plan: FitPlan, target: tuple[int, int]) -> np.ndarray:
    """Apply the crop or pad of ``plan`` to frames decoded at ``plan.decode_size`` (a view when cropping)."""
    th, tw = target
    if plan.policy == "crop":
        return frames[:, plan.top : plan.top + th, plan.left : plan.left + tw]
    if plan.policy == "pad":
        out = np.zeros((frames.shape[0], th, tw, 3), np.uint8)
        out[:, plan.top : plan.top + frames.shape[1], plan.left : plan.left + frames.shape[2]] = frames
        return out
    return frames


class SparkleCollator:
    """Batch rows into fixed-shape ``(B, C, T, H, W)`` float tensors for training.

    Clips shorter than ``num_frames`` repeat their last frame (``num_valid_frames`` says how many are
    real). Every frame reaches ``size`` during decoding, by the ``resize`` policy: ``"crop"`` (default,
    as the model's preprocessing: cover the size, centre-crop the overhang), ``"stretch"`` (ignore the
    aspect) or ``"pad"`` (fit inside, black borders, i.e. ``value_range[0]``). ``size=None`` keeps the
    clips' own size, which must then be the same for every clip of a batch. Text fields are kept as lists.

    The batch tensor is allocated once, in ``torch.channels_last_3d`` memory format (the decoder's
    ``(T, H, W, C)`` order), and each clip is converted straight into it, so collating costs no more than
    decoding and converting the clips by hand (``benchmarks/decode.py`` measures the ratio). Call
    ``.contiguous()`` on a batch if something needs the default layout.
    """

    def __init__(
        self,
        num_frames: int = 81,
        size: tuple[int, int] | None = (480, 832),
        value_range: tuple[float, float] = (-1.0, 1.0),
        sampling: str = "first",
        video_fields: Sequence[str] = ("source_video", "edited_video"),
        resize: str = "crop",
    ):
        if sampling not in ("first", "uniform"):
            raise ValueError("sampling must be 'first' or 'uniform'")
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
        self.num_frames = num_frames
        self.size = size
        self.value_range = value_range
        self.sampling = sampling
        self.video_fields = tuple(video_fields)
        self.resize = resize

    def indices(self, available: int) -> np.ndarray:
        if self.sampling == "uniform" and available >= self.num_frames:
            return uniform_indices(available, self.num_frames)
        idx = np.arange(self.num_frames)
        return np.minimum(idx, available - 1)

    def _target(self, readers: Sequence[VideoReader], name: str) -> tuple[int, int]:
        if self.size is not None:
            return int(self.size[0]), int(self.size[1])
        sizes = sorted({(r.height, r.width) for r in readers})
        if len(sizes) > 1:
            raise ValueError(
                f"size=None keeps each clip's own size, but the {name} clips of this batch differ "
                f"({', '.join(f'{h}x{w}' for h, w in sizes)}): pass size=(height, width)"
            )
        return sizes[0]

    def __call__(self, rows: Sequence[dict]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = {}
        for key in rows[0]:
            if key in self.video_fields:
                continue
            batch[key] = [row[key] for row in rows]
        lo, hi = self.value_range
        for name in self.video_fields:
            if name not in rows[0] or rows[0][name] is None:
                continue
            readers: list[VideoReader] = [row[name] for row in rows]
            th, tw = self._target(readers, name)
            # channels-last memory (the decoder's own layout): filling it is a straight conversion, no transpose
            shape = (len(rows), 3, self.num_frames, th, tw)
            try:
                out = torch.empty(shape, dtype=torch.float32, memory_format=torch.channels_last_3d)
            except (MemoryError, RuntimeError) as e:  # torch reports a failed allocation as RuntimeError
                raise SparkleDataError(
                    f"cannot allocate the {name} batch {tuple(shape)} ({4 * math.prod(shape)} bytes of float32, "
                    f"{e.__class__.__name__}): use fewer frames, a smaller size or a smaller batch",
                    path=readers[0].name,
                ) from e
            valid = []
            for b, reader in enumerate(readers):
                available = reader.num_frames
                plan = fit_plan(reader.height, reader.width, (th, tw), self.resize)
                native = plan.decode_size == (reader.height, reader.width)
                frames = reader.get_frames(self.indices(available), size=None if native else plan.decode_size)
                if plan.policy == "pad":  # black borders only, the frame copied straight into its window
                    bottom, right = plan.top + frames.shape[1], plan.left + frames.shape[2]
                    for border in (
                        out[b, :, :, : plan.top],
                        out[b, :, :, bottom:],
                        out[b, ..., : plan.left],
                        out[b, ..., right:],
                    ):
                        border.zero_()
                    window = out[b, :, :, plan.top : bottom, plan.left : right]
                else:
                    frames, window = fit_frames(frames, plan, (th, tw)), out[b]
                window.copy_(
                    torch.from_numpy(frames).permute(3, 0, 1, 2)
                )  # uint8 -> float, (T,H,W,C) -> (C,T,H,W)
                valid.append(min(available, self.num_frames))
            batch[name] = out.mul_((hi - lo) / 255.0).add_(lo)
            batch[f"{name}_num_valid_frames"] = torch.tensor(valid)
        return batch
