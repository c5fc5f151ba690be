"""Stage 2: write the instruction from the taxonomy, edit frame 0, keep edits that score well enough."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.protocols import (
    EditScore,
    EditScorer,
    ImageEditor,
    Instruction,
    SceneChoice,
    VisionLanguageModel,
)
from ..taxonomy import check_themes, resolve_choice


@dataclass
class FrameEditResult:
    choice: SceneChoice
    instruction: Instruction
    edited: np.ndarray
    score: EditScore
    passed: bool
    reason: str


def checked_choice(choice: SceneChoice, themes: tuple[str, ...]) -> SceneChoice:
    """``choice`` when it names a scene of the allowed ``themes``; a VLM backend that returns anything
    else is an error naming what it chose (the stage never runs on a scene outside the taxonomy)."""
    sub, _, scene = str(choice.chosen_keyword).partition(": ")
    if resolve_choice(choice.theme, sub, scene, themes) is None:
        raise ValueError(
            f"the VLM chose {choice.theme!r} / {choice.chosen_keyword!r}, not a scene of {', '.join(themes)}"
        )
    return choice


def edit_first_frame(
    frame0: np.ndarray,
    themes: tuple[str, ...] | list[str],
    vlm: VisionLanguageModel,
    editor: ImageEditor,
    scorer: EditScorer,
    threshold: float = 8.0,
    seed: int = 0,
) -> FrameEditResult:
    """Pick the scene for frame 0 (from ``themes``), write the instruction for it, edit frame 0 with it
    and score the edit (``overall < threshold`` fails)."""
    themes = check_themes(themes)
    choice = checked_choice(vlm.choose_scene(frame0, themes, seed=seed), themes)
    instruction = vlm.compose_instruction(frame0, choice.theme, choice.chosen_keyword, seed=seed)
    edited = np.asarray(editor.edit(frame0, instruction.prompt, seed=seed))
    if edited.shape != frame0.shape or edited.dtype != np.uint8:
        raise ValueError(
            f"image editor returned {edited.shape} {edited.dtype}, expected {frame0.shape} uint8"
        )
    score = scorer.score(frame0, edited, instruction.prompt)
    passed = score.overall >= threshold
    reason = "" if passed else f"edited frame 0 scored {score.overall:.2f} < {threshold}"
    return FrameEditResult(choice, instruction, edited, score, passed, reason)
