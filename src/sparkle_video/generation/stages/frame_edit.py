"""Stage 2: write the instruction from the taxonomy, edit frame 0, keep edits that score well enough."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.protocols import EditScore, EditScorer, ImageEditor, Instruction, VisionLanguageModel


@dataclass
class FrameEditResult:
    instruction: Instruction
    edited: np.ndarray
    score: EditScore
    passed: bool
    reason: str


def edit_first_frame(
    frame0: np.ndarray,
    theme: str,
    chosen_keyword: str,
    vlm: VisionLanguageModel,
    editor: ImageEditor,
    scorer: EditScorer,
    threshold: float = 8.0,
    seed: int = 0,
) -> FrameEditResult:
    """Compose the instruction, edit frame 0 with it and score the edit (``overall < threshold`` fails)."""
    instruction = vlm.compose_instruction(frame0, theme, chosen_keyword, seed=seed)
    edited = np.asarray(editor.edit(frame0, instruction.prompt, seed=seed))
    if edited.shape != frame0.shape or edited.dtype != np.uint8:
        raise ValueError(
            f"image editor returned {edited.shape} {edited.dtype}, expected {frame0.shape} uint8"
        )
    score = scorer.score(frame0, edited, instruction.prompt)
    passed = score.overall >= threshold
    reason = "" if passed else f"edited frame 0 scored {score.overall:.2f} < {threshold}"
    return FrameEditResult(instruction, edited, score, passed, reason)
