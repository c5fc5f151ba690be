"""Classical CPU reference backends for every model role: no weights, no network, deterministic.

They make a real, if plain, background-replacement pair from a fixed-camera clip, so the whole pipeline
runs end to end offline, in CI and on a laptop:

* VLM: the scene whose look is nearest to frame 0's colours (``choose_by_look``), instructions from the
  taxonomy's templates; grounding of the whole subject: where pixels depart from the fixed camera's
  temporal median places it, GrabCut on the frame (seeded by the moving pixels, with the background they
  uncover as sure background) adds its still parts; the camera check reuses stage 1's statistics.
* Image editor: a procedural themed background behind a GrabCut estimate of the subject (the cut whose
  outline follows the picture's edges best, so a subject off the centre is found), and OpenCV
  inpainting (erase).
* Image-to-video: procedural motion (drift, sway, ripple, fog, flicker, weather particles).
* Segmenter: GrabCut in the box on the anchor frame (seeded the same way), propagated both ways with
  dense optical flow, growing into pixels that start to move and dropping the ones a moving part left.
* Control video: frame 0 is the edited frame 0; later frames take the source where the fused control
  video follows the source's edges and the background video elsewhere, relit as the edit relit frame 0.
* Scorer: judge-free image statistics answering EditScore's two questions and reduced as EditScore
  does; a sanity gate that rejects blank, unchanged, incomplete (subject left after an erase) or broken
  outputs, not a judge of taste.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from ...data.masks import pixels_to_qwen_box
from .. import taxonomy
from ..camera import check_camera
from ..settings import CameraThresholds
from .editscore import SCORE_RANGE, editscore_from_scores
from .protocols import (
    Box,
    CameraJudgement,
    ControlInputs,
    EditScore,
    GroundedObject,
    Instruction,
    Resources,
    SceneChoice,
)
from .render import animate_image, look_for_prompt, prompt_seed, render_background

#: Reference backends are light: several fit on one CPU, so a 2-core Ray node can hold every stage.
LIGHT = Resources(num_gpus=0.0, num_cpus=0.25)


class _FromConfig:
    """``from_config`` for the dataclass backends below (the registry has already checked the keys)."""

    resources: ClassVar[Resources] = LIGHT

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> Any:
        return cls(**dict(options))


def scale_to_width(image: np.ndarray, width: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= width:
        return image
    return cv2.resize(image, (width, max(2, round(h * width / w))), interpolation=interpolation)


def background_model(frames: np.ndarray, max_samples: int = 21) -> np.ndarray:
    """Temporal median of up to ``max_samples`` evenly spaced frames: the fixed camera's empty scene."""
    idx = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), max_samples)).round().astype(int))
    return np.median(frames[idx], axis=0).astype(np.uint8)


def difference(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per-pixel colour distance (max over channels, lightly blurred) in grey levels."""
    d = np.abs(frame.astype(np.int16) - background.astype(np.int16)).max(axis=-1).astype(np.uint8)
    return cv2.GaussianBlur(d, (5, 5), 0)


def clean_mask(mask: np.ndarray, open_px: int = 2, close_px: int = 5) -> np.ndarray:
    m = mask.astype(np.uint8)
    if open_px:
        m = cv2.morphologyEx(
            m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (open_px * 2 + 1,) * 2)
        )
    if close_px:
        m = cv2.morphologyEx(
            m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px * 2 + 1,) * 2)
        )
    return m.astype(bool)


def object_boxes(
    mask: np.ndarray, min_area: float = 0.004, max_objects: int = 3
) -> list[tuple[int, int, int, int]]:
    """Pixel boxes of the largest blobs of ``mask`` (parts closer than ~4% of the width are merged)."""
    h, w = mask.shape
    k = max(3, w // 25) | 1
    merged = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels = cv2.connectedComponents(merged, connectivity=8)
    found = []
    for i in range(1, n):
        part = (labels == i) & mask
        area = int(part.sum())
        if area < min_area * h * w:
            continue
        ys, xs = np.nonzero(part)
        found.append((area, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    found.sort(key=lambda item: (-item[0], item[1]))
    return [box for _, box in found[:max_objects]]


def grow_box(
    box: tuple[int, int, int, int], width: int, height: int, margin: float = 0.2
) -> tuple[int, int, int, int]:
    """``box`` enlarged by ``margin`` of its size on each side, and down to the frame's bottom edge when it
    comes close to it (a subject cut by the frame's edge moves most at the top: head and hands)."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    bottom = height if y2 + dy >= height * 0.65 else y2 + dy
    return (max(0, int(x1 - dx)), max(0, int(y1 - dy)), min(width, int(x2 + dx)), min(height, int(bottom)))


def subject_box(
    box: tuple[int, int, int, int], width: int, height: int, side: float = 0.1, up: float = 1.0
) -> tuple[int, int, int, int]:
    """Where the whole subject may be, given the box of its moving parts: wider by ``side`` of the box's
    width each side, taller by ``up`` of its height above (a still head sits above moving hands), and
    down to the frame's bottom when it comes close to it."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * side, (y2 - y1) * up
    bottom = height if y2 + (y2 - y1) * 0.2 >= height * 0.65 else y2 + (y2 - y1) * 0.2
    return (max(0, int(x1 - dx)), max(0, int(y1 - dy)), min(width, int(x2 + dx)), min(height, int(bottom)))


def grabcut_labels(image: np.ndarray, labels: np.ndarray, iterations: int) -> np.ndarray | None:
    """Foreground of GrabCut started from per-pixel ``labels`` (``cv2.GC_*``), seeded so every run gives
    the same; ``None`` when OpenCV refuses (e.g. no sure or probable foreground to learn from)."""
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(image, labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def whole_subject(
    image: np.ndarray,
    moving: np.ndarray,
    box: tuple[int, int, int, int],
    revealed: np.ndarray | None = None,
    iterations: int = 4,
) -> np.ndarray:
    """The whole subject in ``image``, still parts included: GrabCut over ``subject_box(box)`` (inside
    probably foreground, outside certainly background) with the ``moving`` pixels fixed as foreground
    and the ``revealed`` ones (where the subject moves at other times but not in this frame: background
    showing through) fixed as background.

    Motion alone finds only what moves; the colour models learnt from the moving pixels and from the
    scene around and between them extend it to a still head or torso that stands out from the scene.
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = subject_box(box, w, h)
    inside = np.zeros((h, w), bool)
    inside[y1:y2, x1:x2] = True
    seeds = moving & inside
    if x2 - x1 < 4 or y2 - y1 < 4 or inside.all():
        return seeds
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    mask[inside] = cv2.GC_PR_FGD
    core = cv2.erode(seeds.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    mask[core] = cv2.GC_FGD
    if revealed is not None:
        near = cv2.dilate(moving.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        mask[revealed & inside & ~near] = cv2.GC_BGD
    out = grabcut_labels(image, mask, iterations)
    if out is None:
        return seeds
    return drop_specks(clean_mask(out, 1, 3), seeds)


def drop_specks(mask: np.ndarray, seeds: np.ndarray, reach: int = 7) -> np.ndarray:
    """The parts of ``mask`` that touch ``seeds`` (within ``reach`` pixels): GrabCut's stray pieces of
    background elsewhere in the box are dropped; with no seeds, the largest part."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    if not seeds.any():
        return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    near = cv2.dilate(seeds.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)).astype(bool)
    hit = np.unique(labels[near & mask])
    return np.isin(labels, hit[hit > 0])


def union_box(a: Sequence[int], b: Sequence[int]) -> tuple[int, int, int, int]:
    """The smallest pixel box ``(x1, y1, x2, y2)`` holding both ``a`` and ``b``."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def join_with_median(
    found: Sequence[Sequence[tuple[int, int, int, int]]], count: int
) -> list[list[tuple[int, int, int, int] | None]]:
    """Per frame, the k-th subject's box (of ``count``) joined with that subject's median box over the
    frames it was found in (``None`` where a frame has no k-th box).

    The camera is fixed, so a subject stays about where it is: a frame where GrabCut keeps only a hand
    (a still subject seeds little) still gets the whole subject's box, and one stray wide box does not
    widen the others (the median ignores it).
    """
    out: list[list[tuple[int, int, int, int] | None]] = [[None] * count for _ in found]
    for k in range(count):
        seen = [boxes[k] for boxes in found if k < len(boxes)]
        if not seen:
            continue
        mid = tuple(int(v) for v in np.median(np.array(seen, float), axis=0))
        for row, boxes in zip(out, found, strict=True):
            if k < len(boxes):
                row[k] = union_box(boxes[k], mid)
    return out


def merge_boxes(
    boxes: Sequence[tuple[int, int, int, int]], width: int, height: int
) -> list[tuple[int, int, int, int]]:
    """Boxes of moving parts joined into one per subject: two parts closer than 0.8 of the shorter one's
    height (two arms either side of a still torso) are one subject. Largest first; a part under 15% of
    the largest's area is dropped (a flicker in the background, not a subject)."""
    merged = [tuple(b) for b in boxes]
    changed = True
    while changed and len(merged) > 1:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a1, b1 = merged[i], merged[j]
                short = min(a1[3] - a1[1], b1[3] - b1[1])
                gap_x = max(a1[0], b1[0]) - min(a1[2], b1[2])
                gap_y = max(a1[1], b1[1]) - min(a1[3], b1[3])
                tall = max(a1[3] - a1[1], b1[3] - b1[1])
                # a pair of hands: alike in size, level with each other, a few heights apart
                side_by_side = short >= 0.5 * tall and -gap_y >= 0.5 * short and gap_x < 3 * short
                touching = gap_x < 0.3 * short and gap_y < 0.3 * short
                if side_by_side or touching:
                    p, q = merged[i], merged.pop(j)
                    merged[i] = union_box(p, q)
                    changed = True
                    break
            if changed:
                break
    merged.sort(key=lambda b: (-(b[2] - b[0]) * (b[3] - b[1]), b))
    largest = (merged[0][2] - merged[0][0]) * (merged[0][3] - merged[0][1]) if merged else 0
    return [b for b in merged if (b[2] - b[0]) * (b[3] - b[1]) >= 0.15 * largest]


def motion_boxes(moving: np.ndarray, active: np.ndarray, max_objects: int) -> list[tuple[int, int, int, int]]:
    """Boxes of this frame's moving blobs, each widened to the path its part takes over the clip (the
    ``active`` region it lies in, up to one box size around it): a hand's box spans its swing, and
    flicker elsewhere in the background that does not touch this frame's motion is left out."""
    _, labels = cv2.connectedComponents(active.astype(np.uint8), connectivity=8)
    out = []
    for x1, y1, x2, y2 in object_boxes(moving, max_objects=max_objects):
        blob = np.zeros_like(moving)
        blob[y1:y2, x1:x2] = moving[y1:y2, x1:x2]
        hit = np.unique(labels[blob & active])
        bw, bh = x2 - x1, y2 - y1
        near = np.zeros_like(moving)  # the path, as far as one box size around the blob
        near[max(0, y1 - bh) : y2 + bh, max(0, x1 - bw) : x2 + bw] = True
        path = (np.isin(labels, hit[hit > 0]) & near) | blob
        ys, xs = np.nonzero(path)
        out.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return out


def subject_boxes(
    image: np.ndarray,
    moving: np.ndarray,
    active: np.ndarray,
    max_objects: int,
    place: np.ndarray | None = None,
) -> list[tuple[int, int, int, int]]:
    """Pixel boxes of each whole subject of one frame, largest first.

    ``moving`` is what departs from the empty scene in this frame: it places the subjects and seeds
    them (``active``, where anything moves over the clip, places them when this frame has too little
    motion, e.g. a subject that only starts moving later). ``active`` minus ``moving`` is background
    showing through. :func:`whole_subject` finds each subject's still parts. ``place`` overrides what
    places them.
    """
    h, w = moving.shape
    if place is None:
        place = moving if moving.sum() >= 0.004 * h * w else active
    out = []
    for box in merge_boxes(motion_boxes(place, active, max_objects * 3), w, h)[:max_objects]:
        inside = np.zeros((h, w), bool)
        inside[box[1] : box[3], box[0] : box[2]] = True
        part = whole_subject(image, moving & inside, box, active & ~moving)
        if part.any():
            ys, xs = np.nonzero(part)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        out.append(box)
    return out


def subject_labels(count: int) -> list[str]:
    return ["moving subject" if i == 0 else f"moving subject {i + 1}" for i in range(count)]


def describe_scene(frame: np.ndarray) -> str:
    """A short, plain description of a frame from its brightness and dominant hue."""
    small = scale_to_width(frame, 64)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.float32)
    value, sat = hsv[:, 2].mean() / 255, hsv[:, 1].mean() / 255
    light = "dim" if value < 0.35 else "bright" if value > 0.65 else "evenly lit"
    if sat < 0.15:
        tone = "muted grey"
    else:
        hue = float(np.median(hsv[:, 0])) * 2
        names = [
            (20, "red"),
            (45, "orange"),
            (70, "yellow"),
            (160, "green"),
            (200, "cyan"),
            (260, "blue"),
            (330, "purple"),
        ]
        tone = next((n for limit, n in names if hue < limit), "red")
    return f"a {light} scene with mostly {tone} tones, filmed by a fixed camera"


def frame_layout(frame: np.ndarray) -> np.ndarray:
    """Mean Lab colour of the top, middle and bottom thirds of a frame's outer quarters, ``(3, 3)``.

    Only the left and right quarters count: the subject usually stands in the middle, and it is the
    surroundings that the new scene replaces.
    """
    small = scale_to_width(frame, 64)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    q = max(1, lab.shape[1] // 4)
    sides = np.concatenate([lab[:, :q], lab[:, -q:]], axis=1)
    return np.stack([band.reshape(-1, 3).mean(axis=0) for band in np.array_split(sides, 3, axis=0)])


def look_layout(look: taxonomy.Look) -> np.ndarray:
    """A look's sky, horizon and ground colours (scaled by its brightness) in Lab, ``(3, 3)`` float."""
    rgb = np.clip(np.asarray([look.sky, look.horizon, look.ground], np.float32) * look.brightness, 0, 255)
    return cv2.cvtColor(rgb.astype(np.uint8)[None], cv2.COLOR_RGB2LAB)[0].astype(np.float32)


def choose_by_look(frame0: np.ndarray, themes: Sequence[str], seed: int = 0) -> SceneChoice:
    """The reference VLM's scene choice: a deterministic reading of frame 0, not of the file order.

    Among the subthemes of ``themes``, the one whose look (sky, horizon and ground colours at its
    brightness) is nearest in Lab to the frame's top, middle and bottom thirds: a dark frame gets a night
    or dusk scene, a green one a forest or spring one, a bright blue-topped one a coastal or midday one,
    so the subject's light already roughly matches the new scene. The scene within the subtheme follows
    the frame's quantised mean colour (and ``seed``), so similar frames may still get different scenes.
    """
    themes = taxonomy.check_themes(themes)
    layout = frame_layout(frame0)
    best = None
    for theme in themes:
        for sub, (look, items) in taxonomy.TAXONOMY[theme].items():
            distance = float(np.sqrt(((layout - look_layout(look)) ** 2).sum(axis=1)).mean())
            if best is None or distance < best[0] - 1e-6:
                best = (distance, theme, sub, items)
    distance, theme, sub, items = best  # type: ignore[misc]
    colour = tuple(int(v) // 16 for v in layout.mean(axis=0))
    scene = items[taxonomy.stable_hash(seed, *colour) % len(items)]
    reason = f"frame 0's colours are nearest to the {sub} look (Lab distance {distance:.1f})"
    return SceneChoice(theme, f"{sub}: {scene.text}", reason)


@dataclass
class ReferenceVLM(_FromConfig):
    """Templates for instructions, a background model for grounding, flow statistics for the camera."""

    work_width: int = 256
    threshold: int = 28
    max_objects: int = 3

    def choose_scene(self, frame0: np.ndarray, themes: Sequence[str], *, seed: int = 0) -> SceneChoice:
        """See :func:`choose_by_look`."""
        return choose_by_look(np.asarray(frame0), themes, seed)

    def compose_instruction(
        self, frame0: np.ndarray, theme: str, chosen_keyword: str, *, seed: int = 0
    ) -> Instruction:
        if taxonomy.lookup(chosen_keyword) is not None:
            prompt = taxonomy.compose_prompt(theme, chosen_keyword, seed)
        else:
            scene = chosen_keyword.split(": ", 1)[-1]
            prompt = f"Replace the background with {scene}, with gentle natural motion in the background."
        return Instruction(prompt=prompt, original_scene=describe_scene(frame0))

    def _foreground(self, frames: np.ndarray, background: np.ndarray) -> list[np.ndarray]:
        return [clean_mask(difference(f, background) > self.threshold) for f in frames]

    def ground_clip(self, frames: np.ndarray) -> list[GroundedObject]:
        """Round 1 with the whole clip at hand: each subject of frame 0, still parts included.

        Where pixels depart from the clip's median anywhere in the clip places each subject; GrabCut on
        frame 0 around it (:func:`whole_subject`) finds all of it, a still head or torso included.
        """
        small = np.stack([scale_to_width(f, self.work_width) for f in frames])
        moving = self._foreground(small, background_model(small))
        active = np.any(np.stack(moving), axis=0)
        h, w = active.shape
        boxes = [
            grow_box(b, w, h, margin=0.06)
            for b in subject_boxes(small[0], moving[0], active, self.max_objects)
        ]
        return [
            GroundedObject(label, pixels_to_qwen_box(box, w, h))
            for label, box in zip(subject_labels(len(boxes)), boxes, strict=True)
        ]

    def ground(self, frame: np.ndarray) -> list[GroundedObject]:
        """One frame only (no motion to read): the box of :func:`subject_in_frame`, as the image editor
        finds the subject."""
        small = scale_to_width(frame, self.work_width)
        h, w = small.shape[:2]
        fg = subject_in_frame(small)
        boxes = object_boxes(fg, max_objects=1)
        return [
            GroundedObject(label, pixels_to_qwen_box(b, w, h))
            for label, b in zip(subject_labels(1), boxes, strict=False)
        ]

    def relocate(self, frames: Sequence[np.ndarray], labels: Sequence[str]) -> list[list[GroundedObject]]:
        """Per frame, the k-th largest subject answers the k-th label (empty box when missing); each box
        covers the whole subject (:func:`whole_subject`), not only its moving parts, and is joined with
        that subject's median box over the frames (:func:`join_with_median`)."""
        small = np.stack([scale_to_width(np.asarray(f), self.work_width) for f in frames])
        moving = self._foreground(small, background_model(small))
        active = np.any(np.stack(moving), axis=0)
        h, w = active.shape
        # placed by the motion over all the frames asked about, so every frame's box covers the same
        # subject (a frame where only a hand moves would otherwise get the hand's box)
        found = [
            [
                grow_box(b, w, h, margin=0.06)
                for b in subject_boxes(image, fg, active, len(labels), place=active)
            ]
            for image, fg in zip(small, moving, strict=True)
        ]
        return [
            [
                GroundedObject(label, () if box is None else pixels_to_qwen_box(box, w, h))
                for label, box in zip(labels, row, strict=True)
            ]
            for row in join_with_median(found, len(labels))
        ]

    def judge_static_camera(self, frames: Sequence[np.ndarray]) -> CameraJudgement:
        report = check_camera(np.stack([np.asarray(f) for f in frames]), CameraThresholds(pair_gap=1))
        return CameraJudgement(report.static, report.reason)


def salient_box(image: np.ndarray, width: int = 96) -> tuple[int, int, int, int] | None:
    """Pixel box (at ``image``'s size) of the largest region of one frame whose colours the frame's
    left, right and top borders do not have, grown by a fifth of its size; ``None`` when nothing stands
    out (under 2% of the frame).

    With one picture and no motion, what differs from the surroundings is the usual subject: the
    borders show the scene (the bottom is left out, a subject is often cut by it). A subject off the
    centre is found where a centred box would cut it in half.
    """
    h, w = image.shape[:2]
    small = scale_to_width(image, width)
    sh, sw = small.shape[:2]
    lab = cv2.cvtColor(cv2.GaussianBlur(small, (3, 3), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    b = max(2, sw // 12)
    border = np.concatenate([lab[:, :b].reshape(-1, 3), lab[:, -b:].reshape(-1, 3), lab[:b].reshape(-1, 3)])
    distance = _nearest(lab.reshape(-1, 3), _centroids(border, 8)).reshape(sh, sw)
    standout = clean_mask(distance > max(18.0, float(np.percentile(distance, 70))), 1, 2)
    boxes = object_boxes(standout, min_area=0.02, max_objects=3)

    def likely(box: tuple[int, int, int, int]) -> float:
        # large, standing on the bottom edge and near the middle: a person, not a picture on the wall
        x1, y1, x2, y2 = box
        grounded = 1.5 if y2 >= 0.95 * sh else 1.0
        central = 1.0 - 0.5 * abs((x1 + x2) / 2 - sw / 2) / (sw / 2)
        return float(standout[y1:y2, x1:x2].sum()) * grounded * central

    boxes = sorted(boxes, key=likely, reverse=True)
    if not boxes or (boxes[0][2] - boxes[0][0]) * (boxes[0][3] - boxes[0][1]) > 0.8 * sh * sw:
        return None
    x1, y1, x2, y2 = grow_box(boxes[0], sw, sh, margin=0.2)
    sx, sy = w / sw, h / sh
    return (int(x1 * sx), int(y1 * sy), min(w, round(x2 * sx)), min(h, round(y2 * sy)))


def outline_strength(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean gradient magnitude of ``image`` along ``mask``'s outline (the frame's edges left out): a
    subject's outline lies on edges, a cut that spilled into a smooth scene has one in flat areas."""
    m = mask.astype(np.uint8)
    outline = (m - cv2.erode(m, np.ones((3, 3), np.uint8))).astype(bool)
    outline[:2], outline[-2:], outline[:, :2], outline[:, -2:] = False, False, False, False
    if not outline.any():
        return 0.0
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    magnitude = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    return float(magnitude[outline].mean())


def subject_in_frame(image: np.ndarray) -> np.ndarray:
    """The subject of one picture, with no motion to read: GrabCut in a centred box (the usual subject
    position), in the box of what stands out from the frame's borders (:func:`salient_box`) and in both
    together; the cut whose outline follows the picture's edges best (:func:`outline_strength`) wins, so
    a subject off the centre is found, and a loose box that spills into the scene loses to a tight one."""
    h, w = image.shape[:2]
    centred = (w // 6, h // 20, w - w // 6, h)
    boxes = [centred]
    found = salient_box(image)
    if found is not None:
        boxes += [found, union_box(found, centred)]
    cuts = [clean_mask(grabcut_rect(image, box), 1, 3) for box in dict.fromkeys(boxes)]
    return max(cuts, key=lambda cut: outline_strength(image, cut))


def grabcut_rect(image: np.ndarray, rect: tuple[int, int, int, int], iterations: int = 3) -> np.ndarray:
    """GrabCut foreground inside pixel box ``rect`` (x1, y1, x2, y2); the box itself if GrabCut fails."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in rect)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    out = np.zeros((h, w), bool)
    if x2 - x1 < 4 or y2 - y1 < 4:
        out[y1:y2, x1:x2] = True
        return out
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(image, mask, (x1, y1, x2 - x1, y2 - y1), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        out[y1:y2, x1:x2] = True
        return out
    out = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    if not out.any():
        out[y1:y2, x1:x2] = True
    return out


def grabcut_seeded(
    image: np.ndarray,
    box: tuple[int, int, int, int],
    seeds: np.ndarray,
    revealed: np.ndarray | None = None,
    iterations: int = 3,
) -> np.ndarray:
    """GrabCut inside ``box`` (probably foreground, as a box drawn around a subject) with ``seeds``
    (pixels that move) fixed as foreground and ``revealed`` (pixels that move at other times but match
    the clip's median now) as *probably* background; outside the box is background. A still part of
    the subject inside the box stays foreground when its colours differ from the scene around it.

    ``revealed`` is only a hint: where a subject stands most of the time (a person swaying in place),
    the median is the subject itself, so matching it says nothing; fixing those pixels as background
    made GrabCut drop a still, swaying subject whole on real clips."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    if not seeds[y1:y2, x1:x2].any():
        return grabcut_rect(image, box, iterations)
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    mask[y1:y2, x1:x2] = cv2.GC_PR_FGD
    inside = np.zeros((h, w), bool)
    inside[y1:y2, x1:x2] = True
    core = cv2.erode(seeds.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & inside
    mask[core] = cv2.GC_FGD
    if revealed is not None:
        near = cv2.dilate(seeds.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        mask[revealed & inside & ~near & (mask != cv2.GC_FGD)] = cv2.GC_PR_BGD
    out = grabcut_labels(image, mask, iterations)
    if out is None:
        return seeds & inside
    out = drop_specks(out, seeds & inside)
    return out if out.any() else seeds & inside


def refine_mask(image: np.ndarray, prior: np.ndarray, core_px: int = 2, iterations: int = 2) -> np.ndarray:
    """``prior`` (a mask carried over from a neighbouring frame) fitted to this frame's colours: GrabCut
    with the prior's core fixed as foreground, the prior and a band around it free, and everything
    beyond the band background. Carrying a mask by flow alone loses a few pixels at every frame and
    fragments it over a clip; re-fitting each frame to the subject's own colours holds it whole."""
    h, w = prior.shape
    if prior.sum() < 16:
        return prior
    ys, xs = np.nonzero(prior)
    band = max(3, round(0.15 * max(xs.max() - xs.min(), ys.max() - ys.min())))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1,) * 2)
    near = cv2.dilate(prior.astype(np.uint8), kernel).astype(bool)
    core = cv2.erode(prior.astype(np.uint8), np.ones((2 * core_px + 1,) * 2, np.uint8)).astype(bool)
    if near.all() or not core.any():
        return prior
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    mask[near] = cv2.GC_PR_BGD
    mask[prior] = cv2.GC_PR_FGD
    mask[core] = cv2.GC_FGD
    out = grabcut_labels(image, mask, iterations)
    if out is None:
        return prior
    return drop_specks(clean_mask(out, 1, 3), core)


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Soft alpha in [0, 1] from a boolean mask, with edges blurred by ``sigma`` pixels."""
    alpha = mask.astype(np.float32)
    if sigma > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    return alpha


def harmonise(
    foreground: np.ndarray, background: np.ndarray, fg_mask: np.ndarray, strength: float
) -> np.ndarray:
    """Shift the foreground's Lab mean part of the way towards the background's (relighting, cheaply)."""
    fg_lab = cv2.cvtColor(foreground, cv2.COLOR_RGB2LAB).astype(np.float32)
    bg_lab = cv2.cvtColor(background, cv2.COLOR_RGB2LAB).astype(np.float32)
    if not fg_mask.any() or fg_mask.all():
        return foreground
    shift = (bg_lab[~fg_mask].mean(axis=0) - fg_lab[fg_mask].mean(axis=0)) * strength
    shift[0] *= 0.6  # lightness moves less than colour: keep the subject readable
    out = np.clip(fg_lab + shift, 0, 255).astype(np.uint8)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB)


def composite(foreground: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.clip(
        foreground.astype(np.float32) * a + background.astype(np.float32) * (1 - a) + 0.5, 0, 255
    ).astype(np.uint8)


@dataclass
class ReferenceImageEditor(_FromConfig):
    """Edit: the subject (GrabCut where the frame departs from its borders) over a painted themed
    background. Erase: inpainting."""

    work_width: int = 320
    harmonise_strength: float = 0.25
    inpaint_radius: int = 5

    def subject_mask(self, image: np.ndarray) -> np.ndarray:
        """The subject of one picture (:func:`subject_in_frame` at the working width), at its size."""
        h, w = image.shape[:2]
        fg = subject_in_frame(scale_to_width(image, self.work_width))
        return cv2.resize(fg.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)

    def edit(self, image: np.ndarray, prompt: str, *, seed: int = 0) -> np.ndarray:
        h, w = image.shape[:2]
        background = render_background(look_for_prompt(prompt), h, w, prompt_seed(prompt, seed))
        fg = self.subject_mask(image)
        subject = harmonise(image, background, fg, self.harmonise_strength)
        return composite(subject, background, feather(fg, max(1.0, w / 640)))

    def erase(self, image: np.ndarray, mask: np.ndarray, *, prompt: str = "", seed: int = 0) -> np.ndarray:
        h, w = image.shape[:2]
        grow = max(3, w // 100) | 1
        hole = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
        if not hole.any():
            return image.copy()
        small = scale_to_width(image, self.work_width)
        sh, sw = small.shape[:2]
        small_hole = cv2.resize(hole, (sw, sh), interpolation=cv2.INTER_NEAREST)
        small_hole = cv2.dilate(small_hole, np.ones((3, 3), np.uint8))
        filled = cv2.inpaint(small, small_hole, self.inpaint_radius, cv2.INPAINT_TELEA)
        filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_CUBIC)
        return composite(filled, image, feather(hole.astype(bool), max(1.0, w / 320)))


@dataclass
class ReferenceImageToVideo(_FromConfig):
    """Procedural motion chosen by the instruction's scene (see ``render.animate_image``)."""

    def animate(self, image: np.ndarray, prompt: str, *, num_frames: int = 81, seed: int = 0) -> np.ndarray:
        return animate_image(image, look_for_prompt(prompt), num_frames, prompt_seed(prompt, seed) + 1)


class _ClipCache:
    """Per-clip work (small frames, background model, flows) shared by the passes of one clip."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: dict[str, Any] = {}

    def get(self, frames: np.ndarray, work_width: int) -> dict[str, Any]:
        probe = np.ascontiguousarray(
            frames[:, :: max(1, frames.shape[1] // 7), :: max(1, frames.shape[2] // 7)]
        )
        key = (frames.shape, work_width, hash(probe.tobytes()))
        if key != self.key:
            small = np.stack([scale_to_width(f, work_width) for f in frames])
            gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in small])
            background = background_model(small)
            diff = np.stack([difference(f, background) for f in small])
            self.key, self.value = (
                key,
                {
                    "small": small,
                    "gray": gray,
                    "diff": diff,
                    "active": np.any(np.stack([clean_mask(d > 30) for d in diff]), axis=0),
                    "flow": {},
                },
            )
        return self.value


@dataclass
class ReferenceSegmenter(_FromConfig):
    """GrabCut on the anchor frame, propagated with DIS optical flow and the background model."""

    work_width: int = 256
    high: int = 30
    low: int = 12
    refine: bool = True

    def __post_init__(self) -> None:
        self._cache = _ClipCache()

    def _flow(self, clip: dict[str, Any], src: int, dst: int) -> np.ndarray:
        """Flow that maps each pixel of frame ``dst`` to where it was in frame ``src``."""
        key = (src, dst)
        if key not in clip["flow"]:
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
            clip["flow"][key] = dis.calc(clip["gray"][dst], clip["gray"][src], None)
        return clip["flow"][key]

    def _warp(self, clip: dict[str, Any], mask: np.ndarray, src: int, dst: int) -> np.ndarray:
        h, w = mask.shape
        flow = self._flow(clip, src, dst)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        return (
            cv2.remap(mask.astype(np.float32), xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR) > 0.5
        )

    def _propagate(
        self, clip: dict[str, Any], mask: np.ndarray, still: np.ndarray, src: int, dst: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Carry ``mask`` from frame ``src`` to ``dst`` along the flow, growing it into nearby pixels that
        clearly depart from the background model (a limb that starts to move), and dropping the pixels a
        moving part has left (they match the empty scene again). ``still`` (carried along too) is the
        part that was still on the anchor frame, a head or torso: it matches the empty scene by nature
        and is never dropped for it."""
        warped = self._warp(clip, mask, src, dst)
        still = self._warp(clip, still, src, dst) & warped
        near = cv2.dilate(warped.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        # where the subject moves at times but this frame matches the empty scene, it has moved away
        uncovered = clip["active"] & (clip["diff"][dst] < self.low) & ~still
        grown = clean_mask((warped & ~uncovered) | (near & (clip["diff"][dst] > self.high)), 1, 3)
        if self.refine:
            grown = refine_mask(clip["small"][dst], grown) | (still & grown)
        return grown, still & grown

    def segment(self, frames: np.ndarray, anchor: int, boxes: Sequence[Box]) -> np.ndarray:
        frames = np.asarray(frames)
        t, h, w = frames.shape[:3]
        clip = self._cache.get(frames, self.work_width)
        small = clip["small"]
        sh, sw = small.shape[1:3]
        sx, sy = sw / w, sh / h
        out = np.zeros((len(boxes), t, h, w), bool)
        for n, box in enumerate(boxes):
            x1, y1, x2, y2 = box
            sbox = (
                int(x1 * sx),
                int(y1 * sy),
                max(int(x1 * sx) + 1, round(x2 * sx)),
                max(int(y1 * sy) + 1, round(y2 * sy)),
            )
            seeds = clean_mask(clip["diff"][anchor] > self.high)
            revealed = clip["active"] & ~seeds
            masks = np.zeros((t, sh, sw), bool)
            masks[anchor] = clean_mask(grabcut_seeded(small[anchor], sbox, seeds, revealed), 1, 3)
            # still on the anchor: inside the mask yet matching the clip's median, so the median there
            # is the subject itself (a head that is mostly where it is now), not the empty scene
            still0 = masks[anchor] & (clip["diff"][anchor] < self.low)
            still = still0
            for i in range(anchor + 1, t):
                masks[i], still = self._propagate(clip, masks[i - 1], still, i - 1, i)
            still = still0
            for i in range(anchor - 1, -1, -1):
                masks[i], still = self._propagate(clip, masks[i + 1], still, i + 1, i)
            for i in range(t):
                up = cv2.resize(masks[i].astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR)
                out[n, i] = up > 127
        return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every enclosed hole filled (flood fill from the border)."""
    m = mask.astype(np.uint8)
    h, w = m.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = m
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    return (m | (1 - flood[1:-1, 1:-1])).astype(bool)


def source_edge_region(
    control: np.ndarray, source: np.ndarray, background: np.ndarray, mask: np.ndarray, low: int, high: int
) -> np.ndarray:
    """Where one frame of the fused control video follows the *source*: its edges that are the
    source's and not the background's, closed and filled into regions, plus each part of ``mask`` that
    holds such edges (a mask part with no source edge in the control is left to the background)."""
    edges = control[..., 0] > 127
    src = cv2.Canny(cv2.cvtColor(source, cv2.COLOR_RGB2GRAY), low, high) > 0
    bg = cv2.Canny(cv2.cvtColor(background, cv2.COLOR_RGB2GRAY), low, high) > 0
    own = edges & src & ~bg
    w = own.shape[1]
    k = max(3, w // 60) | 1
    closed = cv2.morphologyEx(own.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((k, k), np.uint8)).astype(bool)
    region = fill_holes(closed)
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n > 1:
        near = cv2.dilate(own.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        hit = np.unique(labels[near & mask])
        region |= np.isin(labels, hit[hit > 0])
    return region


@dataclass
class ReferenceControlVideo(_FromConfig):
    """The control video's structure, rendered by compositing instead of a video model.

    Frame 0 is the edited frame 0. Every other frame takes the source's pixels where the fused control
    video follows the source (:func:`source_edge_region`) and the background video elsewhere, with
    feathered edges; the subject is relit by the shift the image editor gave it on frame 0 (edited
    frame 0 against source frame 0 inside the mask), so frames 1.. continue frame 0.
    """

    harmonise_strength: float = 1.0
    feather_px: float = 1.5

    def generate(self, inputs: ControlInputs, *, seed: int = 0) -> np.ndarray:
        source, background, mask = inputs.source_video, inputs.background_video, inputs.foreground_mask
        control, edited0 = np.asarray(inputs.control_video), np.asarray(inputs.edited_frame0)
        t, h, w = source.shape[:3]
        if background.shape[:3] != (t, h, w) or mask.shape != (t, h, w) or control.shape[:3] != (t, h, w):
            raise ValueError(
                f"stage 5 inputs disagree: source {source.shape}, background {background.shape}, "
                f"mask {mask.shape}, control {control.shape}"
            )
        if edited0.shape != source.shape[1:]:
            raise ValueError(f"edited frame 0 {edited0.shape} does not match the source {source.shape}")
        low, high = inputs.extra.get("canny", (100, 200))
        src_lab = cv2.cvtColor(source[0], cv2.COLOR_RGB2LAB).astype(np.float32)
        edt_lab = cv2.cvtColor(edited0, cv2.COLOR_RGB2LAB).astype(np.float32)
        shift = np.zeros(3, np.float32)
        if mask[0].any():
            shift = (edt_lab[mask[0]].mean(axis=0) - src_lab[mask[0]].mean(axis=0)) * self.harmonise_strength
        out = np.empty_like(source)
        out[0] = edited0
        sigma = self.feather_px * w / 1280 * 2
        for i in range(1, t):
            region = source_edge_region(control[i], source[i], background[i], mask[i], low, high)
            lab = cv2.cvtColor(source[i], cv2.COLOR_RGB2LAB).astype(np.float32) + shift
            relit = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
            out[i] = composite(relit, background[i], feather(region, sigma))
        return out


def _centroids(samples: np.ndarray, k: int = 6) -> np.ndarray:
    """Up to ``k`` k-means colour centres of ``samples`` (N, 3), seeded so every run gives the same."""
    samples = np.ascontiguousarray(samples, np.float32)
    if len(samples) <= k:
        return samples
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, _, centres = cv2.kmeans(samples, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    return centres


def _nearest(pixels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.sqrt(((pixels[:, None, :] - centres[None, :, :]) ** 2).sum(-1)).min(axis=1)


def _grown(region: np.ndarray, px: int) -> np.ndarray:
    return cv2.dilate(region.astype(np.uint8), np.ones((2 * px + 1,) * 2, np.uint8)).astype(bool)


def subject_next_to(
    source_lab: np.ndarray, region: np.ndarray, subject: np.ndarray, candidates: np.ndarray | None = None
) -> np.ndarray:
    """Pixels just outside ``region``, touching it, whose colour in ``source_lab`` is much nearer the
    subject's than the scene's (and that are in ``candidates``, when given): the subject continues there.

    ``subject`` are the subject's colours (``(N, 3)`` Lab samples); the scene is the source further out
    (a ring two to three times the reach away), so colours the scene has too are not the subject's.
    """
    r = max(3, int(0.5 * np.sqrt(region.sum())))
    near = _grown(region, r) & ~region
    far = _grown(region, 3 * r) & ~_grown(region, 2 * r)
    out = np.zeros(region.shape, bool)
    scene = source_lab[far] if far.any() else source_lab[~_grown(region, r)]
    if not near.any() or len(scene) == 0:  # the region and its surroundings fill the picture
        return out
    bg = _centroids(scene)
    subject = subject[_nearest(subject, bg) > 15]
    if len(subject) < 20:
        return out
    fg = _centroids(subject)
    if candidates is not None:
        near &= candidates
    out[near] = _nearest(source_lab[near], fg) * 1.5 < _nearest(source_lab[near], bg)
    _, labels = cv2.connectedComponents(out.astype(np.uint8), connectivity=8)
    touching = np.unique(labels[out & _grown(region, 2)])
    return np.isin(labels, touching[touching > 0])


def leftover_foreground(source: np.ndarray, erased: np.ndarray, hole: np.ndarray | None = None) -> float:
    """How much subject an erase left next to its hole, relative to what it removed (0 = none).

    The colours the erase removed (``source`` inside ``hole`` where ``erased`` differs) describe the
    subject; the scene further out describes the background (the scene, not the fill: an inpainter
    smears a left-over head's colours into the hole). Pixels just outside the hole, touching it, that
    are much closer to the subject's colours are subject left behind: a still head above erased hands.
    Without ``hole``, the region the erase changed stands for it.
    """
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    er = cv2.cvtColor(erased, cv2.COLOR_RGB2LAB).astype(np.float32)
    change = np.sqrt(((src - er) ** 2).sum(-1))
    if hole is None:
        hole = clean_mask(change > 12, 1, 5)
    hole = np.asarray(hole, bool)
    removed = hole & (change > 12)
    if removed.sum() < 20:
        return 0.0
    left = subject_next_to(src, hole, src[removed])
    return float(left.sum()) / float(removed.sum())


def lost_subject(source: np.ndarray, edited: np.ndarray, subject: np.ndarray) -> float:
    """How much of the subject a background replacement replaced next to the part it kept, relative to
    the ``subject`` mask (0 = none): the mirror of :func:`leftover_foreground`.

    Pixels next to the mask that look like the subject in the source (its colours, not the scene's)
    and that the edit changed are subject the edit lost: half a face, a shoulder the mask missed.
    """
    subject = np.asarray(subject, bool)
    if subject.sum() < 20:
        return 0.0
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    edt = cv2.cvtColor(edited, cv2.COLOR_RGB2LAB).astype(np.float32)
    changed = np.sqrt(((src - edt) ** 2).sum(-1)) > 12
    lost = subject_next_to(src, subject, src[subject], changed)
    return float(lost.sum()) / float(subject.sum())


@dataclass
class ReferenceScorer(_FromConfig):
    """Judge-free statistics reported on EditScore's scale and record (0-10; ``overall = sqrt(SC*PQ)``).

    It answers EditScore's two questions with image statistics, each with two scores, and reduces them
    as EditScore does (:func:`~sparkle_video.generation.backends.editscore.editscore_from_scores`):

    * SC, editing success: for a replacement, how much the surroundings changed and, when told where the
      subject is (:meth:`score_replacement`), that none of it was replaced next to the part kept
      (:func:`lost_subject`: a final frame that lost half a face fails); for a removal ("Remove ..."),
      that something went (at least 2% of the picture changed) and no subject is left next to it
      (:func:`leftover_foreground`: a removal that leaves a still head or torso fails).
    * SC, over-editing: the share of pixels whose local structure (SSIM) survived: for a replacement,
      80% of the subject when it is known, else 40% of the centre (the subject usually stands there);
      for a removal, 90% of what lies outside the hole (60% of the whole picture when the hole is not
      known).
    * PQ, naturalness: detail (gradient energy: a flat or blurred picture scores low, measured against
      the source's own when that is plainer).
    * PQ, artefacts: no large clipped (blown-out or crushed) areas.

    A sanity gate against blank, unchanged, incomplete or broken outputs, not a judge of taste.
    """

    work_width: int = 256
    max_leftover: float = 0.1
    max_lost: float = 0.1

    def score(self, source: np.ndarray, edited: np.ndarray, prompt: str) -> EditScore:
        return self._score(source, edited, prompt, None)

    def score_erase(
        self, source: np.ndarray, edited: np.ndarray, prompt: str, mask: np.ndarray | None
    ) -> EditScore:
        """:meth:`score`, told where the erase's hole was (``mask``, ``(H, W)`` bool at ``source``'s size)."""
        return self._score(source, edited, prompt, mask)

    def score_replacement(
        self, source: np.ndarray, edited: np.ndarray, prompt: str, subject: np.ndarray | None
    ) -> EditScore:
        """:meth:`score` of a background replacement, told where the subject is in ``source``
        (``(H, W)`` bool at its size): the subject must keep its structure and lose nothing next to it."""
        return self._score(source, edited, prompt, subject)

    def _penalty(self, share: float, allowance: float) -> float:
        """1 up to half the ``allowance``, falling to 0 at twice it."""
        return 1.0 - min(1.0, max(0.0, share - allowance / 2) / (allowance * 1.5))

    def _score(
        self, source: np.ndarray, edited: np.ndarray, prompt: str, mask: np.ndarray | None
    ) -> EditScore:
        src = scale_to_width(np.asarray(source), self.work_width)
        edt = np.asarray(edited)
        if edt.shape[:2] != src.shape[:2]:
            edt = cv2.resize(edt, (src.shape[1], src.shape[0]), interpolation=cv2.INTER_AREA)
        h, w = src.shape[:2]
        region = None
        if mask is not None:
            region = cv2.resize(np.asarray(mask, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
            region = region if region.any() else None
        grow = max(3, w // 50) | 1
        removal = prompt.strip().lower().startswith(("remove", "erase"))
        diff = np.abs(src.astype(np.float32) - edt.astype(np.float32)).mean(axis=-1)
        note = ""
        if removal:
            leftover = leftover_foreground(src, edt, region)
            gone = min(1.0, float((diff > 20).mean()) / 0.02)
            # a subject left next to the erased region sinks the score: 2x the allowance scores 0
            success = 10 * gone * self._penalty(leftover, self.max_leftover)
            if region is not None:  # outside the hole nothing should change at all
                outside = ~cv2.dilate(region.astype(np.uint8), np.ones((grow, grow), np.uint8)).astype(bool)
                kept = kept_fraction(src, edt, outside) if outside.any() else 1.0
                over_edit = 10 * min(1.0, kept / 0.9)
            else:
                kept = kept_fraction(src, edt, np.ones((h, w), bool))
                over_edit = 10 * min(1.0, kept / 0.6)
            note = f"; {leftover:.2f} of the subject left after the removal"
        elif region is not None:
            around = ~cv2.dilate(region.astype(np.uint8), np.ones((grow, grow), np.uint8)).astype(bool)
            changed = float(diff[around].mean()) if around.any() else 0.0
            lost = lost_subject(src, edt, region)
            success = 10 * min(1.0, changed / 255 / 0.08) * self._penalty(lost, self.max_lost)
            core = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            kept = kept_fraction(src, edt, core if core.any() else region)
            over_edit = 10 * min(1.0, kept / 0.8)
            note = f"; {lost:.2f} of the subject lost next to it"
        else:
            centre = np.zeros((h, w), np.uint8)
            cv2.ellipse(centre, (w // 2, h // 2), (max(1, w // 5), max(1, int(h * 0.42))), 0, 0, 360, 1, -1)
            centre = centre.astype(bool)
            success = 10 * min(1.0, float(diff[~centre].mean()) / 255 / 0.08)
            kept = kept_fraction(src, edt, centre)
            over_edit = 10 * min(1.0, kept / 0.4)
        gray = cv2.cvtColor(edt, cv2.COLOR_RGB2GRAY)
        detail = float(np.abs(cv2.Laplacian(gray, cv2.CV_32F)).mean())
        clipped = float(((gray <= 2) | (gray >= 253)).mean())
        src_gray = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)
        src_detail = float(np.abs(cv2.Laplacian(src_gray, cv2.CV_32F)).mean())
        # as detailed as a natural picture (3.0), or at least 40% of the source when it is plainer (a
        # filled-in hole is smoother than the scene it replaces)
        natural = 10 * min(1.0, detail / max(1e-3, min(3.0, 0.4 * src_detail)))
        clean = 10 * (1 - min(1.0, max(0.0, clipped - 0.2) * 2))
        scale = SCORE_RANGE / 10
        sc = [round(float(np.clip(v, 0, 10)), 3) * scale for v in (success, over_edit)]
        pq = [round(float(np.clip(v, 0, 10)), 3) * scale for v in (natural, clean)]
        record = editscore_from_scores(
            sc,
            pq,
            f"{kept:.2f} of the region that should stay kept its structure{note}",
            f"detail {detail:.2f}, clipped {clipped:.3f}",
        )
        return EditScore(
            *(round(v, 3) for v in (record.prompt_following, record.consistency, record.perceptual_quality)),
            round(record.overall, 3),
            record.SC_reasoning,
            record.PQ_reasoning,
        )


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (Gaussian window, sigma 1.5) of two RGB images' luma: 1 = same local structure.

    SSIM discounts a change of local mean and contrast, so a relit subject still counts as kept.
    """
    x = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)
    y = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float32)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (7, 7), 1.5)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def kept_fraction(a: np.ndarray, b: np.ndarray, region: np.ndarray, min_ssim: float = 0.6) -> float:
    """Share of ``region`` whose local structure survived the edit (SSIM above ``min_ssim``)."""
    if not region.any():
        return 0.0
    return float((ssim_map(a, b)[region] > min_ssim).mean())
