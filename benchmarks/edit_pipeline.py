"""SparkleEditPipeline speed, against named baselines measured in the same run.

CPU (default):
  1. the tiny random-weight pipeline on a 9-frame 64x64 clip at its defaults (one branch): denoising
     steps per second, against the bare stock ``WanTransformer3DModel`` forward on the same latents
     (what a step costs without the source conditioning and the text-projection bypass);
  2. the same tiny DiT/VAE in ``SparkleEditPipeline`` and in diffusers' ``LucyEditPipeline`` (source
     latents concatenated on channels), both at guidance 1 and both at guidance 5: seconds per
     denoising step, and the ratio.

GPU (``--gpu``): the full-size architecture with random bf16 weights (Wan2.2-TI2V-5B DiT, Wan2.2 VAE
in float32), 81 frames at 480x832 and 704x1280: seconds per denoising step and peak memory of the
denoising loop, ``SparkleEditPipeline`` side by side with ``LucyEditPipeline``, both at guidance 1
(one branch: Sparkle's default, as upstream) and both at guidance 5 (two branches: Lucy's default);
then one 704x1280x81 Sparkle call with ``enable_model_cpu_offload()`` (seconds per step, whole call,
peak memory).
No weights are downloadable for either, and random weights cost the same compute; both DiTs get a
zero output projection so that random velocities cannot overflow. Sparkle's instruction encoder is a
tiny Qwen2.5-VL producing the real context (512 query tokens of width 3072): the encoder runs once
per call, outside the denoising steps that are timed. Lucy gets random UMT5-sized prompt embeddings.

Steps are timed by ``callback_on_step_end`` (device synchronised), the first step excluded.

Usage: python benchmarks/edit_pipeline.py [--steps 20] [--repeats 5] [--gpu] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timing import median_time

GUIDANCE_SCALES = (1.0, 5.0)


def timed_steps(
    pipe: Any, steps: int, device: torch.device, guidance_scale: float = 1.0, **call: Any
) -> tuple[float, float | None]:
    """Median seconds per denoising step (first step excluded) and peak GiB of the loop (CUDA only)."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    stamps: list[float] = []

    def on_step(p: Any, i: int, t: Any, tensors: dict) -> dict:
        sync()
        stamps.append(time.perf_counter())
        if i == 0 and cuda:
            torch.cuda.reset_peak_memory_stats()
        return {}

    pipe.set_progress_bar_config(disable=True)
    pipe(
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        output_type="latent",
        callback_on_step_end=on_step,
        generator=torch.Generator().manual_seed(0),
        **call,
    )
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return statistics.median(np.diff(stamps).tolist()), peak


def _zero_output(transformer: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        transformer.proj_out.weight.zero_()
        transformer.proj_out.bias.zero_()
    return transformer


def compare_with_lucy(
    dit_config: dict,
    vae: Any,
    sizes: list[tuple[int, int]],
    num_frames: int,
    steps: int,
    device: torch.device,
    dtype: torch.dtype,
    context_tokens: int,
    lucy_text_dim: int,
) -> dict:
    """``SparkleEditPipeline`` vs ``LucyEditPipeline`` on the same DiT config, VAE, sizes and guidance.

    Rows are keyed ``"{h}x{w}x{frames}"`` then ``"guidance_{g}"`` for each of ``GUIDANCE_SCALES``.
    """
    from diffusers import LucyEditPipeline, WanTransformer3DModel
    from PIL import Image

    from sparkle_video import SparkleEditPipeline
    from sparkle_video.models import (
        SparkleConditionEmbedder,
        SparkleMLLMEncoder,
        make_scheduler,
        tiny_components,
    )

    dim = dit_config["num_attention_heads"] * dit_config["attention_head_dim"]
    z = dit_config["in_channels"]
    rng = np.random.default_rng(0)
    videos = {hw: rng.integers(0, 256, size=(num_frames, *hw, 3), dtype=np.uint8) for hw in sizes}
    rows: dict = {f"{h}x{w}x{num_frames}": {f"guidance_{g:g}": {} for g in GUIDANCE_SCALES} for h, w in sizes}

    tiny = tiny_components(seed=0)
    enc_cfg = {k: v for k, v in tiny["mllm_encoder"].config.items() if not k.startswith("_")}
    encoder = SparkleMLLMEncoder(**{**enc_cfg, "dit_dim": dim, "num_video_queries": context_tokens})
    sparkle = SparkleEditPipeline(
        transformer=_zero_output(WanTransformer3DModel(**dit_config)),
        vae=vae,
        scheduler=make_scheduler(),
        mllm_encoder=encoder,
        tokenizer=tiny["tokenizer"],
        source_embedder=SparkleConditionEmbedder(in_channels=z, dim=dim, patch_size=dit_config["patch_size"]),
    )
    for module in (sparkle.transformer, sparkle.mllm_encoder, sparkle.source_embedder):
        module.to(device, dtype)
    for (h, w), key in zip(sizes, rows, strict=True):
        for g in GUIDANCE_SCALES:
            s, m = timed_steps(
                sparkle,
                steps,
                device,
                g,
                prompt="a snowy forest",
                video=videos[(h, w)],
                height=h,
                width=w,
                num_frames=num_frames,
            )
            rows[key][f"guidance_{g:g}"].update(sparkle_s_per_step=s, sparkle_peak_gib=m)
    del sparkle, encoder
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    lucy_dit = WanTransformer3DModel(**{**dit_config, "in_channels": 2 * z, "text_dim": lucy_text_dim})
    lucy = LucyEditPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=make_scheduler(),
        transformer=_zero_output(lucy_dit),
    )
    lucy.transformer.to(device, dtype)
    g = torch.Generator().manual_seed(1)
    embeds = [torch.randn(1, 512, lucy_text_dim, generator=g).to(device, dtype) for _ in range(2)]
    for (h, w), key in zip(sizes, rows, strict=True):
        frames = [Image.fromarray(f) for f in videos[(h, w)]]
        for g in GUIDANCE_SCALES:
            s, m = timed_steps(
                lucy,
                steps,
                device,
                g,
                video=frames,
                prompt_embeds=embeds[0],
                negative_prompt_embeds=embeds[1],
                height=h,
                width=w,
                num_frames=num_frames,
            )
            row = rows[key][f"guidance_{g:g}"]
            row.update(
                lucy_s_per_step=s, lucy_peak_gib=m, ratio_sparkle_to_lucy=row["sparkle_s_per_step"] / s
            )
    return rows


def offloaded_call(
    dit_config: dict, vae: Any, size: tuple[int, int], num_frames: int, steps: int, dtype: torch.dtype
) -> dict:  # pragma: no cover - needs a GPU
    """One default Sparkle call with ``enable_model_cpu_offload()``: per step, whole call, peak memory."""
    from diffusers import WanTransformer3DModel

    from sparkle_video import SparkleEditPipeline
    from sparkle_video.models import (
        SparkleConditionEmbedder,
        SparkleMLLMEncoder,
        make_scheduler,
        tiny_components,
    )

    dim = dit_config["num_attention_heads"] * dit_config["attention_head_dim"]
    tiny = tiny_components(seed=0)
    enc_cfg = {k: v for k, v in tiny["mllm_encoder"].config.items() if not k.startswith("_")}
    pipe = SparkleEditPipeline(
        transformer=_zero_output(WanTransformer3DModel(**dit_config)).to(dtype),
        vae=vae.to("cpu"),
        scheduler=make_scheduler(),
        mllm_encoder=SparkleMLLMEncoder(**{**enc_cfg, "dit_dim": dim, "num_video_queries": 512}).to(dtype),
        tokenizer=tiny["tokenizer"],
        source_embedder=SparkleConditionEmbedder(
            in_channels=dit_config["in_channels"], dim=dim, patch_size=dit_config["patch_size"]
        ).to(dtype),
    )
    pipe.enable_model_cpu_offload()
    video = np.random.default_rng(0).integers(0, 256, size=(num_frames, *size, 3), dtype=np.uint8)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    per_step, _ = timed_steps(
        pipe,
        steps,
        torch.device("cuda"),
        prompt="a snowy forest",
        video=video,
        height=size[0],
        width=size[1],
        num_frames=num_frames,
    )
    torch.cuda.synchronize()
    return {
        "size": f"{size[0]}x{size[1]}x{num_frames}",
        "s_per_step": per_step,
        "call_s_incl_encode_without_decode": time.perf_counter() - start,
        "peak_gib_whole_call": torch.cuda.max_memory_allocated() / 2**30,
    }


def cpu(args: argparse.Namespace) -> dict:
    from sparkle_video.data.synthetic import make_pair
    from sparkle_video.models import tiny_components
    from sparkle_video.pipelines import tiny_pipeline

    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    clip = make_pair(0, num_frames=9, height=64, width=64).source

    cpu_device = torch.device("cpu")
    runs = [
        timed_steps(pipe, args.steps, cpu_device, prompt="snowy forest", video=clip)[0]
        for _ in range(args.repeats)
    ]
    per_step = statistics.median(runs)
    latents = torch.randn(1, 8, 3, 4, 4)  # one branch, as the default call
    tr = pipe.transformer

    def bare() -> object:
        with torch.no_grad():
            return tr(
                hidden_states=latents,
                timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 8, 32),
                return_dict=False,
            )

    base = median_time(bare, args.repeats * 4)
    tiny = tiny_components(seed=0)
    dit_config = {k: v for k, v in tiny["transformer"].config.items() if not k.startswith("_")}
    lucy = compare_with_lucy(
        dit_config,
        tiny["vae"],
        [(64, 64)],
        9,
        args.steps,
        cpu_device,
        torch.float32,
        context_tokens=8,
        lucy_text_dim=32,
    )
    return {
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "clip": "9 frames 64x64, default guidance 1 (1 branch)",
        "seconds_per_step": per_step,
        "steps_per_second": 1.0 / per_step,
        "baseline_bare_transformer_forward_s": base,
        "ratio_step_to_bare_forward": per_step / base,
        "tiny_vs_lucy": lucy,
    }


def gpu(args: argparse.Namespace) -> dict:  # pragma: no cover - needs a GPU
    from diffusers import AutoencoderKLWan

    from sparkle_video.models.configs import WAN22_TI2V_5B_TRANSFORMER, WAN22_VAE

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs CUDA")
    device = torch.device("cuda")
    vae = AutoencoderKLWan(**WAN22_VAE, latents_mean=[0.0] * 48, latents_std=[1.0] * 48).to(device)
    vae.enable_tiling()
    rows = compare_with_lucy(
        dict(WAN22_TI2V_5B_TRANSFORMER),
        vae,
        [(480, 832), (704, 1280)],
        81,
        args.steps,
        device,
        torch.bfloat16,
        context_tokens=512,
        lucy_text_dim=4096,
    )
    gc.collect()
    torch.cuda.empty_cache()
    offload = offloaded_call(
        dict(WAN22_TI2V_5B_TRANSFORMER), vae, (704, 1280), 81, args.steps, torch.bfloat16
    )
    return {
        "machine": torch.cuda.get_device_name(0),
        "dtype": "bfloat16",
        "sizes": rows,
        "cpu_offload": offload,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # both DiTs are cast the same way; the fp32-module notice is noise here
    if args.steps < 3:
        parser.error("--steps must be at least 3 (the first step is not timed)")
    results = gpu(args) if args.gpu else cpu(args)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
