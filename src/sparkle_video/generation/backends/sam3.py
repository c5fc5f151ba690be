"""Video-segmenter role on SAM3's tracker: ``transformers.Sam3TrackerVideoModel`` with an inference session.

One BAIT pass prompts every object's box on one anchor frame and propagates the masks through the whole
clip: forwards from the anchor, then backwards (``reverse=True``) from it, in one session so both
directions share the anchor's memory.

Why the inputs are prepared here: SAM3's processors (``Sam3TrackerVideoProcessor`` and its image and
video processors) need torchvision, which has no CPU build for every torch. Their behaviour is small and
documented, and is reproduced by :func:`sam3_pixel_values` (resize to the model's square input,
antialiased bilinear on uint8; scale to [0, 1]; normalise with mean = std = 0.5), :func:`sam3_box_points`
(boxes scaled to the square input, given as two corner points labelled 2 and 3) and
:func:`sam3_masks_to_frame` (bilinear upsampling of the mask logits to the clip's size, then ``> 0``).
The tests check the box and mask steps against the processor's own methods and documented behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .model_support import ModelBackend, resolve_device, torch_dtype
from .protocols import Box, Resources

#: SAM3's image normalisation (its image processor's ``image_mean``/``image_std``).
SAM3_MEAN = (0.5, 0.5, 0.5)
SAM3_STD = (0.5, 0.5, 0.5)
#: Point labels the processor gives a box's top-left and bottom-right corners.
BOX_CORNER_LABELS = (2, 3)


def sam3_pixel_values(
    frames: np.ndarray, size: int, mean: Sequence[float] = SAM3_MEAN, std: Sequence[float] = SAM3_STD
) -> Any:
    """``(T, H, W, 3) uint8`` -> ``(T, 3, size, size)`` float32: what the processor's video branch returns."""
    import torch
    import torch.nn.functional as F

    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    # the processors resize the uint8 frames (antialiased bilinear, the result rounded back to uint8),
    # then rescale by 1/255 and normalise
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = x.round().clamp(0, 255) / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def sam3_box_points(boxes: Sequence[Box], height: int, width: int, size: int) -> tuple[Any, Any]:
    """Pixel ``(x1, y1, x2, y2)`` boxes -> per-object corner points and labels in the model's square frame.

    Returns ``(points (N, 1, 2, 2) float32, labels (N, 1, 2) int32)``: for object ``i``, ``points[i]`` is
    the batch-of-one prompt the session stores (corners scaled by ``size / width`` and ``size / height``).
    """
    import torch

    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    corners = b.reshape(-1, 2, 2).clone()
    corners[..., 0] *= size / width
    corners[..., 1] *= size / height
    labels = torch.tensor(BOX_CORNER_LABELS, dtype=torch.int32).repeat(corners.shape[0], 1)
    return corners.unsqueeze(1), labels.unsqueeze(1)


def sam3_masks_to_frame(logits: Any, height: int, width: int, threshold: float = 0.0) -> np.ndarray:
    """Low-resolution mask logits ``(N, 1, h, w)`` -> ``(N, height, width)`` bool at the clip's size."""
    import torch.nn.functional as F

    up = F.interpolate(logits.float(), (height, width), mode="bilinear", align_corners=False)
    return (up[:, 0] > threshold).cpu().numpy()


def clip_boxes(boxes: Sequence[Box], height: int, width: int) -> list[Box]:
    """Boxes clipped to the frame, with corners ordered; a box with no area is refused by index."""
    out: list[Box] = []
    for i, box in enumerate(boxes):
        if len(box) != 4:
            raise ValueError(f"box {i} must have 4 numbers (x1, y1, x2, y2), got {box!r}")
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
        y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            raise ValueError(f"box {i} {box!r} has no area inside the {width}x{height} frame")
        out.append((x1, y1, x2, y2))
    return out


class Sam3VideoSegmenter(ModelBackend):
    """SAM3's tracker as the box-prompted video segmenter.

    Options: ``model_id`` (default ``facebook/sam3``), ``dtype`` (default ``float32``: SAM3's memory is
    sensitive to rounding), ``device``, ``tiny``, ``seed``, ``mask_threshold`` (logit cut, default 0 as
    the processor) and ``store_frames_on_cpu`` (keep the preprocessed clip in host memory; an 81-frame
    clip is about 1 GB at 1008x1008 float32).
    """

    resources: ClassVar[Resources] = Resources(num_gpus=1.0, num_cpus=2.0, gpu_memory_gb=16.0)
    option_keys: ClassVar[tuple[str, ...]] = (
        "model_id",
        "dtype",
        "device",
        "tiny",
        "seed",
        "mask_threshold",
        "store_frames_on_cpu",
    )
    default_model_id: ClassVar[str] = "facebook/sam3"

    def __init__(self, model: Any, *, mask_threshold: float = 0.0, store_frames_on_cpu: bool = False) -> None:
        self.model = model.eval()
        self.mask_threshold = float(mask_threshold)
        self.store_frames_on_cpu = bool(store_frames_on_cpu)
        self.image_size = int(model.config.image_size)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | None = None,
        *,
        dtype: str = "float32",
        device: str | None = "auto",
        seed: int | None = None,
        **settings: Any,
    ) -> Sam3VideoSegmenter:
        from transformers import Sam3TrackerVideoModel

        model = Sam3TrackerVideoModel.from_pretrained(
            model_id or cls.default_model_id, dtype=torch_dtype(dtype)
        )
        return cls(model.to(resolve_device(device)), **settings)

    @classmethod
    def tiny(
        cls, seed: int = 0, *, dtype: str = "float32", device: str | None = "cpu", **settings: Any
    ) -> Sam3VideoSegmenter:
        """Random weights on a 56-pixel square input (masks come out at 16x16 before upsampling)."""
        model = tiny_sam3_tracker(seed).to(resolve_device(device), torch_dtype(dtype))
        return cls(model, **settings)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def segment(self, frames: np.ndarray, anchor: int, boxes: Sequence[Box]) -> np.ndarray:
        """``(len(boxes), T, H, W)`` bool: object ``i`` prompted by ``boxes[i]`` on frame ``anchor``."""
        import torch
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession,
        )

        arr = np.asarray(frames)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"expected (T, H, W, 3) frames, got shape {arr.shape}")
        num_frames, height, width = arr.shape[:3]
        if not 0 <= anchor < num_frames:
            raise ValueError(f"anchor frame {anchor} is outside the clip's {num_frames} frames")
        boxes = clip_boxes(boxes, height, width)
        masks = np.zeros((len(boxes), num_frames, height, width), dtype=bool)
        if not boxes:
            return masks
        device = self.device
        dtype = next(self.model.parameters()).dtype
        session = Sam3TrackerVideoInferenceSession(
            video=sam3_pixel_values(arr, self.image_size),
            video_height=height,
            video_width=width,
            inference_device=device,
            inference_state_device=device,
            video_storage_device="cpu" if self.store_frames_on_cpu else device,
            dtype=dtype,
        )
        points, labels = sam3_box_points(boxes, height, width, self.image_size)
        obj_ids = list(range(1, len(boxes) + 1))
        for i, obj_id in enumerate(obj_ids):
            obj_idx = session.obj_id_to_idx(obj_id)
            session.add_point_inputs(
                obj_idx,
                anchor,
                {"point_coords": points[i : i + 1].to(device), "point_labels": labels[i : i + 1].to(device)},
            )
            session.remove_mask_inputs(obj_idx, anchor)
        session.obj_with_new_inputs = obj_ids
        with torch.inference_mode():
            for reverse in (False, True):
                for out in self.model.propagate_in_video_iterator(
                    session, start_frame_idx=anchor, reverse=reverse
                ):
                    frame_masks = sam3_masks_to_frame(out.pred_masks, height, width, self.mask_threshold)
                    for row, obj_id in enumerate(out.object_ids):
                        masks[obj_id - 1, out.frame_idx] = frame_masks[row]
        return masks


def tiny_sam3_tracker(seed: int = 0) -> Any:
    """A ``Sam3TrackerVideoModel`` with random weights and a tiny configuration.

    Constraints of the architecture kept here: four FPN scales (the last is dropped), a memory width of
    64 (the memory attention's key width is fixed at 64) and a hidden width that is a multiple of it.
    """
    import torch
    from transformers import Sam3TrackerVideoConfig, Sam3TrackerVideoModel

    torch.manual_seed(seed)
    size, hidden = 56, 128
    lowest = size // 14
    config = Sam3TrackerVideoConfig(
        vision_config={
            "model_type": "sam3_vision_model",
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": size,
                "patch_size": 14,
                "window_size": lowest,
                "global_attn_indexes": [0],
                "pretrain_image_size": size,
            },
            "fpn_hidden_size": hidden,
            "backbone_feature_sizes": [[4 * lowest] * 2, [2 * lowest] * 2, [lowest] * 2],
            "scale_factors": [4.0, 2.0, 1.0, 0.5],
        },
        prompt_encoder_config={
            "hidden_size": hidden,
            "image_size": size,
            "patch_size": 14,
            "mask_input_channels": 4,
        },
        mask_decoder_config={
            "hidden_size": hidden,
            "mlp_dim": 64,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 16,
        },
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[lowest, lowest],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64,
        num_maskmem=3,
        image_size=size,
    )
    return Sam3TrackerVideoModel(config).eval()
