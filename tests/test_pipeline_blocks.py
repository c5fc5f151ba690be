"""SparkleEditPipeline's building blocks on the tiny model, one contract each: construction defaults,
``check_inputs``, ``preprocess_video``, the VAE latent normalisation, ``encode_prompt``'s per-call
limits, and ``predict_flow``'s default timestep, batching, dtype and device handling and the token
layout with a reference (as a training step calls them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_fixtures import clip_fixture, one_by_one_patch_transformer, pipe_fixture  # noqa: F401  (pytest fixtures, used by name)

from sparkle_video.data.synthetic import make_pair
from sparkle_video.pipelines import SparkleEditPipeline, tiny_pipeline
from sparkle_video.pipelines.pipeline_sparkle_edit import pad_to_size, resize_frames

PROMPT = "Replace the background with a snowy forest."


@pytest.fixture(name="half", scope="module")
def half_fixture() -> SparkleEditPipeline:
    """The tiny pipeline in bfloat16 (the released model's inference dtype)."""
    p = tiny_pipeline(seed=0).to(torch.bfloat16)
    p.set_progress_bar_config(disable=True)
    return p


def noise(batch: int = 1, seed: int = 3) -> torch.Tensor:
    return torch.randn(batch, 8, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


# -- construction --------------------------------------------------------------------------------
def test_fresh_pipeline_has_run_no_branches_and_uses_the_vae_factors(pipe) -> None:
    fresh = SparkleEditPipeline(**pipe.components)
    assert fresh.last_branches == 0
    assert (fresh.vae_scale_factor_temporal, fresh.vae_scale_factor_spatial) == (4, 16)
    assert fresh.video_processor.config.vae_scale_factor == 16
    assert fresh.size_multiple == 32


def test_without_a_vae_the_wan22_factors_are_assumed(pipe) -> None:
    bare = SparkleEditPipeline(**{**pipe.components, "vae": None})
    assert (bare.vae_scale_factor_temporal, bare.vae_scale_factor_spatial) == (4, 16)
    assert bare.video_processor.config.vae_scale_factor == 16
    vae = pipe.vae  # with one, the factors are read from its config
    saved = (vae.config.scale_factor_temporal, vae.config.scale_factor_spatial)
    vae.register_to_config(scale_factor_temporal=2, scale_factor_spatial=8)
    try:
        other = SparkleEditPipeline(**pipe.components)
        assert (other.vae_scale_factor_temporal, other.vae_scale_factor_spatial) == (2, 8)
        assert other.video_processor.config.vae_scale_factor == 8
    finally:
        vae.register_to_config(scale_factor_temporal=saved[0], scale_factor_spatial=saved[1])


def test_working_size_follows_the_transformer_patch(pipe) -> None:
    """The size multiple is the VAE's 16 times the DiT's patch: 32 for Wan2.2, 16 for a 1x1 patch."""
    dit = one_by_one_patch_transformer()
    fine = SparkleEditPipeline(**{**pipe.components, "transformer": dit})
    assert fine.size_multiple == 16
    assert fine.working_size(720, 1280) == (720, 1280) and pipe.working_size(720, 1280) == (704, 1280)
    assert fine.check_inputs("x", 48, 80, 5, 5) == ["x"]
    vae = pipe.vae  # with a VAE that does not downsample, every positive size is a multiple
    saved = vae.config.scale_factor_spatial
    vae.register_to_config(scale_factor_spatial=1)
    try:
        unit = SparkleEditPipeline(**{**pipe.components, "transformer": dit})
    finally:
        vae.register_to_config(scale_factor_spatial=saved)
    assert unit.size_multiple == 1
    assert unit.check_inputs("x", 1, 1, 1, 1) == ["x"]
    with pytest.raises(ValueError, match=r"positive multiples of 1, got 0x1$"):
        unit.check_inputs("x", 0, 1, 1, 1)


# -- check_inputs -------------------------------------------------------------------------------
def test_check_inputs_returns_the_prompt_list(pipe) -> None:
    assert pipe.check_inputs("edit", 64, 64, 9, 9) == ["edit"]
    assert pipe.check_inputs(["a", "b"], 64, 96, 5, 9) == ["a", "b"]
    assert pipe.check_inputs(("a", "b"), 32, 32, 1, 1) == ["a", "b"]
    embeds = torch.zeros(3, 8, 16)
    assert pipe.check_inputs(None, 64, 64, 9, 9, prompt_embeds=embeds) == ["", "", ""]


@pytest.mark.parametrize(
    "args, message",
    [
        (("x", 64, 64, 9, 9, torch.zeros(1, 8, 16)), r"^pass either prompt or prompt_embeds, not both$"),
        (
            (None, 64, 64, 9, 9, torch.zeros(8, 16)),
            r"^prompt_embeds must be \(B, num_queries, dim\), got \(8, 16\)$",
        ),
        ((None, 64, 64, 9, 9, torch.zeros(1, 1, 8, 16)), r"got \(1, 1, 8, 16\)$"),
        (
            (None, 64, 64, 9, 9),
            r"^prompt is required \(a non-empty string or list of strings\), or prompt_embeds$",
        ),
        (([], 64, 64, 9, 9), r"^prompt must be a non-empty string or a list of non-empty strings$"),
        ((["a", " \n"], 64, 64, 9, 9), "^prompt must be a non-empty string"),
        ((["a", 3], 64, 64, 9, 9), "^prompt must be a non-empty string"),
        (("", 64, 64, 9, 9), "^prompt must be a non-empty string"),
        (("x", 50, 64, 9, 9), r"^height and width must be positive multiples of 32, got 50x64$"),
        (("x", 64, 48, 9, 9), r"got 64x48$"),
        (("x", 0, 64, 9, 9), r"got 0x64$"),
        (("x", 64, 0, 9, 9), r"got 64x0$"),
        (("x", -32, 64, 9, 9), r"got -32x64$"),
        (("x", 64, -32, 9, 9), r"got 64x-32$"),
        (("x", 64, 64, 8, 9), r"^num_frames must be 4k\+1, got 8$"),
        (("x", 64, 64, 7, 9), r"got 7$"),
        (("x", 64, 64, 0, 9), r"got 0$"),
        (("x", 64, 64, -3, 9), r"got -3$"),
        (("x", 64, 64, 13, 9), r"^num_frames=13 but the video has only 9 frames$"),
        (("x", 64, 64, 5, 4), r"^num_frames=5 but the video has only 4 frames$"),
    ],
)
def test_check_inputs_errors(pipe, args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pipe.check_inputs(*args)


def test_check_inputs_accepts_the_edges(pipe) -> None:
    assert pipe.check_inputs("x", 32, 32, 1, 1) == ["x"]  # one frame, one 32x32 tile
    assert pipe.check_inputs("x", 32, 64, 5, 5) == ["x"]  # all the frames the video has


# -- preprocess_video ---------------------------------------------------------------------------
def test_preprocess_fills_in_only_the_missing_side(pipe) -> None:
    frames = make_pair(5, num_frames=11, height=64, width=96).source
    assert pipe.preprocess_video(frames).shape == (9, 64, 96, 3)  # 11 frames -> 9; size kept
    assert pipe.preprocess_video(frames, height=32).shape == (9, 32, 96, 3)
    assert pipe.preprocess_video(frames, width=32).shape == (9, 64, 32, 3)
    assert pipe.preprocess_video(frames, num_frames=5).shape == (5, 64, 96, 3)
    assert pipe.preprocess_video(frames, num_frames=11).shape == (11, 64, 96, 3)  # every frame
    assert pipe.preprocess_video(frames, max_frames=6).shape == (5, 64, 96, 3)
    assert pipe.preprocess_video(frames, max_pixels=32 * 48).shape == (9, 32, 32, 3)
    long = np.zeros((90, 32, 32, 3), np.uint8)  # a budget above the model's 81 frames is honoured
    assert pipe.preprocess_video(long).shape == (81, 32, 32, 3)
    assert pipe.preprocess_video(long, max_frames=90).shape == (89, 32, 32, 3)
    with pytest.raises(ValueError, match=r"^num_frames=13 but the video has only 11 frames$"):
        pipe.preprocess_video(frames, num_frames=13)
    with pytest.raises(ValueError, match=r"^num_frames=9 but the video has only 6 frames$"):
        pipe.preprocess_video(frames, num_frames=9, max_frames=6)


def test_preprocess_crops_by_default_and_squashes_on_request(pipe) -> None:
    frames = make_pair(5, num_frames=5, height=64, width=96).source
    np.testing.assert_array_equal(pipe.preprocess_video(frames, 64, 64), frames[:, :, 16:80])
    squashed = pipe.preprocess_video(frames, 64, 64, resize_mode="resize")
    np.testing.assert_array_equal(squashed, resize_frames(frames, 64, 64))


# -- latents -------------------------------------------------------------------------------------
def test_latent_stats_take_the_asked_dtype(pipe) -> None:
    mean, std = pipe._latent_stats(torch.device("cpu"), torch.float64)
    assert mean.shape == std.shape == (1, 8, 1, 1, 1)
    assert mean.dtype == std.dtype == torch.float64
    np.testing.assert_allclose(mean.flatten().numpy(), pipe.vae.config.latents_mean)
    np.testing.assert_allclose(std.flatten().numpy(), pipe.vae.config.latents_std)


def test_batched_uint8_frames_and_float_tensors_encode_alike(pipe, clip) -> None:
    other = make_pair(6, num_frames=9, height=64, width=64).source
    with torch.no_grad():
        one = pipe.encode_video_latents(clip)
        two = pipe.encode_video_latents(np.stack([clip, other]))
        from_uint8_tensor = pipe.encode_video_latents(torch.from_numpy(clip))
        pixels = torch.from_numpy(clip).permute(3, 0, 1, 2)[None].double() / 127.5 - 1.0
        from_float64 = pipe.encode_video_latents(pixels)  # cast to the VAE's dtype
    assert tuple(two.shape) == (2, 8, 3, 4, 4) and one.dtype == torch.float32
    torch.testing.assert_close(two[:1], one)
    assert (two[1] - two[0]).abs().max() > 1e-3
    torch.testing.assert_close(from_uint8_tensor, one)
    torch.testing.assert_close(from_float64, one, atol=1e-5, rtol=1e-5)


def test_encode_video_latents_refuses_other_layouts(pipe, clip) -> None:
    pixels = torch.zeros(1, 9, 3, 64, 64)
    with pytest.raises(
        ValueError, match=r"^expected a \(B, 3, T, H, W\) tensor, got shape \(1, 9, 3, 64, 64\)$"
    ):
        pipe.encode_video_latents(pixels)
    with pytest.raises(ValueError, match=r"got shape \(3, 9, 64, 64\)$"):
        pipe.encode_video_latents(torch.zeros(3, 9, 64, 64))
    with pytest.raises(
        ValueError,
        match=r"^expected \(T, H, W, 3\) or \(B, T, H, W, 3\) frames, got shape \(1, 9, 64, 64, 4\)$",
    ):
        pipe.encode_video_latents(np.zeros((9, 64, 64, 4), np.uint8))
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 9, 64, 64, 3\)$"):
        pipe.encode_video_latents(np.zeros((1, 1, 9, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"got shape \(64, 64, 3\)$"):
        pipe.encode_video_latents(clip[0])


def test_bfloat16_latents_stay_in_the_model_dtype(half, clip) -> None:
    with torch.no_grad():
        latents = half.encode_video_latents(clip)
        assert latents.dtype == torch.bfloat16
        decoded = half.decode_latents(noise().double())  # any input dtype: decoded in the VAE's
    assert decoded.dtype == torch.bfloat16 and tuple(decoded.shape) == (1, 3, 9, 64, 64)


def test_reference_latents_are_the_white_padded_image(pipe) -> None:
    ref = make_pair(7, num_frames=1, height=32, width=64).source[0]
    with torch.no_grad():
        got = pipe.encode_reference_latents(Image.fromarray(ref), 64, 96)
        expected = pipe.encode_video_latents(pad_to_size(ref, 64, 96)[None])
        squashed = pipe.encode_video_latents(resize_frames(ref[None], 64, 96))
    assert tuple(got.shape) == (1, 8, 1, 4, 6)
    torch.testing.assert_close(got, expected)
    assert (got - squashed).abs().max() > 1e-3


# -- encode_prompt -------------------------------------------------------------------------------
def test_a_string_prompt_is_one_row(pipe, clip) -> None:
    with torch.no_grad():
        one = pipe.encode_prompt("abc", clip)
        listed = pipe.encode_prompt(["abc"], clip)
        two = pipe.encode_prompt(["abc", "xyz"], clip)
    assert tuple(one.shape) == (1, 8, 16) and tuple(two.shape) == (2, 8, 16)
    torch.testing.assert_close(listed, one)
    torch.testing.assert_close(two[:1], one)
    assert (two[1] - two[0]).abs().max() > 1e-5


def test_encode_prompt_fits_the_frames_like_preprocess(pipe, monkeypatch) -> None:
    frames = make_pair(5, num_frames=9, height=64, width=96).source
    seen: list[np.ndarray] = []
    batch = pipe.mllm_encoder.encode_batch
    monkeypatch.setattr(
        pipe.mllm_encoder, "encode_batch", lambda tok, f, *a: (seen.append(f.copy()), batch(tok, f, *a))[1]
    )
    ref = make_pair(7, num_frames=1, height=32, width=32).source[0]
    with torch.no_grad():
        pipe.encode_prompt(PROMPT, frames, height=32, width=32)
        pipe.encode_prompt(PROMPT, frames, height=64, width=64, resize_mode="resize")
        pipe.encode_prompt(PROMPT, frames, num_frames=5, max_pixels=32 * 48)
        pipe.encode_prompt(PROMPT, frames, max_frames=6)
        pipe.encode_prompt(PROMPT, frames, ref_image=Image.fromarray(ref))
    np.testing.assert_array_equal(seen[0], pipe.preprocess_video(frames, 32, 32))
    assert seen[0].shape == (9, 32, 32, 3)
    np.testing.assert_array_equal(seen[1], resize_frames(frames, 64, 64))
    assert seen[2].shape == (5, 32, 32, 3)
    assert seen[3].shape == (5, 64, 96, 3)
    np.testing.assert_array_equal(seen[4], frames)


def test_reference_image_reaches_the_encoder_as_rgb(pipe, clip, monkeypatch) -> None:
    refs: list = []
    batch = pipe.mllm_encoder.encode_batch
    monkeypatch.setattr(
        pipe.mllm_encoder, "encode_batch", lambda tok, f, p, r=None: (refs.append(r), batch(tok, f, p, r))[1]
    )
    ref = make_pair(7, num_frames=1, height=32, width=48).source[0]
    with torch.no_grad():
        with_ref = pipe.encode_prompt(PROMPT, clip, ref_image=Image.fromarray(ref))
        without = pipe.encode_prompt(PROMPT, clip)
    np.testing.assert_array_equal(refs[0], ref)
    assert refs[1] is None
    assert with_ref.shape != without.shape  # the reference path has its own queries


@pytest.mark.parametrize(
    "kwargs, grid",
    [
        ({}, [2, 4, 4]),
        ({"max_sequence_frames": 2}, [1, 4, 4]),
        ({"max_sequence_pixels": 112 * 112}, [2, 8, 8]),
        ({"max_sequence_frames": 2, "max_sequence_pixels": 112 * 112}, [1, 8, 8]),
    ],
)
def test_sequence_limits_each_apply_alone_for_one_call(pipe, kwargs: dict, grid: list[int]) -> None:
    clip = make_pair(8, num_frames=5, height=128, width=128).source  # the encoder's default: 56x56
    grids: list[list[int]] = []
    hook = pipe.mllm_encoder.mllm.register_forward_pre_hook(
        lambda m, a, k: grids.append(k["video_grid_thw"][0].tolist()), with_kwargs=True
    )
    before = (pipe.mllm_encoder.config.max_frames, pipe.mllm_encoder.config.max_pixels_per_frame)
    try:
        with torch.no_grad():
            pipe.encode_prompt(PROMPT, clip, **kwargs)
    finally:
        hook.remove()
    assert grids == [grid]
    assert (pipe.mllm_encoder.config.max_frames, pipe.mllm_encoder.config.max_pixels_per_frame) == before


# -- predict_flow --------------------------------------------------------------------------------
@pytest.fixture(name="inputs", scope="module")
def inputs_fixture(pipe, clip) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return pipe.encode_prompt(["a", "b"], clip), pipe.encode_video_latents(clip)


def test_default_timestep_is_sigma_times_1000(pipe, inputs) -> None:
    context, source = inputs
    x = noise()
    with torch.no_grad():
        default = pipe.predict_flow(x, 0.3, context[:1], source)
        explicit = pipe.predict_flow(x, 0.3, context[:1], source, timestep=torch.tensor(300.0))
        other = pipe.predict_flow(x, 0.3, context[:1], source, timestep=torch.tensor(0.3))
    torch.testing.assert_close(default, explicit)
    assert (default - other).abs().max() > 1e-4


def test_one_sigma_and_one_source_serve_a_whole_batch(pipe, inputs) -> None:
    context, source = inputs
    x = noise(2)
    with torch.no_grad():
        both = pipe.predict_flow(x, 0.4, context, source)
        rows = [pipe.predict_flow(x[i : i + 1], 0.4, context[i : i + 1], source) for i in range(2)]
        per_row = pipe.predict_flow(x, torch.tensor([0.4, 0.4]), context, torch.cat([source, source]))
    assert tuple(both.shape) == (2, 8, 3, 4, 4)
    torch.testing.assert_close(both, torch.cat(rows), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_row, both, atol=1e-5, rtol=1e-5)


def test_a_float64_sigma_is_used_in_float32(pipe, inputs) -> None:
    """A numpy / float64 sigma (as a training loop may draw it) gives exactly the float32 result: at this
    sigma, 1000 * sigma rounds differently in float64 than in float32."""
    context, source = inputs
    x = noise()
    sigma = 0.04097352393619469
    with torch.no_grad():
        as_float = pipe.predict_flow(x, sigma, context[:1], source)
        as_numpy = pipe.predict_flow(x, np.float64(sigma), context[:1], source)
        as_tensor = pipe.predict_flow(x, torch.tensor(sigma, dtype=torch.float64), context[:1], source)
    assert torch.equal(as_numpy, as_float) and torch.equal(as_tensor, as_float)


def test_reference_latents_need_a_reference_embedder(pipe, inputs) -> None:
    context, source = inputs
    bare = SparkleEditPipeline(**{**pipe.components, "ref_embedder": None})
    ref = torch.zeros(1, 8, 1, 4, 4)
    with pytest.raises(
        ValueError, match=r"^this pipeline has no ref_embedder; it cannot take reference latents$"
    ):
        bare.predict_flow(noise(), 0.5, context[:1], source, ref)


def test_bfloat16_model_takes_float32_inputs(half, pipe, inputs) -> None:
    context, source = inputs  # float32, from the float32 pipeline
    x = noise()
    ref = torch.randn(1, 8, 1, 4, 4, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        v = half.predict_flow(x, 0.5, context[:1], source)
        with_ref = half.predict_flow(x, 0.5, context[:1], source, ref)
        full = pipe.predict_flow(x, 0.5, context[:1], source)
    assert v.dtype == torch.float32 and tuple(v.shape) == (1, 8, 3, 4, 4)
    assert with_ref.dtype == torch.float32 and tuple(with_ref.shape) == (1, 8, 3, 4, 4)
    assert (v - full).abs().max() < 0.1 * full.abs().max()  # the same model, lower precision


def test_bfloat16_timestep_is_rounded_to_the_model_dtype(half, inputs) -> None:
    """As upstream: the timestep is cast to the model dtype (372.9 is 372 in bfloat16) before embedding."""
    context, source = inputs
    x = noise()
    assert float(torch.tensor(372.9).to(torch.bfloat16)) == 372.0
    with torch.no_grad():
        a = half.predict_flow(x, 0.5, context[:1], source, timestep=torch.tensor(372.9))
        b = half.predict_flow(x, 0.5, context[:1], source, timestep=torch.tensor(372.0))
        c = half.predict_flow(x, 0.5, context[:1], source, timestep=torch.tensor(380.0))
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 0  # the timestep does reach the model


# -- devices -------------------------------------------------------------------------------------
@pytest.fixture(name="on_meta", scope="module")
def on_meta_fixture() -> SparkleEditPipeline:
    """The tiny pipeline with its weights on the ``meta`` device: a stand-in for an accelerator, to see
    that CPU inputs are moved to where the model is (shapes only, no values)."""
    p = tiny_pipeline(seed=0).to("meta")
    assert p._execution_device.type == "meta"
    return p


def test_encoding_moves_cpu_frames_to_the_model_device(on_meta, clip) -> None:
    pixels = torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    for video in (clip, pixels):
        latents = on_meta.encode_video_latents(video)
        assert latents.device.type == "meta" and tuple(latents.shape) == (1, 8, 3, 4, 4)


def test_flow_prediction_moves_cpu_conditioning_to_the_latents_device(on_meta, inputs) -> None:
    context, source = inputs  # on the CPU
    x = noise().to("meta")
    ref = torch.zeros(1, 8, 1, 4, 4)
    for sigma in (0.5, torch.tensor(0.5)):
        v = on_meta.predict_flow(x, sigma, context[:1], source)
        assert v.device.type == "meta" and tuple(v.shape) == (1, 8, 3, 4, 4)
    v = on_meta.predict_flow(x, 0.5, context[:1], source, ref, timestep=torch.tensor(500.0))
    assert v.device.type == "meta" and tuple(v.shape) == (1, 8, 3, 4, 4)


def test_decoding_keeps_the_latents_device(on_meta) -> None:
    frames = on_meta.decode_latents(noise().to("meta"))
    assert frames.device.type == "meta" and tuple(frames.shape) == (1, 3, 9, 64, 64)
    mean, std = on_meta._latent_stats(torch.device("meta"), torch.float32)
    assert mean.device.type == std.device.type == "meta"


@pytest.mark.parametrize("pad_first", [False, True])
def test_with_a_reference_every_video_frame_keeps_its_own_tokens(pipe, inputs, pad_first: bool) -> None:
    """patchify(x) + sigma * embed(source) for each of the video's latent frames, in order, and the
    reference's tokens as one frame at the configured end: nothing of the video is overwritten."""
    context, source = inputs
    x = noise()
    ref = torch.randn(1, 8, 1, 4, 4, generator=torch.Generator().manual_seed(9))
    sigma = 0.6
    seen = {}
    hook = pipe.transformer.blocks[0].register_forward_pre_hook(lambda m, a: seen.update(tokens=a[0].clone()))
    pipe.ref_embedder.register_to_config(ref_pad_first=pad_first)
    try:
        with torch.no_grad():
            pipe.predict_flow(x, sigma, context[:1], source, ref)
    finally:
        hook.remove()
        pipe.ref_embedder.register_to_config(ref_pad_first=False)
    conv, src = pipe.transformer.patch_embedding, pipe.source_embedder.patch_embedding
    with torch.no_grad():
        video = torch.nn.functional.conv3d(x, conv.weight, conv.bias, stride=(1, 2, 2))
        video = video + sigma * torch.nn.functional.conv3d(source, src.weight, src.bias, stride=(1, 2, 2))
        ref_tokens = pipe.ref_embedder(ref)
    frames = [ref_tokens, video] if pad_first else [video, ref_tokens]
    expected = torch.cat(frames, dim=2).flatten(2).transpose(1, 2)  # (1, 4 frames * 4 patches, dim)
    torch.testing.assert_close(seen["tokens"], expected)
