"""Stage 5: fuse the decoupled edge guidance, generate the edited video, score 4 non-first frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backends.protocols import (
    ControlInputs,
    ControlVideoGenerator,
    EditScore,
    EditScorer,
    SubjectAwareScorer,
)
from ..edges import control_video
from .background import fit_video


@dataclass
class FinalResult:
    control: np.ndarray
    video: np.ndarray
    frame_indices: list[int]
    scores: list[EditScore]
    mean_score: float
    passed: bool
    reason: str


def score_frame_indices(num_frames: int, preferred: Sequence[int] = (1, 26, 51, 76)) -> list[int]:
    """The frames the final check scores: ``preferred`` when the clip is long enough, else 4 spread
    evenly over frames 1..T-1 (never frame 0, which the generator was given)."""
    if num_frames < 2:
        raise ValueError("the final check needs at least 2 frames")
    if all(0 < i < num_frames for i in preferred):
        return list(preferred)
    count = len(preferred) or 4
    return sorted({round(float(v)) for v in np.linspace(1, num_frames - 1, count)})


def keep_first_frame(video: np.ndarray, edited_frame0: np.ndarray) -> np.ndarray:
    """``video`` with frame 0 replaced by the edited first frame, exactly.

    The method's output keeps the edited frame 0 (the generator is conditioned on it, and stage 2
    scored it). A generator does not return it bit for bit: Wan VACE's mask is downsampled over time,
    so latent frame 0 carries pixel frame 1's mask ("generate"), and the VAE round trip alters it
    anyway. Pasting it back makes frame 0 of ``edited.mp4`` the picture that passed stage 2.
    """
    if edited_frame0.shape != video.shape[1:]:
        raise ValueError(f"edited frame 0 {edited_frame0.shape} does not match the video {video.shape}")
    out = video.copy()
    out[0] = edited_frame0
    return out


def generate_edited_video(
    source: np.ndarray,
    mask: np.ndarray,
    background: np.ndarray,
    edited_frame0: np.ndarray,
    prompt: str,
    generator: ControlVideoGenerator,
    scorer: EditScorer,
    threshold: float = 8.0,
    frame_indices: Sequence[int] = (1, 26, 51, 76),
    canny_low: int = 100,
    canny_high: int = 200,
    seed: int = 0,
) -> FinalResult:
    """Control video -> generated edit (fitted to the source's size and length, frame 0 = the edited
    frame 0) -> mean ``O_score`` over non-first frames (a scorer that takes the subject's mask, such as
    the reference one, gets each scored frame's BAIT mask)."""
    t, h, w = source.shape[:3]
    if mask.shape != (t, h, w) or background.shape != source.shape:
        raise ValueError(
            f"source {source.shape}, mask {mask.shape} and background {background.shape} disagree"
        )
    control = control_video(source, background, mask, canny_low, canny_high)
    inputs = ControlInputs(
        prompt, edited_frame0, control, source, mask, background, {"canny": (canny_low, canny_high)}
    )
    video = keep_first_frame(fit_video(generator.generate(inputs, seed=seed), t, h, w), edited_frame0)
    indices = score_frame_indices(t, frame_indices)
    if isinstance(scorer, SubjectAwareScorer):
        scores = [scorer.score_replacement(source[i], video[i], prompt, mask[i]) for i in indices]
    else:
        scores = [scorer.score(source[i], video[i], prompt) for i in indices]
    mean = float(np.mean([s.overall for s in scores]))
    passed = mean >= threshold
    reason = "" if passed else f"edited video scored {mean:.2f} < {threshold} (mean over frames {indices})"
    return FinalResult(control, video, indices, scores, mean, passed, reason)
