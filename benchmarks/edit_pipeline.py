"""SparkleEditPipeline speed.

CPU (default): the tiny random-weight pipeline on a 9-frame 64x64 clip: denoising steps per second,
against the bare stock ``WanTransformer3DModel`` forward on the same latents (the baseline: what the
step costs without the source conditioning, the text-projection bypass and guidance bookkeeping).

GPU (``--gpu``): the full-size architecture with random bf16 weights (Wan2.2-TI2V-5B DiT, 81 frames,
480x832 and 704x1280): seconds per denoising step and peak memory, side by side with the transformer
of diffusers' ``LucyEditPipeline`` (same backbone, the source latents concatenated on channels, text
context through the DiT's text projection), with classifier-free guidance (2 branches) for both.

Usage: python benchmarks/edit_pipeline.py [--steps 10] [--repeats 5] [--gpu] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu(args: argparse.Namespace) -> dict:
    from sparkle_video.models import tiny_pipeline
    from sparkle_video.synthetic import make_pair

    torch.set_num_threads(max(1, torch.get_num_threads()))
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    clip = make_pair(0, num_frames=9, height=64, width=64).source

    def call(steps: int) -> object:
        return pipe("snowy forest", clip, num_inference_steps=steps, guidance_scale=5.0, output_type="latent",
                    generator=torch.Generator().manual_seed(0))

    t_many = median_time(lambda: call(args.steps), args.repeats)
    t_one = median_time(lambda: call(1), args.repeats)
    per_step = (t_many - t_one) / (args.steps - 1)
    latents = torch.randn(2, 8, 3, 4, 4)
    tr = pipe.transformer

    def bare() -> object:
        with torch.no_grad():
            return tr(hidden_states=latents, timestep=torch.tensor([500.0, 500.0]),
                      encoder_hidden_states=torch.randn(2, 8, 32), return_dict=False)

    base = median_time(bare, args.repeats * 4)
    return {
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "clip": "9 frames 64x64, guidance 5 (2 branches)",
        "seconds_per_step": per_step,
        "steps_per_second": 1.0 / per_step,
        "baseline_bare_transformer_forward_s": base,
        "ratio_step_to_bare_forward": per_step / base,
    }


def _step_time(model: torch.nn.Module, inputs: dict, repeats: int, conditioning: Callable | None = None) -> tuple[float, float]:
    """Median seconds of one transformer call and its peak memory (GiB)."""

    def step() -> object:
        with torch.no_grad():
            if conditioning is None:
                return model(**inputs, return_dict=False)
            with conditioning():
                return model(**inputs, return_dict=False)

    torch.cuda.reset_peak_memory_stats()
    seconds = median_time(step, repeats, torch.cuda.synchronize)
    return seconds, torch.cuda.max_memory_allocated() / 2**30


def gpu(args: argparse.Namespace) -> dict:  # pragma: no cover - needs a GPU
    from functools import partial

    from diffusers import WanTransformer3DModel

    from sparkle_video.models.configs import WAN22_TI2V_5B_TRANSFORMER
    from sparkle_video.models.embedders import SparkleConditionEmbedder
    from sparkle_video.pipelines.pipeline_sparkle_edit import attach_conditioning

    assert torch.cuda.is_available(), "--gpu needs CUDA"
    dev, dtype = torch.device("cuda"), torch.bfloat16
    results: dict = {"machine": torch.cuda.get_device_name(0), "sizes": {}}
    sizes = [(480, 832), (704, 1280)]
    shapes = {hw: (21, hw[0] // 16, hw[1] // 16) for hw in sizes}  # 81 frames -> 21 latent frames
    t = torch.tensor([500.0, 500.0], device=dev, dtype=dtype)
    rows: dict = {hw: {} for hw in sizes}

    ours = WanTransformer3DModel(**WAN22_TI2V_5B_TRANSFORMER).to(dev, dtype)
    embedder = SparkleConditionEmbedder(in_channels=48, dim=3072, zero_init=False).to(dev, dtype)
    for hw in sizes:  # Sparkle: source tokens added to the patchified latents, 512 query tokens of context
        lat = torch.randn(2, 48, *shapes[hw], device=dev, dtype=dtype)
        tokens = embedder(torch.randn(1, 48, *shapes[hw], device=dev, dtype=dtype))
        inputs = {"hidden_states": lat, "timestep": t, "encoder_hidden_states": torch.randn(2, 512, 3072, device=dev, dtype=dtype)}
        cond = partial(attach_conditioning, ours, tokens, None, {"sigma": 0.5})
        rows[hw]["sparkle"] = _step_time(ours, inputs, args.repeats, cond)
    del ours
    torch.cuda.empty_cache()
    lucy = WanTransformer3DModel(**dict(WAN22_TI2V_5B_TRANSFORMER, in_channels=96)).to(dev, dtype)
    for hw in sizes:  # LucyEditPipeline: source latents concatenated on channels, UMT5 text context
        lat = torch.randn(2, 96, *shapes[hw], device=dev, dtype=dtype)
        inputs = {"hidden_states": lat, "timestep": t, "encoder_hidden_states": torch.randn(2, 512, 4096, device=dev, dtype=dtype)}
        rows[hw]["lucy"] = _step_time(lucy, inputs, args.repeats)
    for (h, w), row in rows.items():
        (s_s, s_m), (l_s, l_m) = row["sparkle"], row["lucy"]
        results["sizes"][f"{h}x{w}x81"] = {
            "sparkle_s_per_step": s_s, "lucy_s_per_step": l_s, "ratio": s_s / l_s,
            "sparkle_peak_gib": s_m, "lucy_peak_gib": l_m,
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = gpu(args) if args.gpu else cpu(args)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
