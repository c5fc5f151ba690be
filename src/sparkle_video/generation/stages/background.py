"""Stage 3: ground the foreground, erase it from the edited frame 0, animate the clean background."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..backends.protocols import (
    ClipGrounder,
    EditScore,
    EditScorer,
    GroundedObject,
    ImageEditor,
    ImageToVideo,
    MaskAwareScorer,
    VisionLanguageModel,
)
from ..bait import valid_pixel_box
from ..taxonomy import find_in_prompt

#: What the inpainter paints where the foreground was when the instruction names no taxonomy scene.
EMPTY_SCENE = "the empty background scene, with nothing and no one in front of it"


@dataclass
class BackgroundResult:
    objects: list[GroundedObject]
    erase_prompt: str
    erased: np.ndarray | None
    score: EditScore | None
    video: np.ndarray | None
    passed: bool
    reason: str
    fill_prompt: str = ""
    generated_frames: int = 0  # frames the image-to-video model made before fitting to the source


def ground_foreground(frames: np.ndarray, vlm: VisionLanguageModel) -> list[GroundedObject]:
    """Round-1 grounding: the whole clip when the backend can use it, else frame 0."""
    if isinstance(vlm, ClipGrounder):
        return list(vlm.ground_clip(frames))
    return list(vlm.ground(frames[0]))


def erase_mask(objects: Sequence[GroundedObject], height: int, width: int) -> np.ndarray:
    """The union of the objects' (valid) boxes as an ``(H, W)`` bool mask."""
    mask = np.zeros((height, width), bool)
    for obj in objects:
        box = valid_pixel_box(obj.bbox_2d, width, height)
        if box is not None:
            x1, y1, x2, y2 = box
            mask[y1:y2, x1:x2] = True
    return mask


def erase_instruction(labels: Sequence[str]) -> str:
    """The instruction the erase is *scored* against (an edit instruction, as EditScore expects)."""
    names = ", ".join(dict.fromkeys(labels)) or "foreground objects"
    return f"Remove the {names} and fill in the background behind them."


def fill_prompt(prompt: str) -> str:
    """What the inpainter is *asked to paint* in the hole: the new scene, empty.

    An inpainting model (FLUX.2-klein's inpaint pipeline included) is a text-to-image model restricted
    to the mask: its prompt describes what should appear there, so naming the object to remove ("Remove
    the person") tends to paint a person back. The scene comes from the stage-2 instruction.
    """
    found = find_in_prompt(prompt)
    if found is None:
        return EMPTY_SCENE
    scene = found[3].text
    article = "an" if scene[0] in "aeiou" else "a"
    return f"{article} {scene}, empty, with nothing and no one in front of it"


def fit_video(video: np.ndarray, num_frames: int, height: int, width: int) -> np.ndarray:
    """Trim or repeat-last to ``num_frames`` and resize to ``(height, width)``: models round sizes."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or len(video) == 0:
        raise ValueError(f"expected a (T, H, W, 3) video, got {video.shape}")
    idx = np.minimum(np.arange(num_frames), len(video) - 1)
    video = video[idx]
    if video.shape[1:3] != (height, width):
        video = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in video])
    return video.astype(np.uint8)


def generate_background(
    frames: np.ndarray,
    edited_frame0: np.ndarray,
    vlm: VisionLanguageModel,
    editor: ImageEditor,
    animator: ImageToVideo,
    scorer: EditScorer,
    prompt: str,
    threshold: float = 8.5,
    num_frames: int = 81,
    seed: int = 0,
) -> BackgroundResult:
    """Round-1 grounding -> erase (scored, ``overall < threshold`` fails) -> image-to-video background.

    The background is generated at the model's own length ``num_frames`` (81 for Wan2.2 I2V, as the
    paper) and then fitted to the source: cut when the source is shorter, its last frame held when
    longer (the size policy keeps sources at or under 81 frames).
    """
    t, height, width = frames.shape[:3]
    objects = ground_foreground(frames, vlm)
    mask = erase_mask(objects, height, width)
    instruction = erase_instruction([o.label for o in objects])
    fill = fill_prompt(prompt)
    if not mask.any():
        return BackgroundResult(
            objects, instruction, None, None, None, False, "no foreground object grounded", fill
        )
    erased = np.asarray(editor.erase(edited_frame0, mask, prompt=fill, seed=seed))
    if erased.shape != edited_frame0.shape:
        raise ValueError(f"image editor erase returned {erased.shape}, expected {edited_frame0.shape}")
    if isinstance(scorer, MaskAwareScorer):
        score = scorer.score_erase(edited_frame0, erased, instruction, mask)
    else:
        score = scorer.score(edited_frame0, erased, instruction)
    if score.overall < threshold:
        reason = f"foreground-removed frame 0 scored {score.overall:.2f} < {threshold}"
        return BackgroundResult(objects, instruction, erased, score, None, False, reason, fill)
    generated = np.asarray(animator.animate(erased, prompt, num_frames=num_frames, seed=seed))
    video = fit_video(generated, t, height, width)
    return BackgroundResult(objects, instruction, erased, score, video, True, "", fill, len(generated))
