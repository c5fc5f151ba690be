"""Fine-tuning speed, against baselines measured in the same run.

CPU (default):
  1. training steps per second of the tiny random-weight pipeline (``SparkleTrainingModule`` forward +
     backward + AdamW step, float32, batch 1, 5 frames at 64x64), against the same loss evaluated
     without gradients (what the backward pass and the optimizer add);
  2. the data pipeline (``BucketedPairStream``: header read, decode, crop to the working size, stack)
     in pairs per second, against decoding the same files' frames alone with ``VideoReader``; on
     tiny written pairs, and on the real 1280x720, 81-frame sample pairs when they are present
     (``--samples``, default ``../shared/samples/sparkle``). The data rate is compared with the
     tiny step's consumption (pairs per second it trains on).

GPU (``--gpu``): the full-size architecture with random bf16 weights (Wan2.2-TI2V-5B DiT, Qwen2.5-VL-3B
with the rank-64 LoRA, Wan2.2 VAE), 81 frames at 480x832 and 704x1280, gradient checkpointing on the
DiT: seconds per training step (VAE encode, encoder, DiT forward and backward; batch 1) and peak GPU
memory. The AdamW step is left out: under the recipe's DeepSpeed ZeRO-2 + CPU offload it runs on the
CPU, and fp32 masters plus Adam states of 5B parameters (81 GB) do not fit one GPU anyway.
``--smoke`` runs the GPU code path on the CPU with the tiny model (a check of this script only).
With ``--gpu`` and deepspeed installed, it also starts the recipe's engine in a child process
(``accelerate launch --config_file deepspeed_zero2_offload.yaml --num_processes 1``): seconds to build
the full-size model and ``accelerator.prepare`` it under ZeRO-2 with the optimizer on the CPU, seconds
for one full optimizer step at 480x832x81 (the CPU Adam included), and peak GPU memory. All of it is
meant to finish in under 8 minutes on one H200-class GPU.

Usage: python benchmarks/train.py [--repeats 5] [--gpu] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timing import median_time

from sparkle_video import VideoReader
from sparkle_video.data.synthetic import make_demo_records, make_pair
from sparkle_video.data.writer import write_sparkle
from sparkle_video.training import (
    BucketedPairStream,
    SparkleTrainingModule,
    configure_trainable,
    sparkle_rows,
)

DEFAULT_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "sparkle"


def tiny_step_rate(repeats: int) -> dict[str, float]:
    """Seconds per tiny training step vs the gradient-free loss on the same batch."""
    from sparkle_video.pipelines import tiny_pipeline

    pipe = tiny_pipeline(0)
    configure_trainable(pipe, lora_rank=4)
    module = SparkleTrainingModule(pipe)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    pair = make_pair(0, num_frames=5, height=64, width=64)
    batch = {
        "source": torch.from_numpy(pair.source[None]),
        "target": torch.from_numpy(pair.edited[None]),
        "prompt": ["Replace the background with a snowy street."],
    }
    g = torch.Generator().manual_seed(0)

    def train_step() -> None:
        module(batch, generator=g)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def loss_only() -> None:
        with torch.no_grad():
            module(batch, generator=g)

    step = median_time(train_step, repeats)
    forward = median_time(loss_only, repeats)
    return {
        "tiny_train_step_s": step,
        "tiny_steps_per_s": 1.0 / step,
        "tiny_loss_only_s": forward,
        "train_step_over_loss_only": step / forward,
    }


def data_rate(root: str, repeats: int, max_pairs: int | None = None) -> dict[str, float]:
    """Pairs per second through the training stream vs decoding the same frames alone."""
    from sparkle_video.pipelines import tiny_pipeline

    pipe = tiny_pipeline(0)  # only its preprocessing is used (no model call)
    rows = sparkle_rows(root, limit=max_pairs)
    pairs = list(rows(0))
    n = len(pairs)

    def stream_all() -> None:
        stream = BucketedPairStream(
            rows, lambda v, f, h, w: pipe.preprocess_video(v, h, w, f, max_frames=f), max_epochs=1
        )
        assert sum(len(b["id"]) for b, _ in stream) == n

    def decode_only() -> None:
        for row in rows(0):
            for name in ("source_video", "edited_video"):
                reader: VideoReader = row[name]
                reader.get_frames(range(min(reader.num_frames, 81)))

    stream_s = median_time(stream_all, repeats)
    decode_s = median_time(decode_only, repeats)
    first = pairs[0]["source_video"]
    return {
        "pairs": n,
        "size": f"{first.width}x{first.height}x{first.num_frames}",
        "stream_pairs_per_s": n / stream_s,
        "decode_only_pairs_per_s": n / decode_s,
        "stream_over_decode_time": stream_s / decode_s,
    }


# -- GPU: full-size random weights ----------------------------------------------------------------------
def build_pipeline(device: torch.device, dtype: torch.dtype, tiny: bool) -> Any:
    """The real architecture with random weights (or the tiny one for ``--smoke``), LoRA on Qwen."""
    from sparkle_video.models import full_size_components, make_scheduler, tiny_components, tiny_tokenizer
    from sparkle_video.pipelines import SparkleEditPipeline

    if tiny:
        parts = tiny_components(0)
    else:
        parts = full_size_components(device=str(device))
        parts["scheduler"] = make_scheduler()
        # no download: an offline tokenizer with Qwen's special tokens (the real vocabulary is bigger, and
        # the model is told where its special tokens are in this one)
        tokenizer = tiny_tokenizer()
        parts["tokenizer"] = tokenizer
        qwen = parts["mllm_encoder"].mllm
        for name, token in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ):
            for config in {id(c): c for c in (qwen.config, qwen.model.config)}.values():
                setattr(config, name, tokenizer.convert_tokens_to_ids(token))
        with torch.no_grad():  # zero output projection: random velocities must not overflow in bf16
            parts["transformer"].proj_out.weight.zero_()
    pipe = SparkleEditPipeline(**parts)
    pipe.to(device=device, dtype=dtype)
    return pipe


def gpu_step(
    pipe: Any, height: int, width: int, frames: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    """Seconds per forward+backward training step and the peak memory of it."""
    configure_trainable(pipe, lora_rank=64)
    pipe.transformer.enable_gradient_checkpointing()
    module = SparkleTrainingModule(pipe, timestep_dtype=torch.bfloat16)
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, size=(1, frames, height, width, 3), dtype=np.uint8)
    batch = {
        "source": torch.from_numpy(clip),
        "target": torch.from_numpy(clip[:, ::-1].copy()),
        "prompt": ["Replace the background with a neon street in the rain."],
    }
    g = torch.Generator().manual_seed(0)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            module(batch, generator=g)["loss"].backward()
        for p in module.parameters():
            p.grad = None

    step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    out = {"size": f"{width}x{height}x{frames}", "s_per_step": statistics.median(times)}
    if cuda:
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def gpu_suite(repeats: int, smoke: bool) -> list[dict[str, Any]]:
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    if device.type != "cuda" and not smoke:
        raise SystemExit("--gpu needs a CUDA device (use --smoke to check the code path on the CPU)")
    sizes = [(64, 64, 5)] if smoke else [(480, 832, 81), (704, 1280, 81)]
    results = []
    for h, w, f in sizes:
        pipe = build_pipeline(device, torch.float32 if smoke else torch.bfloat16, tiny=smoke)
        results.append(gpu_step(pipe, h, w, f, repeats, device))
        del pipe
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


class _OneBatch:
    """A stream of the same random 81-frame pair (what ``Trainer`` needs of a stream)."""

    def __init__(self, height: int, width: int, frames: int):
        clip = np.random.default_rng(0).integers(0, 256, size=(1, frames, height, width, 3), dtype=np.uint8)
        self.batch = {
            "source": torch.from_numpy(clip),
            "target": torch.from_numpy(clip[:, ::-1].copy()),
            "prompt": ["Replace the background with a neon street in the rain."],
            "id": ["random"],
        }

    def __iter__(self):
        while True:
            yield self.batch, {"epoch": 0}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def deepspeed_child(out: str) -> None:
    """Inside ``accelerate launch`` (DeepSpeed): time ``prepare`` and one optimizer step, full size."""
    from sparkle_video.training import TrainConfig, Trainer

    t0 = time.perf_counter()
    device = torch.device("cuda")
    pipe = build_pipeline(device, torch.bfloat16, tiny=False)
    built = time.perf_counter() - t0
    config = TrainConfig(
        output_dir=tempfile.mkdtemp(), max_steps=1, gradient_accumulation_steps=1, report_to=None, prefetch=0
    )
    t0 = time.perf_counter()
    trainer = Trainer(pipe, _OneBatch(480, 832, 81), config)
    prepared = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    batch, _ = next(iter(trainer.stream))
    t0 = time.perf_counter()
    with trainer.accelerator.accumulate(trainer.module):
        loss = trainer.module(batch, generator=torch.Generator().manual_seed(0))["loss"]
        trainer.accelerator.backward(loss)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    report = {
        "engine": trainer.accelerator.distributed_type.value,
        "build_s": built,
        "prepare_s": prepared,
        "first_step_s_480x832x81": time.perf_counter() - t0,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "loss": float(loss),
    }
    Path(out).write_text(json.dumps(report))


def deepspeed_startup(timeout_s: int = 300) -> dict[str, Any]:
    """Run ``deepspeed_child`` under ``accelerate launch`` with the shipped ZeRO-2 offload config."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("deepspeed") is None:
        return {"skipped": "deepspeed is not installed (pip install deepspeed)"}
    from sparkle_video.training import CONFIG_DIR

    out = Path(tempfile.mkdtemp()) / "deepspeed.json"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(Path(CONFIG_DIR) / "deepspeed_zero2_offload.yaml"), "--num_processes", "1",
        str(Path(__file__).resolve()), "--deepspeed-child", str(out),
    ]  # fmt: skip
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout_s} s"}
    if done.returncode != 0 or not out.exists():
        return {"error": (done.stderr or done.stdout)[-1500:]}
    return {"wall_s": time.perf_counter() - t0, **json.loads(out.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", default=str(DEFAULT_SAMPLES))
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="run the --gpu code path on the CPU, tiny model")
    parser.add_argument("--json", default=None)
    parser.add_argument("--deepspeed-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.deepspeed_child:
        deepspeed_child(args.deepspeed_child)
        return
    report: dict[str, Any] = {
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if args.gpu or args.smoke:
        report["device"] = (
            torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "cpu"
        )
        report["full_size_steps"] = gpu_suite(args.repeats, args.smoke)
        if not args.smoke:
            report["deepspeed_zero2_offload"] = deepspeed_startup()
    else:
        report["tiny_step"] = tiny_step_rate(args.repeats)
        with tempfile.TemporaryDirectory() as tmp:
            records = make_demo_records(
                2, ("location", "season"), num_frames=17, height=128, width=224, intermediates=False
            )
            report["data_tiny"] = data_rate(
                write_sparkle(records, Path(tmp) / "d", progress=False), args.repeats
            )
        if Path(args.samples).is_dir():
            report["data_720p_samples"] = data_rate(args.samples, max(1, args.repeats // 2))
        consumption = report["tiny_step"]["tiny_steps_per_s"]  # batch 1: one pair per step
        report["data_over_tiny_consumption"] = report["data_tiny"]["stream_pairs_per_s"] / consumption
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
