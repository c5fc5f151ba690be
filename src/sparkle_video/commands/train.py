"""``train``: fine-tune a ``SparkleEditPipeline`` on Sparkle pairs (needs the [train] extra).

Runs as is on one device, or on many with ``accelerate launch [--config_file FILE] -m sparkle_video.cli
train ...`` (example DeepSpeed ZeRO-2 / FSDP files ship in ``sparkle_video/training/configs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")

#: CLI destinations that are ``TrainConfig`` fields (the rest describe the data and the model).
_CONFIG_FIELDS = {
    "max_steps": "max_steps",
    "lr": "learning_rate",
    "weight_decay": "weight_decay",
    "grad_accum": "gradient_accumulation_steps",
    "max_grad_norm": "max_grad_norm",
    "lr_scheduler": "lr_scheduler",
    "lr_warmup_steps": "lr_warmup_steps",
    "mixed_precision": "mixed_precision",
    "gradient_checkpointing": "gradient_checkpointing",
    "encoder_gradient_checkpointing": "encoder_gradient_checkpointing",
    "lora_rank": "lora_rank",
    "lora_alpha": "lora_alpha",
    "ema_decay": "ema_decay",
    "checkpointing_steps": "checkpointing_steps",
    "checkpoint_unit": "checkpoint_unit",
    "train_reference": "train_reference",
    "allow_changed_settings": "allow_changed_settings",
    "checkpoints_total_limit": "checkpoints_total_limit",
    "seed": "seed",
    "report_to": "report_to",
    "prefetch": "prefetch",
    "export_dtype": "export_dtype",
    "save_dtype": "save_dtype",
    "resume": "resume",
}


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune a SparkleEditPipeline on Sparkle pairs (accelerate + peft)",
        description="Fine-tune a SparkleEditPipeline with the Kiwi-Edit recipe. Writes OUT/pipeline (from_pretrained), "
        "OUT/kiwi/model.safetensors (Kiwi-Edit checkpoint format), OUT/checkpoints/step-N and OUT/train_log.jsonl.",
    )
    p.add_argument(
        "--config", default=None, help="YAML/JSON file of defaults for any option below (flags win)"
    )
    p.add_argument("--data", help="Sparkle source: folder, shard folder/URL, or Hub dataset repo (streamed)")
    p.add_argument(
        "--model", help="pipeline folder (save_pretrained / convert-checkpoint) or Hub repo to fine-tune"
    )
    p.add_argument("--out", help="output folder")
    p.add_argument("--themes", nargs="+", default=None)
    p.add_argument("--subthemes", nargs="+", default=None)
    p.add_argument(
        "--min-score",
        action="append",
        default=[],
        metavar="FILE=THRESHOLD",
        help="keep pairs whose stage score passes, e.g. edited_video_score=8.5 (repeatable)",
    )
    p.add_argument("--limit", type=int, default=None, help="at most this many pairs")
    p.add_argument("--shuffle-buffer", type=int, default=0, help="streaming shuffle buffer (0: file order)")
    p.add_argument(
        "--errors", choices=("raise", "skip"), default="raise", help="bad pairs: fail, or skip and report"
    )
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--num-frames", type=int, default=None, help="4k+1 (default: up to 81 from each pair)")
    p.add_argument(
        "--preprocess",
        choices=("pipeline", "collator"),
        default="pipeline",
        help="frame preparation: the pipeline's own (identical to inference) or SparkleCollator's (resizes while decoding)",
    )
    p.add_argument("--max-pixels", type=int, default=1280 * 720)
    p.add_argument("--max-frames", type=int, default=81)
    p.add_argument("--batch-size", type=int, default=1, help="pairs per device per micro-batch")
    p.add_argument("--max-steps", type=int, default=10_000)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument(
        "--max-grad-norm",
        type=float,
        default=1.0,
        help="clip gradients at this norm (upstream's effective value, 1.0; 0: no clipping)",
    )
    p.add_argument(
        "--lr-scheduler",
        default="kiwi",
        choices=("kiwi", "constant", "constant_with_warmup", "linear", "cosine"),
    )
    p.add_argument("--lr-warmup-steps", type=int, default=0)
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="bf16")
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    p.add_argument(
        "--encoder-gradient-checkpointing", action="store_true", help="also checkpoint the Qwen layers"
    )
    p.add_argument("--lora-rank", type=int, default=64, help="LoRA rank on Qwen's q/k/v/o (0: Qwen frozen)")
    p.add_argument("--lora-alpha", type=float, default=None, help="default: the rank")
    p.add_argument("--ema-decay", type=float, default=None)
    p.add_argument("--checkpointing-steps", type=int, default=500)
    p.add_argument(
        "--checkpoint-unit",
        choices=("micro", "optimizer"),
        default="micro",
        help="what --checkpointing-steps counts: micro-batches (upstream's save_steps) or optimizer steps",
    )
    p.add_argument(
        "--train-reference",
        action="store_true",
        help="also train the reference-image queries, connector and embedder (upstream's stage 2 does not)",
    )
    p.add_argument("--checkpoints-total-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--report-to", default="auto", help="auto (tensorboard if installed), none, tensorboard, wandb, all"
    )
    p.add_argument("--prefetch", type=int, default=2, help="batches decoded ahead in a background thread")
    p.add_argument(
        "--export-dtype",
        choices=(*DTYPES, "none"),
        default="bfloat16",
        help="dtype of OUT/kiwi/model.safetensors (upstream saves bf16)",
    )
    p.add_argument(
        "--save-dtype",
        choices=(*DTYPES, "none"),
        default="bfloat16",
        help="dtype of the OUT/pipeline folder (none: as trained, fp32 trainable weights)",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="dtype the model is loaded in (trainable weights stay fp32)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=False,
        help="continue from the latest intact checkpoint in --out (or from the given checkpoint folder)",
    )
    p.add_argument(
        "--allow-changed-settings",
        action="store_true",
        help="resume even if lr, schedule, LoRA, batch, sizes or seed differ from the checkpoint's (recorded)",
    )
    p.set_defaults(func=cmd_train, _parser=p)


def config_defaults(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Option defaults from a YAML/JSON file; keys are option names (``max_steps`` or ``max-steps``)."""
    import yaml

    with open(path) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    known = {a.dest for a in parser._actions}
    out = {}
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest not in known or dest in ("config", "func", "help"):
            raise ValueError(f"{path}: unknown option {key!r}")
        out[dest] = value
    return out


def apply_config_file(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill ``args`` from ``args.config``; options given on the command line (not at their default) win."""
    values = config_defaults(args.config, parser)
    for dest, value in values.items():
        if getattr(args, dest) == parser.get_default(dest):
            setattr(args, dest, value)


def parse_min_scores(items: list[str]) -> dict[str, float]:
    scores = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--min-score takes FILE=THRESHOLD, got {item!r}")
        scores[name.strip()] = float(value)
    return scores


def train_config(args: argparse.Namespace) -> Any:
    from ..training import TrainConfig

    values = {field: getattr(args, dest) for dest, field in _CONFIG_FIELDS.items()}
    values["lora_rank"] = values["lora_rank"] or None
    for key in ("export_dtype", "save_dtype"):
        values[key] = None if values[key] in (None, "none") else values[key]
    values["report_to"] = None if values["report_to"] in (None, "none") else values["report_to"]
    values["data_settings"] = {name: _plain(getattr(args, name, None)) for name in DATA_SETTINGS}
    return TrainConfig(output_dir=args.out, **values)


#: Options outside ``TrainConfig`` that change what a step computes; recorded and compared on resume.
DATA_SETTINGS = (
    "batch_size",
    "height",
    "width",
    "num_frames",
    "max_pixels",
    "max_frames",
    "preprocess",
    "dtype",
    "themes",
    "subthemes",
    "min_score",
    "limit",
    "shuffle_buffer",
)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``train``; a refused run or an OS error (full disk, ...) ends in one ``error:`` line, exit 1."""
    from ..safe_write import os_error_line
    from ..training.loop import TrainingError

    try:
        return _cmd_train(args)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 1


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from ..pipelines import SparkleEditPipeline
    from ..training import BucketedPairStream, ShapePolicy, Trainer, collator_preprocess, sparkle_rows
    from ..training.loop import make_accelerator

    if args.config:
        apply_config_file(args, args._parser)
    missing = [f"--{n}" for n in ("data", "model", "out") if not getattr(args, n)]
    if missing:
        raise ValueError(f"train needs {', '.join(missing)}")
    config = train_config(args)
    pipe = SparkleEditPipeline.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
    accelerator = make_accelerator(config)
    rows = sparkle_rows(
        args.data,
        themes=args.themes,
        subthemes=args.subthemes,
        min_scores=parse_min_scores(args.min_score),
        shuffle_buffer=args.shuffle_buffer,
        seed=args.seed,
        errors=args.errors,
        limit=args.limit,
        rank=accelerator.process_index if accelerator.num_processes > 1 else None,
        world_size=accelerator.num_processes if accelerator.num_processes > 1 else None,
    )
    policy = ShapePolicy(
        args.height, args.width, args.num_frames, args.max_pixels, args.max_frames, pipe.size_multiple
    )
    if args.preprocess == "collator":
        preprocess = collator_preprocess
    else:

        def preprocess(video, f, h, w):
            return pipe.preprocess_video(video, h, w, f, max_frames=f)

    stream = BucketedPairStream(
        rows,
        preprocess,
        batch_size=args.batch_size,
        policy=policy,
        errors=args.errors,
    )
    result = Trainer(pipe, stream, config, accelerator=accelerator).run()
    if accelerator.is_main_process:
        print(json.dumps(dataclasses.asdict(result), indent=1))
        print(f"load it with SparkleEditPipeline.from_pretrained({result.pipeline_dir!r})")
    return 0
