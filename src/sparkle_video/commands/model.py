"""``edit`` and ``convert-checkpoint``: the Kiwi-Sparkle editor from the shell (needs the [model] extra)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("edit", help="edit a video from an instruction with a SparkleEditPipeline")
    p.add_argument("video", help="input video (path or URL)")
    p.add_argument("--prompt", required=True, help="the editing instruction")
    p.add_argument(
        "--model", required=True, help="pipeline folder (save_pretrained / convert-checkpoint) or Hub repo"
    )
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--ref-image", default=None, help="optional reference image")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=1.0,
        help="1 (default): the conditional branch only, as the released model; > 1 adds an untrained "
        "unconditional branch (beyond upstream, twice the compute)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-frames", type=int, default=None, help="4k+1 frames (default: up to 81)")
    p.add_argument("--max-pixels", type=int, default=1280 * 720)
    p.add_argument("--fps", type=float, default=15.0, help="output frame rate (official: 15)")
    p.add_argument(
        "--resize-mode",
        choices=("crop", "resize"),
        default="crop",
        help="fit frames to the working size: cover and centre-crop (default, as upstream) or squash",
    )
    p.add_argument("--restore-size", action="store_true", help="map the result back onto the source size")
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("--cpu-offload", action="store_true", help="enable_model_cpu_offload (low GPU memory)")
    p.set_defaults(func=cmd_edit)

    p = subparsers.add_parser(
        "convert-checkpoint", help="turn a Kiwi-Edit/Kiwi-Sparkle training checkpoint into a pipeline folder"
    )
    p.add_argument(
        "--ckpt", required=True, help="training checkpoint (.safetensors, or .pth loaded with weights_only)"
    )
    p.add_argument(
        "--base-transformer", required=True, help="Wan2.2-TI2V-5B diffusers folder/repo (or its transformer/)"
    )
    p.add_argument("--base-vae", required=True, help="Wan2.2 VAE diffusers folder/repo (or its vae/)")
    p.add_argument("--mllm", required=True, help="Qwen2.5-VL-3B-Instruct folder/repo")
    p.add_argument("--out", required=True, help="output folder for save_pretrained")
    p.add_argument("--lora-alpha", type=float, default=1.0, help="scale of the merged LoRA (default 1.0)")
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    p.add_argument(
        "--ref-pad-first",
        action="store_true",
        help="reference-image models trained with the reference tokens first (default: last)",
    )
    p.add_argument(
        "--max-ref-tokens",
        type=int,
        default=768,
        help="reference image's token budget in the encoder (default 768, the Wan2.2-5B recipe's)",
    )
    p.set_defaults(func=cmd_convert)


def cmd_edit(args: argparse.Namespace) -> int:
    import torch

    from ..data.video import VideoReader, write_video
    from ..pipelines import SparkleEditPipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = SparkleEditPipeline.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
    if args.cpu_offload:
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(device)
    ref = None
    if args.ref_image:
        from PIL import Image

        ref = Image.open(args.ref_image).convert("RGB")
    out = pipe(
        prompt=args.prompt,
        video=VideoReader(args.video),
        ref_image=ref,
        negative_prompt=args.negative_prompt,
        num_frames=args.num_frames,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
        max_pixels=args.max_pixels,
        resize_mode=args.resize_mode,
        restore_size=args.restore_size,
        output_type="np",
    )
    frames = (out.frames[0] * 255).clip(0, 255).astype("uint8")  # truncated, as the released inference code
    write_video(frames, args.out, fps=args.fps)
    print(f"wrote {args.out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from ..pipelines.convert import CheckpointError, convert_checkpoint

    try:
        _, report = convert_checkpoint(
            args.ckpt,
            args.base_transformer,
            args.base_vae,
            args.mllm,
            out_dir=args.out,
            lora_alpha=args.lora_alpha,
            dtype=getattr(torch, args.dtype),
            ref_pad_first=args.ref_pad_first,
            max_ref_tokens=args.max_ref_tokens,
        )
    except CheckpointError as e:  # one line that names the checkpoint, whichever step found the problem
        text = " ".join(str(e).split())
        print(f"error: {text if args.ckpt in text else f'{args.ckpt}: {text}'}", file=sys.stderr)
        return 1
    print(f"converted {report.total} tensors ({report.summary()}) into {args.out}")
    print(f"load it with SparkleEditPipeline.from_pretrained({args.out!r})")
    return 0
