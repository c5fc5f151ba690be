"""SparkleEditPipeline on the tiny random-weight model: outputs, round trip, guidance, conditioning, errors.

The model math (guidance, Euler step, latent normalisation, reference frame, geometry) is pinned in
``test_pipeline_math.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_fixtures import clip_fixture, pipe_fixture  # noqa: F401  (pytest fixtures, used by name)

from sparkle_video import SparkleEditPipeline, VideoReader, write_video
from sparkle_video.data.synthetic import make_pair
from sparkle_video.models import full_size_components
from sparkle_video.pipelines import tiny_pipeline

STEPS = 2


def run(pipe, clip, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    return pipe(
        "Replace the background with a snowy forest.", clip, generator=torch.Generator().manual_seed(0), **kw
    ).frames


@pytest.mark.parametrize("output_type", ["np", "pil", "pt", "latent"])
def test_output_types(pipe, clip, output_type: str) -> None:
    frames = run(pipe, clip, output_type=output_type)
    if output_type == "np":
        assert frames.shape == (1, 9, 64, 64, 3) and frames.dtype == np.float32
        assert frames.min() >= 0.0 and frames.max() <= 1.0
    elif output_type == "pil":
        assert len(frames) == 1 and len(frames[0]) == 9 and frames[0][0].size == (64, 64)
    elif output_type == "pt":
        assert tuple(frames.shape) == (1, 9, 3, 64, 64)
    else:
        assert tuple(frames.shape) == (1, 8, 3, 4, 4)


def test_inputs_of_every_kind_agree(pipe, clip, tmp_path) -> None:
    base = run(pipe, clip)
    as_float = run(pipe, clip.astype(np.float32) / 255.0)
    as_pil = run(pipe, [Image.fromarray(f) for f in clip])
    as_tensor = run(pipe, torch.from_numpy(clip).permute(0, 3, 1, 2))
    for other in (as_float, as_pil, as_tensor):
        np.testing.assert_allclose(other, base, atol=1e-6)
    write_video(clip, tmp_path / "c.mp4", fps=16)
    from_reader = run(pipe, VideoReader(tmp_path / "c.mp4"))
    assert from_reader.shape == base.shape  # decoded video differs slightly from the raw frames


def test_save_and_reload_reproduces_frames(pipe, clip, tmp_path) -> None:
    pipe.save_pretrained(tmp_path / "pipe")
    again = SparkleEditPipeline.from_pretrained(tmp_path / "pipe")
    again.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(run(again, clip), run(pipe, clip))


def test_default_is_one_branch_and_guidance_adds_a_second(pipe, clip) -> None:
    batches = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: batches.append(k["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        default = run(pipe, clip)  # upstream: the conditional branch only
        assert batches == [1] * STEPS and pipe.last_branches == 1
        batches.clear()
        g5 = run(pipe, clip, guidance_scale=5.0)
        assert batches == [2] * STEPS and pipe.last_branches == 2
        batches.clear()
        g1 = run(pipe, clip, guidance_scale=1.0)
        assert batches == [1] * STEPS and pipe.last_branches == 1
    finally:
        handle.remove()
    np.testing.assert_array_equal(default, g1)
    assert np.abs(g5 - g1).max() > 1e-5
    zeros = run(pipe, clip, guidance_scale=5.0, unconditional="zeros")
    assert np.abs(zeros - g5).max() > 1e-6


def test_sampler_calls_predict_flow_once_per_step(pipe, clip, monkeypatch) -> None:
    calls = []
    original = pipe.predict_flow
    monkeypatch.setattr(
        pipe, "predict_flow", lambda *a, **k: (calls.append(a[0].shape[0]), original(*a, **k))[1]
    )
    run(pipe, clip, guidance_scale=3.0)
    assert calls == [2] * STEPS


def test_prompt_embeds_reproduce_the_prompt(pipe, clip) -> None:
    prompt = "Replace the background with a snowy forest."
    context = pipe.encode_prompt(prompt, clip)
    assert tuple(context.shape) == (1, pipe.mllm_encoder.config.num_video_queries, 16)
    from_prompt = run(pipe, clip)
    from_embeds = pipe(
        prompt_embeds=context,
        video=clip,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(0),
    ).frames
    np.testing.assert_array_equal(from_embeds, from_prompt)
    negative = pipe.encode_prompt("", clip)
    g = run(pipe, clip, guidance_scale=4.0)
    g_embeds = pipe(
        prompt_embeds=context,
        negative_prompt_embeds=negative,
        video=clip,
        guidance_scale=4.0,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(0),
    ).frames
    np.testing.assert_allclose(g_embeds, g, atol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        pipe(prompt="x", prompt_embeds=context, video=clip, num_inference_steps=1)


def test_building_blocks_are_differentiable(pipe, clip) -> None:
    """What a training step calls keeps the autograd graph (only ``__call__`` is no-grad)."""
    pipe.transformer.zero_grad(set_to_none=True)
    pipe.mllm_encoder.zero_grad(set_to_none=True)
    pipe.source_embedder.zero_grad(set_to_none=True)
    pixels = (torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float() / 127.5 - 1).requires_grad_()
    source = pipe.encode_video_latents(pixels)
    context = pipe.encode_prompt(["a", "b"], clip)
    noisy = torch.randn(2, *source.shape[1:], generator=torch.Generator().manual_seed(0))
    v = pipe.predict_flow(noisy, torch.tensor([0.2, 0.9]), context, source)
    assert v.shape == noisy.shape and v.dtype == torch.float32
    v.square().mean().backward()
    for param in (
        pipe.transformer.proj_out.weight,
        pipe.source_embedder.patch_embedding.weight,
        pipe.mllm_encoder.video_queries,
        pipe.mllm_encoder.connector[2].weight,
    ):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    for module in (pipe.transformer, pipe.mllm_encoder, pipe.source_embedder):
        module.zero_grad(set_to_none=True)


def test_per_row_sigma_equals_one_row_at_a_time(pipe, clip) -> None:
    source = pipe.encode_video_latents(clip)
    context = pipe.encode_prompt(["a", "b"], clip)
    noisy = torch.randn(2, *source.shape[1:], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        both = pipe.predict_flow(noisy, torch.tensor([0.25, 0.75]), context, source)
        first = pipe.predict_flow(noisy[:1], 0.25, context[:1], source)
        second = pipe.predict_flow(noisy[1:], 0.75, context[1:], source)
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=1e-5)
    assert (first - second).abs().max() > 1e-4


def test_batched_prompts_and_reference(pipe, clip) -> None:
    out = pipe(
        ["snowy forest", "neon city"],
        clip,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert out.shape == (2, 9, 64, 64, 3)
    ref = run(pipe, clip, ref_image=Image.fromarray(clip[0]))
    assert ref.shape == (1, 9, 64, 64, 3) and np.abs(ref - run(pipe, clip)).max() > 1e-6


def test_sizes_rounded_and_restored(pipe) -> None:
    odd = make_pair(2, num_frames=11, height=72, width=80).source  # 72x80 -> 64x64, 11 frames -> 9
    out = pipe("x", odd, num_inference_steps=1, output_type="np").frames
    assert out.shape == (1, 9, 64, 64, 3)
    for mode in ("crop", "resize"):
        restored = pipe("x", odd, num_inference_steps=1, restore_size=True, resize_mode=mode).frames
        assert restored.shape == (1, 9, 72, 80, 3)


def test_conditioning_forward_matches_reference(pipe, clip) -> None:
    """patchify(x) + sigma * embed(source), computed independently, is what the DiT blocks see."""
    latents = torch.randn(1, 8, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    source = pipe.encode_video_latents(clip).detach()
    sigma = 0.37
    seen = {}

    def grab(module, args):
        seen["x"] = args[0].clone()

    hook = pipe.transformer.blocks[0].register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            pipe.predict_flow(latents, sigma, torch.zeros(1, 8, 16), source)
    finally:
        hook.remove()
    conv = pipe.transformer.patch_embedding
    expected = torch.nn.functional.conv3d(latents, conv.weight, conv.bias, stride=(1, 2, 2))
    src = pipe.source_embedder.patch_embedding
    expected = expected + sigma * torch.nn.functional.conv3d(source, src.weight, src.bias, stride=(1, 2, 2))
    expected = expected.flatten(2).transpose(1, 2)
    torch.testing.assert_close(seen["x"], expected)
    # and the text projection is bypassed only inside the call
    assert not isinstance(pipe.transformer.condition_embedder.text_embedder, torch.nn.Identity)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": None}, "prompt is required"),
        ({"prompt": "  "}, "non-empty"),
        ({"video": np.zeros((0, 64, 64, 3), np.uint8)}, "empty"),
        ({"video": np.zeros((64, 64, 3), np.uint8)}, r"\(T, H, W, 3\)"),
        ({"height": 50, "width": 64}, "multiples of 32"),
        ({"num_frames": 8}, "4k\\+1"),
        ({"num_frames": 13}, "only 9 frames"),
        ({"output_type": "gif"}, "output_type"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "may only name"),
        ({"unconditional": "random"}, "unconditional"),
        ({"resize_mode": "stretch"}, "resize_mode"),
        ({"prompt": None, "prompt_embeds": torch.zeros(1, 8)}, r"\(B, num_queries, dim\)"),
        ({"video": [np.zeros((64, 64, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)]}, "differ in size"),
    ],
)
def test_bad_input(pipe, clip, kwargs: dict, message: str) -> None:
    args = {"prompt": "x", "video": clip, "num_inference_steps": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe(**args)


def test_non_finite_latents_are_reported(pipe, clip) -> None:
    bad = torch.full((1, 8, 3, 4, 4), float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite latents at step 0"):
        run(pipe, clip, latents=bad)


def test_full_size_architecture_on_meta() -> None:
    parts = full_size_components("meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    dit = parts["transformer"]
    assert dit.config.num_layers == 30 and dit.config.in_channels == 48
    assert dit.patch_embedding.weight.shape == (3072, 48, 1, 2, 2)
    assert 4.9e9 < count(dit) < 5.1e9  # the "5B" of Wan2.2-TI2V-5B
    enc = parts["mllm_encoder"]
    assert enc.video_queries.shape == (512, 2048) and enc.connector[0].weight.shape == (3072, 2048)
    assert 3.6e9 < count(enc.mllm) < 3.9e9  # Qwen2.5-VL-3B
    assert parts["source_embedder"].patch_embedding.weight.shape == (3072, 48, 1, 2, 2)
    assert next(dit.parameters()).device.type == "meta"


def test_bfloat16_pipeline_runs(pipe, clip, tmp_path) -> None:
    pipe.save_pretrained(tmp_path / "p")
    half = SparkleEditPipeline.from_pretrained(tmp_path / "p", torch_dtype=torch.bfloat16)
    half.set_progress_bar_config(disable=True)
    assert half.transformer.dtype == torch.bfloat16 and half.mllm_encoder.dtype == torch.bfloat16
    out = run(half, clip)
    assert out.shape == (1, 9, 64, 64, 3) and np.isfinite(out).all()
    assert np.abs(out - run(pipe, clip)).mean() < 0.1  # same model, lower precision


def test_callback_on_step_end_sees_and_replaces_latents(pipe, clip) -> None:
    seen: list[tuple[int, float]] = []

    def callback(p, step, timestep, tensors):
        seen.append((step, float(timestep)))
        assert set(tensors) == {"latents"} and tensors["latents"].shape == (1, 8, 3, 4, 4)
        return {"latents": torch.full_like(tensors["latents"], float(step))}

    out = run(pipe, clip, output_type="latent", callback_on_step_end=callback)
    assert [s for s, _ in seen] == [0, 1]
    np.testing.assert_allclose([t for _, t in seen], pipe.scheduler.timesteps.numpy(), rtol=1e-6)
    assert torch.equal(out, torch.full((1, 8, 3, 4, 4), 1.0))  # the last callback's latents are the result


def test_vae_tiling_is_used_for_encode_and_decode(clip) -> None:
    tiled = tiny_pipeline(seed=0)
    tiled.set_progress_bar_config(disable=True)
    plain = run(tiled, clip)
    calls: list[str] = []
    vae = tiled.vae
    enc, dec = vae.tiled_encode, vae.tiled_decode
    vae.tiled_encode = lambda *a, **k: (calls.append("encode"), enc(*a, **k))[1]
    vae.tiled_decode = lambda *a, **k: (calls.append("decode"), dec(*a, **k))[1]
    tiled.enable_vae_tiling(
        tile_sample_min_height=32,
        tile_sample_min_width=32,
        tile_sample_stride_height=16,
        tile_sample_stride_width=16,
    )
    out = run(tiled, clip)
    assert calls == ["encode", "decode"]
    assert out.shape == plain.shape and np.isfinite(out).all() and np.abs(out - plain).max() > 0
    tiled.disable_vae_tiling()
    calls.clear()
    np.testing.assert_array_equal(run(tiled, clip), plain)
    assert calls == []


def test_encoder_limits_apply_for_one_call_only(pipe, clip) -> None:
    grids: list[list[int]] = []
    hook = pipe.mllm_encoder.mllm.register_forward_pre_hook(
        lambda m, a, k: grids.append(k["video_grid_thw"][0].tolist()), with_kwargs=True
    )
    try:
        run(pipe, clip, guidance_scale=1.0)
        run(pipe, clip, guidance_scale=1.0, max_sequence_frames=2, max_sequence_pixels=28 * 28 * 4)
        run(pipe, clip, guidance_scale=1.0)
    finally:
        hook.remove()
    assert grids == [[2, 4, 4], [1, 4, 4], [2, 4, 4]]  # 4 frames -> 2 temporal patches; 2 frames -> 1
    assert pipe.mllm_encoder.config.max_frames == 4


def test_real_sample_clip_if_present(pipe) -> None:
    from conftest import SAMPLES

    clips = sorted(SAMPLES.glob("*/source_video/*.mp4")) if SAMPLES.is_dir() else []
    if not clips:
        pytest.skip("shared samples not available")
    reader = VideoReader(clips[0])
    assert (reader.width, reader.height) == (1280, 720)
    out = pipe(
        "Replace the background with a snowy forest.",
        reader,
        num_frames=9,
        num_inference_steps=1,
        max_pixels=128 * 224,
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert out.shape == (1, 9, 96, 224, 3) and np.isfinite(out).all()  # 720x1280 -> 96x224 grid under 128*224
