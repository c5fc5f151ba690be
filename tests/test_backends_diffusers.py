"""Model backends on stock diffusers pipelines (FLUX.2-klein edit/erase, Wan I2V, Wan VACE), tiny random weights.

Random weights make arbitrary pictures, so these tests check the plumbing: sizes, dtypes, value ranges,
determinism under a seed, what reaches the pipeline, and which pixels an erase may touch.
"""

from __future__ import annotations

import numpy as np
import pytest
from backend_fixtures import random_image, random_video, record_pipeline_calls

from sparkle_video.generation.backends.model_support import fit_size, frames_4k1
from sparkle_video.generation.backends.protocols import (
    ControlInputs,
    ControlVideoGenerator,
    ImageEditor,
    ImageToVideo,
)
from sparkle_video.generation.backends.registry import build_backend


@pytest.fixture(scope="module")
def editor():
    return build_backend("image_editor", "flux2-klein", {"tiny": True})


@pytest.fixture(scope="module")
def animator():
    return build_backend("image_to_video", "wan-i2v", {"tiny": True})


@pytest.fixture(scope="module")
def vace():
    return build_backend("control_video", "wan-vace", {"tiny": True})


def test_fit_size_keeps_aspect_budget_and_multiple():
    assert fit_size(720, 1280, 1280 * 720, 16) == (720, 1280)
    h, w = fit_size(1080, 1920, 1280 * 720, 16)
    assert (h, w) == (720, 1280)
    h, w = fit_size(40, 72, 64 * 96, 16, min_side=64)
    assert h % 16 == 0 and w % 16 == 0 and min(h, w) >= 64 and abs(w / h - 72 / 40) < 0.2
    with pytest.raises(ValueError):
        fit_size(0, 10, 100, 16)
    assert [frames_4k1(n) for n in (1, 2, 5, 9, 10, 81)] == [1, 5, 5, 9, 13, 81]


def test_flux2_edit_shape_dtype_and_seed(editor):
    assert isinstance(editor, ImageEditor)
    assert editor.edit_pipeline.__class__.__name__ == "Flux2KleinPipeline"
    assert editor.inpaint_pipeline.__class__.__name__ == "Flux2KleinInpaintPipeline"
    # both pipelines share the same modules: erasing costs no extra memory
    assert editor.inpaint_pipeline.transformer is editor.edit_pipeline.transformer
    image = random_image(0)
    a = editor.edit(image, "a beach at sunset", seed=1)
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, editor.edit(image, "a beach at sunset", seed=1))
    assert not np.array_equal(a, editor.edit(image, "a beach at sunset", seed=2))
    assert a.std() > 0  # a picture, not a constant


def test_flux2_edit_sees_the_reference_image(editor, monkeypatch):
    seen = record_pipeline_calls(monkeypatch, editor.edit_pipeline)
    editor.edit(random_image(3), "snow", seed=0)
    ref = seen["image"]
    assert (ref.height, ref.width) == (seen["height"], seen["width"])
    assert seen["height"] % 16 == 0 and seen["width"] % 16 == 0 and min(seen["height"], seen["width"]) >= 64
    assert seen["prompt"] == "snow" and seen["num_inference_steps"] == 2


def test_flux2_erase_touches_only_the_mask(editor):
    image = random_image(1)
    mask = np.zeros(image.shape[:2], bool)
    mask[8:24, 20:50] = True
    out = editor.erase(image, mask, seed=0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], image[~mask])
    assert (out[mask] != image[mask]).mean() > 0.5
    assert np.array_equal(out, editor.erase(image, mask, seed=0))
    # nothing to erase: the image comes back unchanged, no model call
    assert np.array_equal(editor.erase(image, np.zeros_like(mask)), image)
    with pytest.raises(ValueError, match="mask"):
        editor.erase(image, mask[:-1])


def test_flux2_refuses_unknown_option_by_name():
    with pytest.raises(ValueError, match="'num_steps'"):
        build_backend("image_editor", "flux2-klein", {"tiny": True, "num_steps": 4})


def test_wan_i2v_frames_size_range_seed(animator):
    assert isinstance(animator, ImageToVideo)
    pipe = animator.pipeline
    assert pipe.__class__.__name__ == "WanImageToVideoPipeline"
    assert pipe.transformer_2 is not None and pipe.config.boundary_ratio == 0.9
    image = random_image(2, 36, 60)
    video = animator.animate(image, "waves roll in", num_frames=10, seed=3)
    assert video.shape == (10, 36, 60, 3) and video.dtype == np.uint8
    assert np.array_equal(video, animator.animate(image, "waves roll in", num_frames=10, seed=3))
    assert not np.array_equal(video, animator.animate(image, "waves roll in", num_frames=10, seed=4))


def test_wan_i2v_makes_81_frames(animator):
    video = animator.animate(random_image(4, 32, 48), "leaves fall", num_frames=81, seed=0)
    assert video.shape == (81, 32, 48, 3)


def test_wan_i2v_uses_both_experts(animator, monkeypatch):
    calls = {"high": 0, "low": 0}
    for name, key in (("transformer", "high"), ("transformer_2", "low")):
        module = getattr(animator.pipeline, name)
        original = module.forward

        def counted(*args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "forward", counted)
    animator.steps = 4
    try:
        animator.animate(random_image(5, 32, 48), "rain", num_frames=5, seed=0)
    finally:
        animator.steps = 2
    assert calls["high"] > 0 and calls["low"] > 0


def test_vace_conditioning_layout():
    from sparkle_video.generation.backends.vace import vace_conditioning

    first = np.full((8, 12, 3), 7, np.uint8)
    control = np.stack([np.full((8, 12, 3), i, np.uint8) for i in range(3)])
    video, mask = vace_conditioning(first, control, 5)
    assert video.shape == (5, 8, 12, 3) and mask.shape == (5, 8, 12)
    assert (video[0] == 7).all() and not mask[0].any()
    assert [int(v[0, 0, 0]) for v in video[1:]] == [1, 2, 2, 2]  # padded with the last control frame
    assert mask[1:].all()
    with pytest.raises(ValueError):
        vace_conditioning(first[:4], control, 5)


def test_vace_generate_shape_seed_and_inputs(vace, monkeypatch):
    assert isinstance(vace, ControlVideoGenerator)
    assert vace.pipeline.__class__.__name__ == "WanVACEPipeline"
    t, h, w = 10, 36, 60
    source, background, control = random_video(1, t, h, w), random_video(2, t, h, w), random_video(3, t, h, w)
    inputs = ControlInputs(
        "a snowy street", random_image(6, h, w), control, source, np.zeros((t, h, w), bool), background
    )
    seen = record_pipeline_calls(monkeypatch, vace.pipeline)
    out = vace.generate(inputs, seed=0)
    assert out.shape == (t, h, w, 3) and out.dtype == np.uint8
    assert np.array_equal(out, vace.generate(inputs, seed=0))
    assert seen["num_frames"] == 13 and len(seen["video"]) == 13 and len(seen["mask"]) == 13
    masks = [np.asarray(m) for m in seen["mask"]]
    assert (masks[0] == 0).all() and all((m == 255).all() for m in masks[1:])
    assert len(seen["reference_images"]) == 1
    assert seen["prompt"] == "a snowy street"


def test_vace_reference_choice_is_checked():
    with pytest.raises(ValueError, match="reference"):
        build_backend("control_video", "wan-vace", {"tiny": True, "reference": "sky"})
