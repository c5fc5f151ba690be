"""Procedural, seeded clips that look like a Sparkle pair: for the demo, docs and tests.

A pair is a moving foreground (a shaded disc with a "head") over a *static* textured source background,
and the same foreground, same motion, mildly relit, over a *moving* new background, which is also
returned alone (what stage 3 of the pipeline generates) together with the exact foreground mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .layout import BENCH_THEMES, sample_id
from .masks import pixels_to_qwen_box
from .writer import SampleRecord

#: A small scene taxonomy per theme: subtheme -> scenes (the real one has ~22 subthemes, 97 bench scenes).
TAXONOMY: dict[str, dict[str, list[str]]] = {
    "location": {
        "urban": ["rooftop overlooking skyline", "busy night market"],
        "rural": ["vineyard rows with rustling leaves"],
    },
    "season": {"winter": ["snowy pine forest in a blizzard"], "spring": ["orchard with falling blossoms"]},
    "time": {"dusk": ["harbour at sunset with drifting clouds"], "night": ["neon street in the rain"]},
    "style": {
        "cinematic": ["film noir alley with swirling fog"],
        "art": ["watercolour village with flowing river"],
    },
}


@dataclass
class SyntheticPair:
    """One procedural pair with the artefacts the pipeline would produce for it (exact, not estimated)."""

    source: np.ndarray  # (T, H, W, 3) uint8, static background
    edited: np.ndarray  # (T, H, W, 3) uint8, moving background
    background: np.ndarray  # (T, H, W, 3) uint8, the moving background alone
    mask: np.ndarray  # (T, H, W) bool, the foreground
    box_r1: tuple[int, int, int, int]  # Qwen [0, 1000] box of the foreground on frame 0

    def canny(self, low: int = 50, high: int = 150) -> np.ndarray:
        """Stage 5's control video: source edges inside the mask fused with background edges outside it."""
        return fused_canny(self.source, self.background, self.mask, low, high)


def canny_edges(frames: np.ndarray, low: int = 50, high: int = 150) -> np.ndarray:
    """(T, H, W) uint8 Canny edge maps (0/255) of (T, H, W, 3) RGB frames."""
    return np.stack([cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), low, high) for f in frames])


def fused_canny(
    source: np.ndarray, background: np.ndarray, mask: np.ndarray, low: int = 50, high: int = 150
) -> np.ndarray:
    """Decoupled guidance as a (T, H, W, 3) video: foreground edges from the source, the rest from the background."""
    edges = np.where(mask, canny_edges(source, low, high), canny_edges(background, low, high))
    return np.repeat(edges[..., None], 3, axis=-1)


def _texture(rng: np.random.Generator, height: int, width: int, palette: np.ndarray) -> np.ndarray:
    """Smooth coloured noise: a few random sinusoids mixed into a palette (compresses like real footage)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.zeros((height, width), np.float32)
    for _ in range(4):
        fx, fy = rng.uniform(0.01, 0.06, size=2)
        field += np.sin(xx * fx + yy * fy + rng.uniform(0, 6.28))
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    return palette[0] + field[..., None] * (palette[1] - palette[0])


def _skyline(rng: np.random.Generator, height: int, width: int, count: int = 8) -> np.ndarray:
    """(H, W, 1) shading with hard-edged "buildings", so the new background has edges for Canny to find."""
    xx = np.arange(width)[None, :]
    yy = np.arange(height)[:, None]
    shade = np.ones((height, width), np.float32)
    for x0, w, top in zip(
        rng.integers(0, width, count),
        rng.integers(width // 60 + 2, width // 20 + 4, count),
        rng.integers(height // 4, height // 2, count),
        strict=True,
    ):
        shade[(xx >= x0) & (xx < x0 + w) & (yy >= top)] = 0.6
    return shade[..., None]


def make_pair(
    seed: int, num_frames: int = 17, height: int = 128, width: int = 224, speed: float = 3.0
) -> SyntheticPair:
    """A deterministic synthetic Sparkle pair; ``speed`` is the background's motion in px/frame."""
    rng = np.random.default_rng(seed)
    src_palette = rng.uniform(30, 220, size=(2, 3)).astype(np.float32)
    new_palette = rng.uniform(30, 220, size=(2, 3)).astype(np.float32)
    static_bg = _texture(rng, height, width, src_palette)
    wide = _texture(rng, height, width * 2, new_palette)
    yy = np.arange(height, dtype=np.float32)[:, None]  # 1-D grids: everything but the blend broadcasts
    xx = np.arange(width, dtype=np.float32)[None, :]
    radius = min(height, width) * 0.18
    fg_color = rng.uniform(60, 255, size=3).astype(np.float32)
    wide = (wide * _skyline(rng, height, width * 2)).astype(np.float32)  # drawn last: the source is unchanged
    static_u8 = static_bg.astype(np.uint8)
    relit_tint = new_palette.mean(0) * 0.15
    source = np.empty((num_frames, height, width, 3), np.uint8)
    edited = np.empty_like(source)
    background = np.empty_like(source)
    mask = np.zeros((num_frames, height, width), bool)
    buf = np.empty((height, width, 3), np.float32)
    for t in range(num_frames):
        cx = width * 0.3 + t * (width * 0.4 / max(1, num_frames - 1))
        cy = height * 0.55 + np.sin(t / 3.0) * height * 0.05
        # the figure (a body disc and a head disc) is drawn inside its bounding box only
        x0, x1 = max(0, int(cx - radius) - 1), min(width, int(cx + radius) + 2)
        y0, y1 = max(0, int(cy - radius * 1.8) - 1), min(height, int(cy + radius) + 2)
        bx, by = xx[:, x0:x1], yy[y0:y1]
        dx2 = (bx - cx) ** 2
        fg = (dx2 + (by - cy) ** 2 <= radius**2) | (
            dx2 + (by - (cy - radius * 1.3)) ** 2 <= (radius * 0.5) ** 2
        )
        shade = 0.75 + 0.25 * np.clip((cx - bx) / radius, -1, 1)[..., None]  # (1, w, 1): lit from the left
        fg_pixels = fg_color * shade
        relit = np.clip(fg_pixels * 0.85 + relit_tint, 0, 255).astype(np.uint8)
        shift = round(t * speed) % width
        np.add(wide[:, shift : shift + width], 8 * np.sin(xx / 9.0 + t * 0.7)[..., None], out=buf)
        background[t] = np.clip(buf, 0, 255, out=buf)
        mask[t, y0:y1, x0:x1] = fg
        source[t] = static_u8
        edited[t] = background[t]
        box = (slice(y0, y1), slice(x0, x1))
        source[t][box] = np.where(fg[..., None], fg_pixels.astype(np.uint8), source[t][box])
        edited[t][box] = np.where(fg[..., None], relit, edited[t][box])
    return SyntheticPair(source, edited, background, mask, mask_qwen_box(mask[0]))


def mask_qwen_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Qwen [0, 1000] box around a (H, W) mask, as a grounding VLM would report it; empty -> (0, 0, 0, 0)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0, 0, 0, 0)
    height, width = mask.shape
    return pixels_to_qwen_box((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), width, height)


def anchor_frames(num_frames: int, fps: float, rate: float = 2.0) -> list[int]:
    """Frame indices sampled at ``rate`` per second (stage 4 re-grounds the foreground on these)."""
    step = max(1, round(fps / rate))
    return list(range(0, num_frames, step))


def _grounding(sid: str, pair: SyntheticPair, fps: float) -> tuple[dict, dict]:
    """Round-1 (frame 0) and round-2 (2 fps anchors) grounding records for one pair."""
    r1 = {"id": sid, "objects": [{"label": "person", "bbox_2d": list(pair.box_r1)}]}
    frames = anchor_frames(len(pair.mask), fps)
    r2 = {
        "id": sid,
        "frame_indices": frames,
        "frame_objects": [
            [{"label": "person", "bbox_2d": list(mask_qwen_box(pair.mask[i]))}] for i in frames
        ],
    }
    return r1, r2


def score_frame_indices(num_frames: int, count: int = 4) -> list[int]:
    """``count`` non-first frames spread over the clip, as stage 5 scores them (1, 26, 51, 76 for 81 frames)."""
    step = max(1, (num_frames - 6) // (count - 1))
    return [min(num_frames - 1, 1 + k * step) for k in range(count)]


def _editscore(rng: np.random.Generator, low: float) -> dict:
    """One image EditScore record body: three 0-10 scores, their overall, and short reasoning strings."""
    pf, cons, pq = (round(float(v), 2) for v in rng.uniform(low, 10.0, size=3))
    return {
        "prompt_following": pf,
        "consistency": cons,
        "perceptual_quality": pq,
        "overall": round((pf + cons + pq) / 3, 2),
        "SC_reasoning": "the edit follows the instruction and keeps the subject",
        "PQ_reasoning": "clean edges, no visible artefacts",
    }


def demo_scores(seed: int, prompt: str, num_frames: int) -> dict[str, dict]:
    """Seeded stage score records (schema of the official JSONLs) for one sample; values vary per sample.

    The values are made up, not measured: they exist so that ``min_scores`` filters and artefact readers
    have something to work on. Every sample passes the pipeline's thresholds (8, 8.5, 8) except for a
    spread above them.
    """
    rng = np.random.default_rng(10_000 + seed)
    frames = score_frame_indices(num_frames)
    video = []
    for _ in frames:
        sc, pq = (round(float(v), 2) for v in rng.uniform(7.5, 10.0, size=2))
        video.append({"SC_score": sc, "PQ_score": pq, "O_score": round(float(np.sqrt(sc * pq)), 2)})
    return {
        "edited_frame0_score": {"prompt": prompt, "editscore": _editscore(rng, 8.0)},
        "edited_frame0_foreground_removed_score": {"prompt": prompt, "editscore": _editscore(rng, 8.5)},
        "edited_video_score": {"prompt": prompt, "frame_indices": frames, "editscore": video},
    }


def _prompt(theme: str, subtheme: str, scene: str) -> str:
    verbs = {
        "location": "Move the subject to",
        "season": "Change the season to",
        "time": "Set the scene at",
        "style": "Restyle the background as",
        "openve3m": "Replace the background with",
    }
    return f"{verbs.get(theme, 'Replace the background with')} a {scene}, with lively motion in the background ({subtheme})."


def make_demo_records(
    num_per_theme: int = 2,
    themes: tuple[str, ...] = BENCH_THEMES,
    seed: int = 0,
    num_frames: int = 17,
    height: int = 128,
    width: int = 224,
    intermediates: bool = True,
    fps: float = 16,
) -> list[SampleRecord]:
    """``SampleRecord``s for a small procedural Sparkle dataset (used by ``sparkle-video demo``).

    With ``intermediates`` each record also carries the artefacts stages 2-5 would leave (frame-0 images,
    groundings, the clean background video, the BAIT mask and the fused Canny control video).
    """
    records = []
    for t_index, theme in enumerate(themes):
        taxonomy = TAXONOMY.get(theme, {"misc": ["open field"]})
        subthemes = list(taxonomy)
        for n in range(num_per_theme):
            subtheme = subthemes[n % len(subthemes)]  # alternate subthemes, then their scenes
            scenes = taxonomy[subtheme]
            scene = scenes[(n // len(subthemes)) % len(scenes)]
            pair = make_pair(seed + 1000 * t_index + n, num_frames, height, width)
            sid = sample_id(theme, n)
            prompt = _prompt(theme, subtheme, scene)
            extra: dict = {}
            if intermediates:
                r1, r2 = _grounding(sid, pair, fps)
                extra = {
                    "mask": pair.mask,
                    "background": pair.background,
                    "canny": pair.canny(),
                    "source_frame0": pair.source[0],
                    "edited_frame0": pair.edited[0],
                    "edited_frame0_foreground_removed": pair.background[0],
                    "grounding_r1": r1,
                    "grounding_r2": r2,
                    "scores": demo_scores(seed + 1000 * t_index + n, prompt, num_frames),
                }
            records.append(
                SampleRecord(
                    id=sid,
                    theme=theme,
                    prompt=prompt,
                    source=pair.source,
                    edited=pair.edited,
                    chosen_keyword=None if theme == "openve3m" else f"{subtheme}: {scene}",
                    original_scene="a person in front of a textured wall",
                    fps=fps,
                    **extra,
                )
            )
    return records


def make_bench_records(
    num_per_theme: int = 2,
    themes: tuple[str, ...] = BENCH_THEMES,
    seed: int = 100,
    num_frames: int = 17,
    height: int = 128,
    width: int = 224,
    fps: float = 16,
    first_number: int = 10_000,
) -> list[SampleRecord]:
    """``SampleRecord``s for a small procedural Sparkle-Bench: source videos, instructions and keywords.

    As in the real benchmark there is no edited video; the clean new background's first frame is the
    optional reference image. Ids start at ``first_number`` so that they never collide with training ids.
    """
    records = []
    for t_index, theme in enumerate(themes):
        taxonomy = TAXONOMY[theme]
        subthemes = list(taxonomy)
        for n in range(num_per_theme):
            subtheme = subthemes[n % len(subthemes)]
            scene = taxonomy[subtheme][(n // len(subthemes)) % len(taxonomy[subtheme])]
            pair = make_pair(seed + 1000 * t_index + n, num_frames, height, width)
            records.append(
                SampleRecord(
                    id=sample_id(theme, first_number + n),
                    theme=theme,
                    prompt=_prompt(theme, subtheme, scene),
                    source=pair.source,
                    chosen_keyword=f"{subtheme}: {scene}",
                    original_scene="a person in front of a textured wall",
                    fps=fps,
                    ref_image=pair.background[0],
                )
            )
    return records
