"""The model math of SparkleEditPipeline, each value computed by hand: guidance, the Euler step, the
latent normalisation, the reference frame's position, and the working-size geometry (cover and crop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_fixtures import clip_fixture, pipe_fixture  # noqa: F401  (pytest fixtures, used by name)

from sparkle_video.data.synthetic import make_pair
from sparkle_video.models.configs import SIGMA_MIN
from sparkle_video.pipelines.pipeline_sparkle_edit import cover_crop_frames, crop_box, restore_frames

PROMPT = "Replace the background with a snowy forest."


def start_latents(seed: int = 5) -> torch.Tensor:
    return torch.randn(1, 8, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def shifted(sigma: float, shift: float = 5.0) -> float:
    return shift * sigma / (1 + (shift - 1) * sigma)


# -- guidance and the Euler step -------------------------------------------------------------
def test_guided_prediction_is_uncond_plus_scale_times_difference(pipe, clip, monkeypatch) -> None:
    """The step receives ``uncond + g * (cond - uncond)``, with each branch computed on its own."""
    g = 6.0
    x = start_latents()
    seen = {}
    step = pipe.scheduler.step

    def spy(model_output, t, sample, **kw):
        seen.setdefault("pred", model_output.clone())
        seen.setdefault("sample", sample.clone())
        return step(model_output, t, sample, **kw)

    monkeypatch.setattr(pipe.scheduler, "step", spy)
    pipe(
        PROMPT,
        clip,
        num_inference_steps=2,
        guidance_scale=g,
        negative_prompt="blurry",
        latents=x.clone(),
        output_type="latent",
    )
    source = pipe.encode_video_latents(clip)
    with torch.no_grad():
        cond = pipe.predict_flow(x, 1.0, pipe.encode_prompt(PROMPT, clip), source)
        uncond = pipe.predict_flow(x, 1.0, pipe.encode_prompt("blurry", clip), source)
    assert (cond - uncond).abs().max() > 2e-4  # the branches differ: a swap moves the result by 11x that
    torch.testing.assert_close(seen["sample"], x)
    torch.testing.assert_close(seen["pred"], uncond + g * (cond - uncond), atol=1e-5, rtol=1e-5)


def test_one_step_is_a_hand_written_euler_update(pipe, clip, monkeypatch) -> None:
    """With a known prediction, each step is ``x + (sigma_next - sigma) * v`` on the shift-5 sigmas."""
    v = torch.linspace(-1.0, 2.0, 8 * 3 * 4 * 4).reshape(1, 8, 3, 4, 4)
    sigmas_seen: list[float] = []

    def known(latents, sigma, context, source_latents, ref_latents=None, timestep=None):
        sigmas_seen.append(float(sigma))
        assert float(timestep) == pytest.approx(1000 * float(sigma), rel=1e-6)
        return v.clone()

    monkeypatch.setattr(pipe, "predict_flow", known)
    after: list[torch.Tensor] = []
    x = start_latents()
    out = pipe(
        PROMPT,
        clip,
        num_inference_steps=2,
        latents=x.clone(),
        output_type="latent",
        callback_on_step_end=lambda p, i, t, k: after.append(k["latents"].clone()) or {},
    ).frames
    s0, s1 = shifted(1.0), shifted((1.0 + SIGMA_MIN) / 2)  # linspace(1, sigma_min, 3)[:-1], shifted by 5
    assert sigmas_seen == pytest.approx([s0, s1], rel=1e-6)
    torch.testing.assert_close(after[0], x + (s1 - s0) * v)
    torch.testing.assert_close(out, x + (s1 - s0) * v + (0.0 - s1) * v)  # the last step ends at sigma 0


# -- latent normalisation ----------------------------------------------------------------------
def test_latent_normalisation_both_directions(pipe, clip) -> None:
    cfg = pipe.vae.config
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    assert mean.abs().min() > 0.01 and (std - 1).abs().min() > 0.05  # the tiny VAE's stats are not 0 / 1
    x = torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        raw = pipe.vae.encode(x).latent_dist.mode()
        torch.testing.assert_close(pipe.encode_video_latents(clip), (raw - mean) / std)
        torch.testing.assert_close(pipe.encode_video_latents(x), (raw - mean) / std)
        z = start_latents()
        torch.testing.assert_close(
            pipe.decode_latents(z), pipe.vae.decode(z * std + mean, return_dict=False)[0]
        )


def test_call_decodes_with_the_inverse_normalisation(pipe, clip) -> None:
    kw = dict(num_inference_steps=1, latents=start_latents())
    latents = pipe(PROMPT, clip, output_type="latent", **kw).frames
    frames = pipe(PROMPT, clip, output_type="pt", **kw).frames
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        by_hand = pipe.vae.decode(latents * std + mean, return_dict=False)[0]
    expected = ((by_hand.clamp(-1, 1) + 1) / 2).permute(0, 2, 1, 3, 4)  # (B, T, 3, H, W) in [0, 1]
    torch.testing.assert_close(frames, expected, atol=1e-5, rtol=1e-5)


# -- reference frame ---------------------------------------------------------------------------
@pytest.mark.parametrize("pad_first", [False, True])
def test_reference_frame_is_put_and_removed_at_the_configured_end(pipe, clip, pad_first: bool) -> None:
    pipe.ref_embedder.register_to_config(ref_pad_first=pad_first)
    try:
        source = pipe.encode_video_latents(clip)
        ref = pipe.encode_reference_latents(Image.fromarray(clip[4]), 64, 64)
        assert tuple(ref.shape) == (1, 8, 1, 4, 4)
        x = start_latents()
        seen = {}
        grab_in = pipe.transformer.blocks[0].register_forward_pre_hook(
            lambda m, a: seen.update(tokens=a[0].clone())
        )
        grab_out = pipe.transformer.register_forward_hook(lambda m, a, out: seen.update(raw=out[0].clone()))
        try:
            with torch.no_grad():
                pred = pipe.predict_flow(
                    x, 0.6, pipe.encode_prompt(PROMPT, clip, ref_image=clip[4]), source, ref
                )
        finally:
            grab_in.remove()
            grab_out.remove()
        raw = seen["raw"].float()
        assert raw.shape[2] == 4 and pred.shape == x.shape
        kept = raw[:, :, 1:] if pad_first else raw[:, :, :-1]
        wrong = raw[:, :, :-1] if pad_first else raw[:, :, 1:]
        torch.testing.assert_close(pred, kept)
        assert (kept - wrong).abs().max() > 1e-4  # dropping the other end would be visible
        with torch.no_grad():
            ref_tokens = pipe.ref_embedder(ref).flatten(2).transpose(1, 2)  # (1, 4, dim): one latent frame
        frame = seen["tokens"][:, :4] if pad_first else seen["tokens"][:, -4:]
        torch.testing.assert_close(frame, ref_tokens)
    finally:
        pipe.ref_embedder.register_to_config(ref_pad_first=False)


# -- working-size geometry ---------------------------------------------------------------------
def test_crop_box_full_size() -> None:
    assert crop_box(720, 1280, 704, 1280) == (8, 0, 704, 1280)  # 8 rows off the top and the bottom
    assert crop_box(1280, 720, 1280, 704) == (0, 8, 1280, 704)  # portrait: 8 columns each side
    assert crop_box(704, 1280, 704, 1280) == (0, 0, 704, 1280)
    assert crop_box(100, 200, 64, 96) == (0, 25, 100, 150)  # wider than the target: columns go


def test_cover_crop_then_resize_matches_pil() -> None:
    frames = make_pair(3, num_frames=2, height=100, width=200).source
    out = cover_crop_frames(frames, 64, 96)
    expected = np.stack(
        [np.asarray(Image.fromarray(f[:, 25:175]).resize((96, 64), Image.BICUBIC)) for f in frames]
    )
    np.testing.assert_array_equal(out, expected)
    assert cover_crop_frames(out, 64, 96) is out  # idempotent


def band_clip() -> np.ndarray:
    """A 144x256 clip (720x1280 scaled by 1/5) whose top and bottom 8 rows are pure magenta."""
    frames = make_pair(4, num_frames=9, height=144, width=256).source.copy()
    frames[..., 1] = np.maximum(frames[..., 1], 40)  # no magenta inside
    frames[:, :8] = frames[:, -8:] = (255, 0, 255)
    return frames


@pytest.mark.parametrize("mode", ["crop", "resize"])
def test_vae_and_encoder_see_the_centre_crop(pipe, mode: str, monkeypatch) -> None:
    frames = band_clip()
    seen = {}
    encode = pipe.vae.encode
    batch = pipe.mllm_encoder.encode_batch
    monkeypatch.setattr(pipe.vae, "encode", lambda x: (seen.setdefault("vae", x.clone()), encode(x))[1])
    monkeypatch.setattr(
        pipe.mllm_encoder,
        "encode_batch",
        lambda tok, f, *a: (seen.setdefault("enc", f.copy()), batch(tok, f, *a))[1],
    )
    mode_kw = {} if mode == "crop" else {"resize_mode": mode}  # crop is the default
    out = pipe(PROMPT, frames, num_inference_steps=1, max_pixels=144 * 256, **mode_kw).frames
    assert out.shape == (1, 9, 128, 256, 3)  # 144x256 -> 128x256, as 720x1280 -> 704x1280
    vae_in = ((seen["vae"][0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
    magenta = ((vae_in[..., 0] > 230) & (vae_in[..., 1] < 25) & (vae_in[..., 2] > 230)).any()
    if mode == "crop":
        np.testing.assert_array_equal(vae_in, frames[:, 8:136])
        np.testing.assert_array_equal(seen["enc"], frames[:, 8:136])
        assert not magenta
    else:
        assert magenta  # the squash keeps the bands: the check above can fail
        np.testing.assert_array_equal(seen["enc"], vae_in)


def test_restore_puts_the_crop_back_where_it_came_from() -> None:
    out = torch.rand(1, 3, 2, 128, 256, generator=torch.Generator().manual_seed(0))
    back = restore_frames(out, 144, 256, "crop")
    assert tuple(back.shape) == (1, 3, 2, 144, 256)
    torch.testing.assert_close(back[..., 8:136, :], out)
    torch.testing.assert_close(back[..., :8, :], out[..., :1, :].expand(-1, -1, -1, 8, -1))
    torch.testing.assert_close(back[..., 136:, :], out[..., -1:, :].expand(-1, -1, -1, 8, -1))
    squashed = restore_frames(out, 144, 256, "resize")
    assert tuple(squashed.shape) == (1, 3, 2, 144, 256) and (squashed[..., 8:136, :] - out).abs().max() > 1e-3


def test_working_size_uses_the_released_arithmetic(pipe) -> None:
    assert pipe.working_size(720, 1280) == (704, 1280)
    assert pipe.working_size(1080, 1920) == (704, 1280)
    assert pipe.working_size(1000, 1000) == (928, 928)  # 1000 / (1000 / 960) truncates to 959 -> 928
    assert pipe.working_size(480, 640) == (480, 640)
