"""The model roles of the generation pipeline, as typed protocols.

Every stage talks to models only through these roles, so a classical CPU reference backend, a tiny
random-weight model and the paper's checkpoints are interchangeable. Pictures cross the boundary as
numpy arrays: images ``(H, W, 3) uint8`` RGB, videos ``(T, H, W, 3) uint8`` RGB, masks ``bool``.
Boxes are pixel ``(x1, y1, x2, y2)`` unless a name says ``qwen`` (Qwen's [0, 1000] normalised frame).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Resources:
    """What one instance of a backend needs; the Ray executor places its stage by this."""

    num_gpus: float = 0.0
    num_cpus: float = 1.0
    gpu_memory_gb: float = 0.0


@dataclass(frozen=True)
class Instruction:
    """A background-replacement instruction written for one clip."""

    prompt: str
    original_scene: str = ""


@dataclass(frozen=True)
class SceneChoice:
    """The taxonomy scene a VLM picked for a clip's first frame: its theme and ``"subtheme: scene"``."""

    theme: str
    chosen_keyword: str
    reason: str = ""


@dataclass(frozen=True)
class GroundedObject:
    """One foreground object: a label and its box in Qwen's [0, 1000] frame (empty = not found)."""

    label: str
    bbox_2d: tuple[int, int, int, int] | tuple[()] = ()


@dataclass(frozen=True)
class CameraJudgement:
    static: bool
    reason: str = ""


@dataclass(frozen=True)
class EditScore:
    """EditScore's published schema (0-10 scale)."""

    prompt_following: float
    consistency: float
    perceptual_quality: float
    overall: float
    SC_reasoning: str = ""
    PQ_reasoning: str = ""


@dataclass
class ControlInputs:
    """Everything stage 5 knows; a backend uses what its model takes."""

    prompt: str
    edited_frame0: np.ndarray  # (H, W, 3)
    control_video: np.ndarray  # (T, H, W, 3) fused edges
    source_video: np.ndarray  # (T, H, W, 3)
    foreground_mask: np.ndarray  # (T, H, W) bool
    background_video: np.ndarray  # (T, H, W, 3)
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What every backend has: its resources, and a constructor from a config entry."""

    resources: ClassVar[Resources]

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> Backend: ...


@runtime_checkable
class VisionLanguageModel(Protocol):
    """Picks the scene and writes instructions, grounds foreground objects and judges the camera."""

    def choose_scene(self, frame0: np.ndarray, themes: Sequence[str], *, seed: int = 0) -> SceneChoice:
        """Stage 2: the taxonomy scene (of one of ``themes``) that suits this first frame."""
        ...

    def compose_instruction(
        self, frame0: np.ndarray, theme: str, chosen_keyword: str, *, seed: int = 0
    ) -> Instruction: ...

    def ground(self, frame: np.ndarray) -> list[GroundedObject]:
        """Round 1: every foreground object of ``frame`` (labels + boxes)."""
        ...

    def relocate(self, frames: Sequence[np.ndarray], labels: Sequence[str]) -> list[list[GroundedObject]]:
        """Round 2: for each frame, one entry per label, with an empty box where it is not visible."""
        ...

    def judge_static_camera(self, frames: Sequence[np.ndarray]) -> CameraJudgement: ...


@runtime_checkable
class ClipGrounder(Protocol):
    """Optional extra of a VLM backend: round-1 grounding that may look at the whole clip.

    Stage 3 calls ``ground_clip(frames)`` when the VLM has it and ``ground(frames[0])`` otherwise; a
    backend that models motion (the reference one) needs more than one frame to tell foreground apart.
    """

    def ground_clip(self, frames: np.ndarray) -> list[GroundedObject]: ...


@runtime_checkable
class ImageEditor(Protocol):
    def edit(self, image: np.ndarray, prompt: str, *, seed: int = 0) -> np.ndarray: ...

    def erase(self, image: np.ndarray, mask: np.ndarray, *, prompt: str = "", seed: int = 0) -> np.ndarray:
        """Remove what ``mask`` (H, W bool) covers and fill in plausible background."""
        ...


@runtime_checkable
class ImageToVideo(Protocol):
    def animate(
        self, image: np.ndarray, prompt: str, *, num_frames: int = 81, seed: int = 0
    ) -> np.ndarray: ...


@runtime_checkable
class VideoSegmenter(Protocol):
    def segment(self, frames: np.ndarray, anchor: int, boxes: Sequence[Box]) -> np.ndarray:
        """One pass: prompt ``boxes`` (pixels) on frame ``anchor``, propagate both ways.

        Returns ``(num_boxes, T, H, W)`` bool, one mask video per box, at the clip's size.
        """
        ...


@runtime_checkable
class ControlVideoGenerator(Protocol):
    def generate(self, inputs: ControlInputs, *, seed: int = 0) -> np.ndarray: ...


@runtime_checkable
class EditScorer(Protocol):
    def score(self, source: np.ndarray, edited: np.ndarray, prompt: str) -> EditScore: ...


@runtime_checkable
class MaskAwareScorer(Protocol):
    """Optional extra of a scorer backend: scoring an erase knowing where its hole was.

    Stage 3 calls ``score_erase(edited_frame0, erased, instruction, mask)`` when the scorer has it and
    ``score(...)`` otherwise; EditScore judges the pictures alone, the reference scorer uses the hole to
    check that no subject is left next to it.
    """

    def score_erase(
        self, source: np.ndarray, edited: np.ndarray, prompt: str, mask: np.ndarray
    ) -> EditScore: ...


@runtime_checkable
class SubjectAwareScorer(Protocol):
    """Optional extra of a scorer backend: scoring a background replacement knowing where the subject is.

    Stage 5 calls ``score_replacement(source_frame, edited_frame, prompt, mask_frame)`` when the scorer
    has it and ``score(...)`` otherwise; EditScore judges the pictures alone (as upstream), the reference
    scorer uses the BAIT mask to check that the subject kept its structure and lost nothing beside it.
    """

    def score_replacement(
        self, source: np.ndarray, edited: np.ndarray, prompt: str, subject: np.ndarray
    ) -> EditScore: ...


#: Role name -> protocol; config files and the registry use these names.
ROLES: dict[str, type] = {
    "vlm": VisionLanguageModel,
    "image_editor": ImageEditor,
    "image_to_video": ImageToVideo,
    "segmenter": VideoSegmenter,
    "control_video": ControlVideoGenerator,
    "scorer": EditScorer,
}
