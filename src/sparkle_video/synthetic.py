"""Procedural, seeded clips that look like a Sparkle pair: for the demo, docs and tests.

A pair is a moving foreground (a shaded disc with a "head") over a *static* textured source background,
and the same foreground, same motion, mildly relit, over a *moving* new background, which is also
returned alone (what stage 3 of the pipeline generates) together with the exact foreground mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import BENCH_THEMES, sample_id
from .masks import pixels_to_qwen_box

#: A small scene taxonomy per theme: subtheme -> scenes (the real one has ~22 subthemes, 97 bench scenes).
TAXONOMY: dict[str, dict[str, list[str]]] = {
    "location": {"urban": ["rooftop overlooking skyline", "busy night market"], "rural": ["vineyard rows with rustling leaves"]},
    "season": {"winter": ["snowy pine forest in a blizzard"], "spring": ["orchard with falling blossoms"]},
    "time": {"dusk": ["harbour at sunset with drifting clouds"], "night": ["neon street in the rain"]},
    "style": {"cinematic": ["film noir alley with swirling fog"], "art": ["watercolour village with flowing river"]},
}


@dataclass
class SyntheticPair:
    source: np.ndarray  # (T, H, W, 3) uint8, static background
    edited: np.ndarray  # (T, H, W, 3) uint8, moving background
    background: np.ndarray  # (T, H, W, 3) uint8, the moving background alone
    mask: np.ndarray  # (T, H, W) bool, the foreground
    box_r1: tuple[int, int, int, int]  # Qwen [0, 1000] box of the foreground on frame 0


def _texture(rng: np.random.Generator, height: int, width: int, palette: np.ndarray) -> np.ndarray:
    """Smooth coloured noise: a few random sinusoids mixed into a palette (compresses like real footage)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.zeros((height, width), np.float32)
    for _ in range(4):
        fx, fy = rng.uniform(0.01, 0.06, size=2)
        field += np.sin(xx * fx + yy * fy + rng.uniform(0, 6.28))
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    return palette[0] + field[..., None] * (palette[1] - palette[0])


def make_pair(seed: int, num_frames: int = 17, height: int = 128, width: int = 224, speed: float = 3.0) -> SyntheticPair:
    """A deterministic synthetic Sparkle pair; ``speed`` is the background's motion in px/frame."""
    rng = np.random.default_rng(seed)
    src_palette = rng.uniform(30, 220, size=(2, 3)).astype(np.float32)
    new_palette = rng.uniform(30, 220, size=(2, 3)).astype(np.float32)
    static_bg = _texture(rng, height, width, src_palette)
    wide = _texture(rng, height, width * 2, new_palette)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = min(height, width) * 0.18
    fg_color = rng.uniform(60, 255, size=3).astype(np.float32)
    source = np.empty((num_frames, height, width, 3), np.uint8)
    edited = np.empty_like(source)
    background = np.empty_like(source)
    mask = np.zeros((num_frames, height, width), bool)
    for t in range(num_frames):
        cx = width * 0.3 + t * (width * 0.4 / max(1, num_frames - 1))
        cy = height * 0.55 + np.sin(t / 3.0) * height * 0.05
        body = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        head = (xx - cx) ** 2 + (yy - (cy - radius * 1.3)) ** 2 <= (radius * 0.5) ** 2
        fg = body | head
        shade = 0.75 + 0.25 * np.clip((cx - xx) / radius, -1, 1)[..., None]
        fg_pixels = fg_color * shade
        shift = round(t * speed) % width
        moving = np.roll(wide, -shift, axis=1)[:, :width]
        ripple = 8 * np.sin(xx / 9.0 + t * 0.7)[..., None]
        bg_t = np.clip(moving + ripple, 0, 255)
        background[t] = bg_t.astype(np.uint8)
        source[t] = np.where(fg[..., None], fg_pixels, static_bg).astype(np.uint8)
        relit = np.clip(fg_pixels * 0.85 + new_palette.mean(0) * 0.15, 0, 255)
        edited[t] = np.where(fg[..., None], relit, bg_t).astype(np.uint8)
        mask[t] = fg
    ys, xs = np.nonzero(mask[0])
    box = pixels_to_qwen_box((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), width, height)
    return SyntheticPair(source, edited, background, mask, box)


def _prompt(theme: str, subtheme: str, scene: str) -> str:
    verbs = {"location": "Move the subject to", "season": "Change the season to", "time": "Set the scene at",
             "style": "Restyle the background as", "openve3m": "Replace the background with"}
    return f"{verbs.get(theme, 'Replace the background with')} a {scene}, with lively motion in the background ({subtheme})."


def make_demo_records(
    num_per_theme: int = 2,
    themes: tuple[str, ...] = BENCH_THEMES,
    seed: int = 0,
    num_frames: int = 17,
    height: int = 128,
    width: int = 224,
    intermediates: bool = True,
) -> list:
    """``SampleRecord``s for a small procedural Sparkle dataset (used by ``sparkle-video demo``)."""
    from .writer import SampleRecord

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
            extra = {}
            if intermediates:
                extra = {
                    "mask": pair.mask,
                    "background": pair.background,
                    "source_frame0": pair.source[0],
                    "edited_frame0": pair.edited[0],
                    "grounding_r1": {"id": sid, "objects": [{"label": "person", "bbox_2d": list(pair.box_r1)}]},
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
                    **extra,
                )
            )
    return records
