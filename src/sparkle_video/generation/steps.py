"""Running one stage for one sample: read its inputs from the workspace, call the stage, write its
artefacts atomically, then record the outcome. Both executors call :func:`run_step` and nothing else.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .. import safe_write
from ..data.masks import load_mask, pack_mask
from ..data.video import VideoReader, write_video
from .backends.protocols import ROLES, EditScore
from .backends.registry import BackendConfig
from .camera import needed_frames
from .ledger import STAGES, Ledger, Outcome, write_atomic, write_json_atomic
from .settings import working_clip
from .stages import (
    check_source,
    edit_first_frame,
    filter_camera,
    generate_background,
    generate_edited_video,
    track_foreground,
)

logger = logging.getLogger(__name__)

#: Where a run keeps its plan, ledger and per-sample work files, inside the output folder.
WORK_DIR = "_generation"

#: The roles each stage talks to (the Ray executor sizes each stage's workers from these).
STAGE_ROLES: dict[str, tuple[str, ...]] = {
    "camera": (),  # + "vlm" when the fine camera check is on
    "frame_edit": ("vlm", "image_editor", "scorer"),
    "background": ("vlm", "image_editor", "image_to_video", "scorer"),
    "tracking": ("vlm", "segmenter"),
    "final": ("control_video", "scorer"),
}


@dataclass(frozen=True)
class PlanItem:
    """One source clip and what the run may make of it.

    ``id`` is the run's own name for the clip (``clip_000003``: its place in the sorted listing); the
    theme is not known yet: stage 2 picks it from ``themes`` (comma-separated) by looking at frame 0,
    and the published id (``Sparkle_{theme}_000003``) follows from it.
    """

    id: str
    source: str
    themes: str

    @property
    def theme_list(self) -> tuple[str, ...]:
        return tuple(t for t in self.themes.split(",") if t)


#: x264 settings that give the same bytes in every run: one thread, and no macroblock-tree rate control
#: (with it, small frames encode differently from run to run even single-threaded).
REPRODUCIBLE_X264 = {"threads": "1", "x264-params": "mbtree=0"}


class BackendTimeout(TimeoutError):
    """A backend call ran past ``pipeline.call_timeout_s``; the call is abandoned, not killed."""


def call_with_timeout(fn: Any, timeout: float, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a daemon thread; raise :class:`BackendTimeout` after ``timeout`` s.

    A Python thread cannot be killed, so a hung call keeps its thread; it is a daemon and never blocks
    the process from exiting. ``timeout <= 0`` calls ``fn`` directly.
    """
    if timeout <= 0:
        return fn(*args, **kwargs)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller below
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True, name=f"backend-{getattr(fn, '__name__', 'call')}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise BackendTimeout(f"{getattr(fn, '__qualname__', fn)} did not return within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class TimeLimited:
    """A backend whose public methods run under :func:`call_with_timeout`."""

    def __init__(self, backend: Any, timeout: float):
        self._backend = backend
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._backend, name)
        if name.startswith("_") or not callable(value):
            return value

        def limited(*args: Any, **kwargs: Any) -> Any:
            return call_with_timeout(value, self._timeout, *args, **kwargs)

        limited.__name__ = name
        return limited


class Workspace:
    """Paths of a run's work files: ``OUT/_generation/{plan.jsonl, ledger/, samples/{id}/}``."""

    def __init__(self, out: str | Path, crf: int = 18, preset: str = "medium"):
        self.out = Path(out)
        self.crf, self.preset = crf, preset
        self.work = self.out / WORK_DIR
        self.ledger = Ledger(self.work / "ledger")

    def file(self, sample_id: str, name: str) -> Path:
        return self.work / "samples" / sample_id / name

    def read_json(self, sample_id: str, name: str) -> Any:
        return json.loads(self.file(sample_id, name).read_text("utf-8"))

    def write_json(self, sample_id: str, name: str, value: Any) -> None:
        write_json_atomic(self.file(sample_id, name), value, self.out)

    def write_png(self, sample_id: str, name: str, image: np.ndarray) -> None:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
        write_atomic(self.file(sample_id, name), buf.getvalue(), self.out)

    def read_png(self, sample_id: str, name: str) -> np.ndarray:
        from PIL import Image

        with Image.open(self.file(sample_id, name)) as img:
            return np.asarray(img.convert("RGB"))

    def write_video(self, sample_id: str, name: str, frames: np.ndarray, fps: float) -> None:
        # write_video encodes to a temporary file and renames it
        write_video(
            frames,
            safe_write.inside(self.out, self.file(sample_id, name)),
            fps=fps,
            crf=self.crf,
            preset=self.preset,
            options=REPRODUCIBLE_X264,
        )

    def read_video(self, sample_id: str, name: str) -> np.ndarray:
        reader = VideoReader(self.file(sample_id, name))
        return reader.get_frames(list(range(reader.num_frames)))

    def write_mask(self, sample_id: str, name: str, mask: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **pack_mask(mask))
        write_atomic(self.file(sample_id, name), buf.getvalue(), self.out)

    def read_mask(self, sample_id: str, name: str) -> np.ndarray:
        return load_mask(self.file(sample_id, name))

    def source_fps(self, sample_id: str) -> float:
        return float(self.read_json(sample_id, "source.json")["fps"])


class StageContext:
    """What a stage needs besides the sample: the workspace, the settings and the (lazily built) backends."""

    def __init__(self, out: str | Path, config: BackendConfig):
        self.workspace = Workspace(out, config.pipeline.video_crf, config.pipeline.video_preset)
        self.config = config
        self.settings = config.pipeline
        self.thresholds = config.thresholds
        self._backends: dict[str, Any] = {}

    def backend(self, role: str) -> Any:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if role not in self._backends:
            self._backends[role] = TimeLimited(self.config.build(role), self.settings.call_timeout_s)
        return self._backends[role]

    def load(self, roles: Iterable[str]) -> None:
        """Build these roles now (Ray actors do this once, so models load before the first sample)."""
        for role in roles:
            self.backend(role)


def stage_roles(stage: str, config: BackendConfig) -> tuple[str, ...]:
    roles = STAGE_ROLES[stage]
    if stage == "camera" and config.pipeline.fine_camera_check:
        roles = ("vlm",)
    return roles


def score_record(sample_id: str, prompt: str, score: EditScore) -> dict[str, Any]:
    return {"id": sample_id, "prompt": prompt, "editscore": asdict(score)}


def video_score_entry(score: EditScore) -> dict[str, Any]:
    """One frame of ``edited_video_score.jsonl``: EditScore's SC/PQ/O plus the fields behind them."""
    return {
        "SC_score": min(score.prompt_following, score.consistency),
        "PQ_score": score.perceptual_quality,
        "O_score": score.overall,
        **asdict(score),
    }


def read_source(ctx: StageContext, sample_id: str) -> np.ndarray:
    return ctx.workspace.read_video(sample_id, "source.mp4")


# -- the five steps ------------------------------------------------------------------------------
def camera_decode_size(width: int, height: int, work_width: int) -> tuple[int, int] | None:
    """``(height, width)`` to decode at for the camera check (twice its working width), or ``None``
    when the source is already that small."""
    target = work_width * 2
    if width <= target:
        return None
    return max(2, round(height * target / width / 2) * 2), target


def step_camera(ctx: StageContext, item: PlanItem) -> Outcome:
    """Stage 1 on the working clip (:func:`~sparkle_video.generation.settings.working_clip`): the
    source brought to the paper's budget (at most 1280x720, 16 fps, 81 frames) before anything else."""
    ws, settings = ctx.workspace, ctx.settings
    reader = VideoReader(item.source)
    try:
        meta = reader.metadata
    except Exception as e:  # av raises many kinds; any unreadable file is a rejected input
        return Outcome("rejected", f"unreadable source: {e}")
    source_fps = float(Fraction(meta.fps).limit_denominator(1001))
    clip = working_clip(meta.num_frames, source_fps, meta.width, meta.height, settings)
    check = check_source(meta, settings, clip.num_frames)
    if not check.ok:
        return Outcome("rejected", check.reason)
    limits = settings.camera
    picks = needed_frames(clip.num_frames, limits)
    try:
        decoded = reader.get_frames(
            [clip.indices[i] for i in picks],
            size=camera_decode_size(meta.width, meta.height, limits.work_width),
        )
        fine = None
        if settings.fine_camera_check:
            fine_idx = np.linspace(0, clip.num_frames - 1, 8).round().astype(int).tolist()
            fine = list(reader.get_frames([clip.indices[i] for i in fine_idx]))
    except Exception as e:
        return Outcome("rejected", f"unreadable source: {e}")
    frames = dict(zip(picks, decoded, strict=True))
    result = filter_camera(frames, settings, ctx.backend("vlm") if fine is not None else None, fine)
    ws.write_json(item.id, "camera.json", result.to_dict())
    if not result.passed:
        return Outcome("rejected", result.reason)
    unchanged = clip.unchanged(meta.num_frames, source_fps, meta.width, meta.height)
    if unchanged and Path(item.source).suffix.lower() == ".mp4" and meta.codec == "h264":
        with (
            open(item.source, "rb") as src,
            safe_write.atomic_open(ws.file(item.id, "source.mp4"), ws.out) as f,
        ):
            shutil.copyfileobj(src, f, 1 << 20)
    else:  # the working clip, as H.264 mp4 like the published clips
        size = None if (clip.width, clip.height) == (meta.width, meta.height) else (clip.height, clip.width)
        ws.write_video(item.id, "source.mp4", reader.get_frames(list(clip.indices), size=size), clip.fps)
    ws.write_json(
        item.id,
        "source.json",
        {
            "source": item.source,
            "fps": clip.fps,
            "num_frames": clip.num_frames,
            "width": clip.width,
            "height": clip.height,
            "original": {
                "fps": source_fps,
                "num_frames": meta.num_frames,
                "width": meta.width,
                "height": meta.height,
            },
        },
    )
    return Outcome("passed", result.reason)


def step_frame_edit(ctx: StageContext, item: PlanItem) -> Outcome:
    ws = ctx.workspace
    frame0 = VideoReader(ws.file(item.id, "source.mp4")).get_frame(0)
    result = edit_first_frame(
        frame0,
        item.theme_list,
        ctx.backend("vlm"),
        ctx.backend("image_editor"),
        ctx.backend("scorer"),
        ctx.thresholds.frame0,
        ctx.settings.seed,
    )
    prompt = result.instruction.prompt
    ws.write_png(item.id, "source_frame0.png", frame0)
    ws.write_png(item.id, "edited_frame0.png", result.edited)
    ws.write_json(
        item.id,
        "instruction.json",
        {
            "prompt": prompt,
            "original_scene": result.instruction.original_scene,
            "theme": result.choice.theme,
            "chosen_keyword": result.choice.chosen_keyword,
            "choice_reason": result.choice.reason,
        },
    )
    ws.write_json(item.id, "edited_frame0_score.json", score_record(item.id, prompt, result.score))
    return Outcome("passed" if result.passed else "rejected", result.reason)


def step_background(ctx: StageContext, item: PlanItem) -> Outcome:
    ws = ctx.workspace
    frames = read_source(ctx, item.id)
    prompt = ws.read_json(item.id, "instruction.json")["prompt"]
    result = generate_background(
        frames,
        ws.read_png(item.id, "edited_frame0.png"),
        ctx.backend("vlm"),
        ctx.backend("image_editor"),
        ctx.backend("image_to_video"),
        ctx.backend("scorer"),
        prompt,
        ctx.thresholds.erase,
        ctx.settings.num_frames,
        ctx.settings.seed,
    )
    objects = [{"label": o.label, "bbox_2d": list(o.bbox_2d)} for o in result.objects]
    ws.write_json(item.id, "grounding_r1.json", {"id": item.id, "objects": objects})
    if result.erased is not None and result.score is not None:
        ws.write_png(item.id, "edited_frame0_foreground_removed.png", result.erased)
        ws.write_json(
            item.id,
            "edited_frame0_foreground_removed_score.json",
            score_record(item.id, result.erase_prompt, result.score),
        )
    if result.video is not None:
        ws.write_video(item.id, "background.mp4", result.video, ws.source_fps(item.id))
    return Outcome("passed" if result.passed else "rejected", result.reason)


def step_tracking(ctx: StageContext, item: PlanItem) -> Outcome:
    ws = ctx.workspace
    frames = read_source(ctx, item.id)
    labels = [o["label"] for o in ws.read_json(item.id, "grounding_r1.json")["objects"]]
    result = track_foreground(
        frames,
        labels,
        ws.source_fps(item.id),
        ctx.backend("vlm"),
        ctx.backend("segmenter"),
        ctx.settings.anchor_fps,
    )
    ws.write_json(
        item.id,
        "grounding_r2.json",
        {
            "id": item.id,
            "frame_indices": result.frame_indices,
            "frame_objects": [
                [{"label": o.label, "bbox_2d": list(o.bbox_2d)} for o in objs]
                for objs in result.frame_objects
            ],
        },
    )
    ws.write_json(
        item.id, "bait.json", {"passes": result.passes, "skipped": [list(s) for s in result.skipped]}
    )
    if result.mask is not None:
        ws.write_mask(item.id, "mask.npz", result.mask)
    return Outcome("passed" if result.passed else "rejected", result.reason)


def step_final(ctx: StageContext, item: PlanItem) -> Outcome:
    ws, settings = ctx.workspace, ctx.settings
    frames = read_source(ctx, item.id)
    prompt = ws.read_json(item.id, "instruction.json")["prompt"]
    fps = ws.source_fps(item.id)
    result = generate_edited_video(
        frames,
        ws.read_mask(item.id, "mask.npz"),
        ws.read_video(item.id, "background.mp4"),
        ws.read_png(item.id, "edited_frame0.png"),
        prompt,
        ctx.backend("control_video"),
        ctx.backend("scorer"),
        ctx.thresholds.final,
        settings.final_frame_indices,
        settings.canny_low,
        settings.canny_high,
        settings.seed,
    )
    ws.write_video(item.id, "canny.mp4", result.control, fps)
    ws.write_video(item.id, "edited.mp4", result.video, fps)
    ws.write_json(
        item.id,
        "edited_video_score.json",
        {
            "id": item.id,
            "prompt": prompt,
            "frame_indices": result.frame_indices,
            "editscore": [video_score_entry(s) for s in result.scores],
        },
    )
    return Outcome("passed" if result.passed else "rejected", result.reason)


STEPS = {
    "camera": step_camera,
    "frame_edit": step_frame_edit,
    "background": step_background,
    "tracking": step_tracking,
    "final": step_final,
}
assert tuple(STEPS) == STAGES


def run_step(stage: str, ctx: StageContext, item: PlanItem) -> Outcome:
    """Run ``stage`` for ``item`` unless the ledger already has its final outcome; record what happened.

    Exceptions (a backend that raises or times out included) become a ``failed`` outcome with the error
    and a short traceback; the run goes on with the next sample. A write error (``SparkleWriteError``:
    a full disk, a symlink leading out of the output folder) stops the run instead.
    """
    ledger = ctx.workspace.ledger
    done = ledger.get(stage, item.id)
    if done is not None and done.final:
        return done
    start = time.perf_counter()
    try:
        outcome = STEPS[stage](ctx, item)
    except safe_write.SparkleWriteError:  # a full disk or a link out of --out: every sample would fail
        raise
    except Exception as e:
        tb = traceback.format_exception(type(e), e, e.__traceback__)
        summary = "".join(tb[-3:])[-2000:]
        logger.warning("%s failed at stage %s: %s: %s", item.id, stage, type(e).__name__, e)
        outcome = Outcome("failed", error=f"{type(e).__name__}: {e}", traceback=summary)
    outcome = Outcome(
        outcome.status,
        outcome.reason,
        outcome.error,
        outcome.traceback,
        round(time.perf_counter() - start, 3),
    )
    ledger.record(stage, item.id, outcome)
    return outcome
