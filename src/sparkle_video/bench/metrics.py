"""Judge-free metrics for one (source, edited) pair of a background-replacement edit.

A VLM judge costs money and cannot be checked; these four numbers need no model and no network, so any
result set can be scored offline and a judge can be sanity-checked against them. All work happens at a
small working resolution (default 144 px high), which keeps one 81-frame 720p pair around a second on
two CPU cores.

Every metric is "higher is better" except ``background_dynamics``, which is "higher is livelier":

* ``background_dynamics`` in [0, 1): ``1 - exp(-m / 0.25)`` where ``m`` is the mean optical-flow
  magnitude of the edited video's background, in pixels per frame at a 256 px wide frame
  (``background_motion_px`` reports ``m`` itself). Each pixel's flow is weighted by how well flow is
  constrained there (local texture in both frames): on flat regions (sky, a white wall, a night sky
  with sensor noise) optical flow returns noise, and a viewer sees no motion, so they count as still.
  The band around the foreground (``bg_margin``) is left out, so the subject's own motion, which flow
  smears into its surroundings, does not count either. 0 = frozen background; released Sparkle edits
  move about 0.03-0.15 px/frame at that width (0.1-0.45 after the map), static backgrounds below 0.01
  px/frame (below 0.04).
* ``foreground_integrity`` in [0, 1]: mean structural similarity between source and edited grey frames
  over the foreground's interior, using SSIM's contrast-structure term only (no luminance term), on a
  few frames decoded at a higher "detail" resolution (default 360 px high). The protocol asks for a
  foreground relit to match the new background, so a global brightness or colour-temperature change
  barely moves it; blur, warping, displacement, replacement or loss of the subject drops it a lot.
* ``foreground_motion_consistency`` in [0, 1]: ``1 - sum|f_e - f_s| / sum(|f_e| + |f_s| + eps)`` over
  foreground pixels, with ``f_s``/``f_e`` the source/edited optical flow. 1 = same motion, 0 = unrelated
  or frozen.
* ``temporal_stability`` in (0, 1]: ``exp(-r / scale)`` where ``r`` is the mean absolute residual (grey
  levels) after warping each edited frame onto the previous one with its own flow: motion is explained
  away, flicker is not.

The foreground comes from a BAIT mask when one is given; otherwise it is estimated from the source
alone (Sparkle sources are fixed-camera): pixels that differ from the source's temporal median are the
moving subject. Source and edited clips may differ in size (1280x720 vs 1280x704 model outputs) and in
frame count: both are resized to one working size and compared frame by frame over the common length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from ..data.video import VideoReader, VideoSourceLike, as_video_reader
from ..errors import SparkleDataError

#: Names of the four headline metrics, in report order.
METRIC_NAMES: tuple[str, ...] = (
    "background_dynamics",
    "foreground_integrity",
    "foreground_motion_consistency",
    "temporal_stability",
)

#: Flow magnitudes are expressed at this frame width so numbers do not depend on the working size.
REFERENCE_WIDTH = 256


@dataclass(frozen=True)
class MetricConfig:
    """Knobs of the judge-free metrics; the defaults are what reports use."""

    work_height: int = 144
    max_frames: int = 81
    #: Flow (px/frame at 256 px width) at which background_dynamics reaches 1 - 1/e.
    dynamics_scale_px: float = 0.25
    #: Height of the grey frames foreground_integrity compares (detail a 144 px frame no longer shows:
    #: a 4 px blur at 720p is 0.8 px at 144 px); ``detail_frames`` evenly spread frames are used.
    detail_height: int = 360
    detail_frames: int = 8
    #: Warp residual (grey levels) at which temporal_stability falls to 1/e.
    stability_scale: float = 10.0
    #: Flow floor (px/frame) so that two still foregrounds count as consistent.
    motion_eps_px: float = 0.25
    #: Grey-level difference from the temporal median that marks a pixel as foreground.
    fg_threshold: float = 25.0
    #: Foreground pixels are grown by this many working pixels before the background is taken (optical
    #: flow smears a moving subject's motion into a band around it).
    bg_margin: int = 8
    #: Below this foreground fraction the estimate falls back to a centred ellipse prior.
    min_fg_fraction: float = 0.002
    #: Texture gate for background flow, on the smaller structure-tensor eigenvalue (grey levels^2 per
    #: px^2 over a 5x5 window at the working size): flow counts not at all below ``texture_floor`` (flat
    #: sky, a white wall: optical flow there is noise), fully above ``texture_full``, linearly between.
    texture_floor: float = 0.5
    texture_full: float = 2.0


@dataclass
class PairFrames:
    """A source/edited pair decoded at one working size and trimmed to a common length."""

    source: np.ndarray  # (T, h, w, 3) uint8
    edited: np.ndarray  # (T, h, w, 3) uint8
    source_frames: int
    edited_frames: int
    source_size: tuple[int, int]  # (height, width) as stored
    edited_size: tuple[int, int]
    #: Grey frames at the detail size for frames ``detail_indices``: ``(K, H, W)`` uint8 each.
    source_detail: np.ndarray | None = None
    edited_detail: np.ndarray | None = None
    detail_indices: tuple[int, ...] = ()


@dataclass
class PairMetrics:
    """The metrics of one pair, plus what they were computed from."""

    background_dynamics: float
    foreground_integrity: float | None
    foreground_motion_consistency: float | None
    temporal_stability: float
    background_motion_px: float
    source_background_motion_px: float
    flicker_residual: float
    foreground_fraction: float
    mask: str  # "bait" | "estimated" | "prior"
    frames_compared: int
    source_frames: int
    edited_frames: int
    source_size: list[int] = field(default_factory=list)
    edited_size: list[int] = field(default_factory=list)
    #: The edit has fewer frames than its source (after the ``max_frames`` cap): a broken editor.
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


# -- decoding ------------------------------------------------------------------------------------
def working_size(height: int, width: int, work_height: int) -> tuple[int, int]:
    """``(h, w)`` with ``h = min(work_height, height)`` and the source aspect, both even."""
    h = min(work_height, height)
    w = max(2, round(h * width / height / 2) * 2)
    return h - h % 2, w


def decode_small(
    reader: VideoReader, n: int, size: tuple[int, int], detail: Sequence[int], detail_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """One decoding pass: the first ``n`` frames as RGB at ``size``, and frames ``detail`` as grey at
    ``detail_size``, each converted straight from the decoder's YUV by swscale (no full-size RGB)."""
    h, w = size
    small = np.empty((n, h, w, 3), np.uint8)
    grey = np.empty((len(detail), *detail_size), np.uint8)
    slot = {idx: k for k, idx in enumerate(detail)}
    count = 0
    for i, frame in enumerate(reader.iter_decoded(stop=n)):
        small[i] = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
        if i in slot:
            grey[slot[i]] = frame.to_ndarray(
                format="gray", width=detail_size[1], height=detail_size[0], interpolation="AREA"
            )
        count = i + 1
    if count < n:
        raise SparkleDataError(f"video is truncated: only {count} of {n} frames decode", path=reader.name)
    return small, grey


def load_pair(
    source: VideoSourceLike,
    edited: VideoSourceLike,
    config: MetricConfig = MetricConfig(),
) -> PairFrames:
    """Decode both clips at the source's working size, over their common first frames (plus a few grey
    frames at the detail size for foreground integrity), one clip per core.

    Model outputs keep the source's timing from frame 0 (they may be shorter and saved at another fps),
    so frame ``i`` of the edit is compared with frame ``i`` of the source.
    """
    src, edt = as_video_reader(source), as_video_reader(edited)
    n = min(src.num_frames, edt.num_frames, config.max_frames)
    if n < 2:
        raise SparkleDataError(f"need at least 2 frames to compare, got {n}", path=edt.name)
    size = working_size(src.height, src.width, config.work_height)
    detail_size = working_size(src.height, src.width, max(config.detail_height, size[0]))
    k = max(1, min(config.detail_frames, n))
    detail = tuple(sorted({round(float(x)) for x in np.linspace(0, n - 1, k)}))
    with ThreadPoolExecutor(max_workers=2) as pool:  # PyAV and swscale release the GIL
        fs = pool.submit(decode_small, src, n, size, detail, detail_size)
        fe = pool.submit(decode_small, edt, n, size, detail, detail_size)
        (s, sd), (e, ed) = fs.result(), fe.result()
    return PairFrames(
        s, e, src.num_frames, edt.num_frames, (src.height, src.width), (edt.height, edt.width), sd, ed, detail
    )


def to_gray(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3) uint8`` RGB -> ``(T, H, W) uint8`` luma."""
    t, h, w, _ = frames.shape
    return cv2.cvtColor(frames.reshape(t * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(t, h, w)


# -- foreground ----------------------------------------------------------------------------------
def centre_prior(shape: tuple[int, int, int]) -> np.ndarray:
    """A centred ellipse covering the middle third of the frame: where subjects usually are."""
    t, h, w = shape
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (max(1, w // 6), max(1, h // 3)), 0, 0, 360, 1, -1)
    return np.repeat(mask[None].astype(bool), t, axis=0)


def estimate_foreground(frames: np.ndarray, config: MetricConfig = MetricConfig()) -> tuple[np.ndarray, str]:
    """Foreground of a fixed-camera clip without a model: what departs from the temporal median.

    Returns ``(mask (T, H, W) bool, kind)`` with kind ``"estimated"``, or ``"prior"`` when nothing
    moves (then a centred ellipse is used so the foreground metrics still mean something).
    """
    x = frames if frames.ndim == 4 else frames[..., None]
    # The background of a fixed-camera clip is the per-pixel temporal median; up to 17 evenly spread
    # frames estimate it as well as all 81 at a fraction of the cost (np.partition, not a full sort).
    sample = x[:: max(1, len(x) // 16)]
    median = np.partition(sample, len(sample) // 2, axis=0)[len(sample) // 2].astype(np.int16)
    diff = np.abs(x.astype(np.int16) - median[None]).max(axis=-1)  # colour change counts, not just luma
    raw = (diff > config.fg_threshold).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    out = np.empty_like(raw)
    for i, m in enumerate(raw):
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel)
        out[i] = cv2.morphologyEx(m, cv2.MORPH_CLOSE, grow)
    mask = out.astype(bool)
    if mask.mean() < config.min_fg_fraction:
        return centre_prior(mask.shape), "prior"
    return mask, "estimated"


def fit_mask(mask: np.ndarray, num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """A ``(T', H', W')`` mask (e.g. BAIT, at source resolution) -> ``(num_frames, *size)``.

    Frames past the mask's end reuse its last frame (BAIT masks stop at 81 frames). Any non-zero value
    is foreground, as in :func:`~sparkle_video.data.masks.save_mask`.
    """
    m = np.asarray(mask, dtype=bool).view(np.uint8)
    if m.ndim != 3 or m.shape[0] == 0:
        raise ValueError(f"mask must be (T, H, W) with T >= 1, got {m.shape}")
    idx = np.minimum(np.arange(num_frames), m.shape[0] - 1)
    h, w = size
    return np.stack([cv2.resize(m[i], (w, h), interpolation=cv2.INTER_NEAREST) for i in idx]).astype(bool)


def interior(fg: np.ndarray, margin: int) -> np.ndarray:
    """``fg`` shrunk by ``margin`` pixels (frames whose mask would vanish keep it whole).

    Window-based comparisons near the subject's edge see the new background; the interior does not.
    """
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    out = fg.copy()
    for i, m in enumerate(fg):
        e = cv2.erode(m.astype(np.uint8), k).astype(bool)
        if e.any():
            out[i] = e
    return out


def background_region(fg: np.ndarray, margin: int) -> np.ndarray:
    """Pixels safely outside the foreground in both frames of each consecutive pair: ``(T-1, H, W)``."""
    if margin > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        grown = np.stack([cv2.dilate(m.astype(np.uint8), k) for m in fg]).astype(bool)
    else:
        grown = fg
    return ~(grown[:-1] | grown[1:])


# -- flow ----------------------------------------------------------------------------------------
def optical_flow(gray: np.ndarray) -> np.ndarray:
    """Dense forward flow between consecutive frames: ``(T-1, H, W, 2)`` float32.

    DIS with the fast preset refined down to half resolution: the stock fast preset stops at a quarter
    resolution, which smears a small subject's motion into its surroundings at working sizes.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    dis.setFinestScale(1)
    return np.stack([dis.calc(gray[i], gray[i + 1], None) for i in range(len(gray) - 1)])


def flow_magnitude(flow: np.ndarray) -> np.ndarray:
    return np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)


def texture_strength(gray: np.ndarray, window: int = 5) -> np.ndarray:
    """Smaller eigenvalue of the local structure tensor per pixel, ``(T, H, W)`` float32, in grey
    levels^2/px^2: how well optical flow is constrained there (0 on flat regions and along straight
    edges, where any flow fits the data and what comes out is noise)."""
    out = np.empty(gray.shape, np.float32)
    for i, g in enumerate(gray):
        x = g.astype(np.float32)
        ix = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        iy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        jxx = cv2.boxFilter(ix * ix, -1, (window, window))
        jyy = cv2.boxFilter(iy * iy, -1, (window, window))
        jxy = cv2.boxFilter(ix * iy, -1, (window, window))
        half = (jxx - jyy) / 2.0
        out[i] = (jxx + jyy) / 2.0 - np.sqrt(half * half + jxy * jxy)
    return out


def flow_reliability(gray: np.ndarray, floor: float = 0.5, full: float = 2.0) -> np.ndarray:
    """Weight in [0, 1] of each pixel's flow between frames ``t`` and ``t+1``: ``(T-1, H, W)``.

    Texture must be present in both frames (a texture that appears or vanishes is not motion).
    """
    tex = texture_strength(gray)
    both = np.minimum(tex[:-1], tex[1:])
    return np.clip((both - floor) / max(full - floor, 1e-6), 0.0, 1.0)


# -- the metrics (pure functions over arrays) ----------------------------------------------------
def background_motion(
    flow: np.ndarray, bg: np.ndarray, width: int, weight: np.ndarray | None = None
) -> float:
    """Mean background flow magnitude, in px/frame at :data:`REFERENCE_WIDTH`.

    With ``weight`` (see :func:`flow_reliability`) each pixel's flow counts by its weight and the sum
    is still divided by the number of background pixels: where flow cannot be observed, the
    background counts as still (a featureless background shows no motion to a viewer either).
    """
    if not bg.any():
        return float("nan")
    mag = flow_magnitude(flow)
    if weight is not None:
        mag = mag * weight
    return float(mag[bg].mean() * REFERENCE_WIDTH / width)


def background_dynamics(motion_px: float, scale_px: float = 0.25) -> float:
    """Saturating map of background motion to [0, 1): 0 = frozen, 1 - 1/e at ``scale_px``."""
    if math.isnan(motion_px):
        return float("nan")
    return float(1.0 - math.exp(-max(motion_px, 0.0) / scale_px))


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray, luminance: bool = True) -> float:
    """Mean SSIM (Gaussian window, sigma 1.5) of grey frames ``a``/``b`` over ``mask`` pixels.

    ``luminance=False`` keeps only SSIM's contrast-structure term: a brightness offset then changes
    nothing and a gain ``g`` only by ``2g / (1 + g^2)`` (0.98 for +-20%), while blur, warping and
    replacement still pull it towards 0.
    """
    if not mask.any():
        return float("nan")
    c1 = (0.01 * 255) ** 2 if luminance else 0.0
    c2 = (0.03 * 255) ** 2
    total, count = 0.0, 0
    for x, y, m in zip(a, b, mask, strict=True):
        if not m.any():
            continue
        x = x.astype(np.float32)
        y = y.astype(np.float32)

        def blur(z: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(z, (7, 7), 1.5)

        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        ssim = (2 * sxy + c2) / (sxx + syy + c2)
        if luminance:
            ssim = ssim * (2 * mx * my + c1) / (mx * mx + my * my + c1)
        total += float(ssim[m].sum())
        count += int(m.sum())
    return float(np.clip(total / count, 0.0, 1.0))


def motion_consistency(
    flow_src: np.ndarray, flow_edit: np.ndarray, fg_pairs: np.ndarray, eps_px: float
) -> float:
    """``1 - sum|f_e - f_s| / sum(|f_e| + |f_s| + eps)`` over foreground pixels, in [0, 1]."""
    if not fg_pairs.any():
        return float("nan")
    diff = flow_magnitude(flow_edit - flow_src)[fg_pairs]
    norm = flow_magnitude(flow_edit)[fg_pairs] + flow_magnitude(flow_src)[fg_pairs] + eps_px
    return float(np.clip(1.0 - diff.sum() / norm.sum(), 0.0, 1.0))


def warp_residual(gray: np.ndarray, flow: np.ndarray) -> float:
    """Mean |frame_t - frame_{t+1} warped back along the flow| in grey levels: motion-free change."""
    _, h, w = gray.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    total = 0.0
    for t in range(len(flow)):
        mx, my = xs + flow[t, ..., 0], ys + flow[t, ..., 1]
        warped = cv2.remap(gray[t + 1], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        valid = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        d = np.abs(warped.astype(np.float32) - gray[t].astype(np.float32))[valid]
        total += float(d.mean()) if d.size else 0.0
    return total / max(len(flow), 1)


def temporal_stability(residual: float, scale: float = 10.0) -> float:
    """``exp(-residual / scale)``: 1 = no unexplained change between frames."""
    return float(math.exp(-max(residual, 0.0) / scale))


def detail_integrity(pair: PairFrames, fg: np.ndarray) -> float:
    """Foreground integrity on the detail frames (see the module docstring): the working-size
    foreground mask is scaled up and its interior (3 working px in) compared without luminance."""
    if pair.source_detail is None or pair.edited_detail is None or not pair.detail_indices:
        return masked_ssim(to_gray(pair.source), to_gray(pair.edited), interior(fg, 3), luminance=False)
    _, dh, dw = pair.source_detail.shape
    scale = dh / fg.shape[1]
    masks = fit_mask(fg[list(pair.detail_indices)], len(pair.detail_indices), (dh, dw))
    return masked_ssim(
        pair.source_detail, pair.edited_detail, interior(masks, max(1, round(3 * scale))), luminance=False
    )


# -- orchestration -------------------------------------------------------------------------------
def pair_metrics(
    pair: PairFrames, mask: np.ndarray | None = None, config: MetricConfig = MetricConfig()
) -> PairMetrics:
    """All metrics of a decoded pair; ``mask`` is an optional BAIT foreground mask (any size)."""
    t, h, w, _ = pair.source.shape
    if mask is not None:
        fg, kind = fit_mask(mask, t, (h, w)), "bait"
    else:
        fg, kind = estimate_foreground(pair.source, config)
    gs, ge = to_gray(pair.source), to_gray(pair.edited)
    with ThreadPoolExecutor(max_workers=2) as pool:  # OpenCV releases the GIL: one clip per core
        fut_s = pool.submit(optical_flow, gs)
        flow_e = optical_flow(ge)
        flow_s = fut_s.result()
    bg = background_region(fg, config.bg_margin)
    motion = background_motion(flow_e, bg, w, flow_reliability(ge, config.texture_floor, config.texture_full))
    fg_pairs = fg[:-1] | fg[1:]
    residual = warp_residual(ge, flow_e)
    return PairMetrics(
        background_dynamics=background_dynamics(motion, config.dynamics_scale_px),
        foreground_integrity=detail_integrity(pair, fg),
        foreground_motion_consistency=motion_consistency(flow_s, flow_e, fg_pairs, config.motion_eps_px),
        temporal_stability=temporal_stability(residual, config.stability_scale),
        background_motion_px=motion,
        source_background_motion_px=background_motion(
            flow_s, bg, w, flow_reliability(gs, config.texture_floor, config.texture_full)
        ),
        flicker_residual=residual,
        foreground_fraction=float(fg.mean()),
        mask=kind,
        frames_compared=t,
        source_frames=pair.source_frames,
        edited_frames=pair.edited_frames,
        source_size=list(pair.source_size),
        edited_size=list(pair.edited_size),
        truncated=pair.edited_frames < min(pair.source_frames, config.max_frames),
    )


def compute_metrics(
    source: VideoSourceLike | VideoReader,
    edited: VideoSourceLike | VideoReader,
    *,
    mask: np.ndarray | None = None,
    config: MetricConfig = MetricConfig(),
) -> PairMetrics:
    """Decode a pair and compute every judge-free metric (see the module docstring for ranges)."""
    return pair_metrics(load_pair(source, edited, config), mask=mask, config=config)


def rank(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties sharing their average rank."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson on average ranks); NaN when either side is constant."""
    if len(a) != len(b):
        raise ValueError("sequences differ in length")
    if len(a) < 2:
        return float("nan")
    ra, rb = rank(a), rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")
