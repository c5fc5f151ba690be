"""Procedural themed backgrounds and procedural motion for the reference image editor and animator.

No model is involved: a scene's *look* (colours, a skyline kind, motion kinds; see ``taxonomy.Look``)
becomes a plain painted background, and motion is added by smooth displacement fields (drift, sway,
ripple), overlays (fog, flicker) and particles (snow, rain, petals, leaves, embers). Everything is
seeded, so the same inputs give the same pixels in every process.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..taxonomy import Look, find_in_prompt, stable_hash

#: Row (as a fraction of the height) where the rendered horizon sits.
HORIZON = 0.56

FALLBACK_LOOK = Look((120, 150, 200), (210, 210, 200), (90, 100, 80), "hills", ("drift", "sway"))


def look_for_prompt(prompt: str) -> Look:
    """The look of the taxonomy scene the prompt names, else a neutral outdoor look."""
    found = find_in_prompt(prompt)
    return found[2] if found else FALLBACK_LOOK


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int = 6) -> np.ndarray:
    """Low-frequency noise in [0, 1] (random cells upsampled with cubic interpolation)."""
    small = rng.random((cells, max(2, cells * width // max(height, 1))), dtype=np.float32)
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(big, 0.0, 1.0)


def _ridge(rng: np.random.Generator, width: int, base: float, amp: float, waves: int) -> np.ndarray:
    x = np.linspace(0, 1, width, dtype=np.float32)
    y = np.full(width, base, np.float32)
    for k in range(1, waves + 1):
        y += amp / k * np.sin(2 * np.pi * (k * x * rng.uniform(0.6, 1.4) + rng.random()))
    return y


def render_background(look: Look, height: int, width: int, seed: int) -> np.ndarray:
    """A ``(H, W, 3)`` uint8 painted background for ``look``."""
    rng = np.random.default_rng(seed)
    hz = int(height * HORIZON)
    yy = np.arange(height, dtype=np.float32)[:, None, None]
    sky, horizon, ground = (np.asarray(c, np.float32) for c in (look.sky, look.horizon, look.ground))
    t_sky = np.clip(yy / max(hz, 1), 0, 1)
    t_ground = np.clip((yy - hz) / max(height - hz, 1), 0, 1)
    img = np.where(yy < hz, sky + (horizon - sky) * t_sky, ground * (1.0 - 0.35 * t_ground) + horizon * 0.1)
    img = np.broadcast_to(img, (height, width, 3)).copy()
    img *= (0.9 + 0.2 * smooth_noise(rng, height, width))[..., None]
    xs = np.arange(width)
    rows = np.arange(height)[:, None]
    dark = np.asarray(look.ground, np.float32) * 0.45 + 10
    if look.skyline in ("hills", "dunes", "peaks", "trees"):
        for layer in range(2):
            base = hz - height * (0.02 + 0.08 * (1 - layer))
            amp = height * (0.10 if look.skyline == "peaks" else 0.04)
            ridge = _ridge(rng, width, base, amp, 4 if look.skyline != "dunes" else 2)
            if look.skyline == "trees":  # bumpy crowns
                ridge -= height * 0.03 * np.abs(np.sin(xs * (14 + 6 * layer) * np.pi / width + layer))
            shade = dark * (0.7 + 0.3 * layer) + horizon * 0.2 * (1 - layer)
            region = (rows >= ridge[None, :]) & (rows < hz + 2)
            img[region] = shade
            if look.skyline == "peaks" and layer == 0:
                img[region & (rows < ridge[None, :] + height * 0.04)] = (235, 238, 245)
    elif look.skyline == "city":
        x = 0
        while x < width:
            w = int(rng.integers(max(4, width // 40), max(6, width // 12)))
            top = int(hz - rng.uniform(0.08, 0.38) * height)
            img[top:hz, x : x + w - 2] = dark
            lit = rng.random(((hz - top) // 8 + 1, w // 6 + 1)) < 0.3
            for r, c in np.argwhere(lit):
                y0, x0 = top + 3 + r * 8, x + 2 + c * 6
                if y0 + 3 < hz and x0 + 2 < min(width, x + w - 2):
                    img[y0 : y0 + 3, x0 : x0 + 2] = (250, 220, 140)
            x += w
    elif look.skyline == "sea":
        band = np.broadcast_to((rows >= hz) & (rows < height), (height, width))
        waves = 0.9 + 0.1 * np.sin(rows * 0.9 + xs[None, :] * 0.05)
        img[band] = (np.asarray(look.ground, np.float32) * waves[..., None])[band]
    if look.brightness > 0.75:  # a sun low in the sky
        cx, cy, r = int(width * rng.uniform(0.15, 0.85)), int(hz * 0.35), max(3, height // 18)
        cv2.circle(img, (cx, cy), r, (255, 245, 210), -1, lineType=cv2.LINE_AA)
    img *= look.brightness
    return stylise(np.clip(img, 0, 255).astype(np.uint8), look.style)


def stylise(img: np.ndarray, style: str) -> np.ndarray:
    """Cheap global looks for the style theme."""
    if style == "noir":
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        g = np.clip((g - 128) * 1.4 + 128, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    if style == "sepia":
        m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
        return np.clip(img.astype(np.float32) @ m.T, 0, 255).astype(np.uint8)
    if style == "neon":
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = np.clip(hsv[..., 1].astype(np.int16) + 60, 0, 255).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if style == "paint":
        return ((cv2.GaussianBlur(img, (0, 0), 2) // 32) * 32 + 16).astype(np.uint8)
    if style == "ink":
        edges = cv2.Canny(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 40, 120)
        out = img.copy()
        out[edges > 0] = 20
        return out
    return img


# -- motion --------------------------------------------------------------------------------------
PARTICLES = {  # colour, radius (fraction of height), velocity (dx, dy) in fractions of height per frame
    "snow": ((245, 248, 255), 0.004, (0.002, 0.006)),
    "rain": ((200, 210, 230), 0.0, (0.004, 0.04)),
    "petals": ((250, 190, 210), 0.005, (0.004, 0.004)),
    "leaves": ((200, 110, 40), 0.006, (0.003, 0.006)),
    "embers": ((255, 160, 60), 0.003, (0.001, -0.006)),
}


def animate_image(image: np.ndarray, look: Look, num_frames: int, seed: int) -> np.ndarray:
    """``(num_frames, H, W, 3)`` uint8: ``image`` brought to life with the look's motion kinds.

    Frame 0 is the input itself (an image-to-video model starts from its input frame).
    """
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    base = image.astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    hz = h * HORIZON
    upper = np.clip((hz - yy) / max(hz, 1), 0, 1)  # 1 at the top, 0 from the horizon down
    lower = np.clip((yy - hz * 0.8) / max(h - hz * 0.8, 1), 0, 1)
    kinds = set(look.motion)
    fog = smooth_noise(rng, h, w * 2, cells=4) if "fog" in kinds else None
    clouds = None
    if "drift" in kinds:  # soft cloud banks that slide across the sky
        noise = smooth_noise(rng, h, w * 2, cells=5)
        clouds = (np.clip((noise - 0.55) / 0.3, 0, 1) * 0.6 * np.tile(upper, (1, 2))).astype(np.float32)
    phase = smooth_noise(rng, h, w, cells=8) * 6.28 if "flicker" in kinds else None
    particles = []
    for kind in (k for k in look.motion if k in PARTICLES):  # in look order: sets iterate by salted hash
        colour, radius, (vx, vy) = PARTICLES[kind]
        n = 160 if kind == "rain" else 120
        pos = rng.random((n, 2)) * (w, h)
        speed = rng.uniform(0.6, 1.4, size=(n, 1)) * (vx * h, vy * h)
        particles.append((kind, colour, max(1, round(radius * h)), pos, speed, rng.random(n) * 6.28))
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    frames[0] = image
    band = int(hz * 0.8)  # displacements act below this row only (ground, water, vegetation)
    by, bx = yy[band:], xx[band:]
    low = lower[band:]
    bright = None
    if phase is not None:
        bright = (cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) > 153).astype(np.float32)
    top = int(hz)
    for t in range(1, num_frames):
        frame = base.copy()
        if kinds & {"sway", "ripple"}:
            dx = np.zeros_like(by)
            dy = np.zeros_like(by)
            if "sway" in kinds:
                dx += low * (0.004 * w) * np.sin(2 * np.pi * t / 24 + by * 0.02)
            if "ripple" in kinds:
                dx += low * 1.5 * np.sin(by * 0.35 + t * 0.5)
                dy += low * 1.0 * np.sin(bx * 0.05 + t * 0.4)
            frame[band:] = cv2.remap(
                base, bx + dx, by + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            )
        if clouds is not None:
            shift = int(t * w * 0.003) % w
            cover = clouds[:top, shift : shift + w, None]
            frame[:top] = frame[:top] * (1 - cover) + 240 * cover
        if fog is not None:
            shift = int(t * w * 0.004) % w
            veil = (fog[:, shift : shift + w] * 0.35 * (0.4 + 0.6 * (1 - upper)))[..., None]
            frame = frame * (1 - veil) + 225 * veil
        if bright is not None:
            gain = 1 + 0.12 * np.sin(t * 0.9 + phase) * bright
            frame = frame * gain[..., None]
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        for kind, colour, radius, pos, speed, wobble in particles:
            p = pos + speed * t
            if kind in ("snow", "petals", "leaves"):
                p[:, 0] += np.sin(wobble + t * 0.2) * 0.01 * h
            p = np.mod(p, (w, h))
            for (x, y), (vx, vy) in zip(p.astype(int), speed, strict=True):
                if kind == "rain":
                    cv2.line(
                        frame,
                        (int(x), int(y)),
                        (int(x - vx * 0.5), int(y - vy * 0.5)),
                        colour,
                        1,
                        cv2.LINE_AA,
                    )
                else:
                    cv2.circle(frame, (int(x), int(y)), radius, colour, -1, cv2.LINE_AA)
        frames[t] = frame
    return frames


def prompt_seed(prompt: str, seed: int) -> int:
    """A per-instruction seed: the same prompt and seed paint the same background in every process."""
    return stable_hash("render", prompt, seed)
