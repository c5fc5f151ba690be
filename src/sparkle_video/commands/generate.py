"""``generate``: the five-stage Sparkle data-generation pipeline from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("generate", help="make Sparkle pairs from your own fixed-camera clips")
    sub = p.add_subparsers(dest="generate_command", metavar="STEP")

    r = sub.add_parser("run", help="run the pipeline on a folder of clips (resumable)")
    r.add_argument(
        "--sources", required=True, help="folder of source clips (searched recursively) or one clip"
    )
    r.add_argument(
        "--out", required=True, help="output dataset folder (rerun with the same arguments to resume)"
    )
    r.add_argument(
        "--backends", default="reference", help="shipped config name (default: reference) or a YAML/TOML file"
    )
    r.add_argument("--executor", choices=["local", "ray"], default="local")
    r.add_argument(
        "--ray-address", default=None, help="join this Ray cluster (default: RAY_ADDRESS or a local Ray)"
    )
    r.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="ray: most workers per model stage (default: 1 per stage)",
    )
    r.add_argument("--limit", type=int, default=None, help="use only the first N clips")
    r.add_argument(
        "--themes", nargs="+", default=None, help="themes to draw instructions from (default: all four)"
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("camera-check", help="stage 1 alone: is each clip's camera fixed?")
    c.add_argument("videos", nargs="+")
    c.add_argument("--json", action="store_true", help="one JSON record per line")
    c.add_argument("--backends", default="reference", help="config whose pipeline.camera thresholds to use")
    c.set_defaults(func=cmd_camera_check)

    b = sub.add_parser("backends", help="list the registered backends and shipped configs")
    b.set_defaults(func=cmd_backends)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def cmd_run(args: argparse.Namespace) -> int:
    from ..generation.runner import generate

    if args.limit is not None and args.limit < 0:
        raise ValueError("--limit must be >= 0")
    options = {}
    if args.concurrency is not None:
        if args.executor != "ray" or args.concurrency < 1:
            raise ValueError("--concurrency needs --executor ray and a value >= 1")
        options["concurrency"] = args.concurrency
    result = generate(
        args.sources,
        args.out,
        backends=args.backends,
        executor=args.executor,
        ray_address=args.ray_address,
        executor_options=options,
        limit=args.limit,
        themes=args.themes,
        progress=not args.no_progress,
    )
    print(result.table)
    print(f"dataset: {result.out} (summary in {result.out}/stats.json)")
    return 0


def camera_record(path: str, settings: Any) -> dict[str, Any]:
    """Stage 1's record for one video (``static``, the statistics and the reason)."""
    from ..data.video import VideoReader
    from ..generation.camera import needed_frames
    from ..generation.settings import working_clip
    from ..generation.stages import check_source, filter_camera
    from ..generation.steps import camera_decode_size

    reader = VideoReader(path)
    try:
        meta = reader.metadata
        clip = working_clip(meta.num_frames, float(meta.fps), meta.width, meta.height, settings)
        check = check_source(meta, settings, clip.num_frames)
        if not check.ok:
            return {"video": path, "static": False, "reason": check.reason}
        indices = needed_frames(clip.num_frames, settings.camera)
        size = camera_decode_size(meta.width, meta.height, settings.camera.work_width)
        decoded = reader.get_frames([clip.indices[i] for i in indices], size=size)
        frames = dict(zip(indices, decoded, strict=True))
    except Exception as e:
        return {"video": path, "static": False, "reason": f"unreadable source: {e}"}
    return {"video": path, **filter_camera(frames, settings).to_dict()}


def cmd_camera_check(args: argparse.Namespace) -> int:
    from ..generation.backends.registry import load_backend_config

    settings = load_backend_config(args.backends).pipeline
    for path in args.videos:
        rec = camera_record(path, settings)
        if args.json:
            print(json.dumps(rec, sort_keys=True))
        else:
            verdict = "static" if rec["static"] else "MOVING" if "max_translation" in rec else "REFUSED"
            print(f"{verdict:8} {path}: {rec['reason']}")
        sys.stdout.flush()
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from ..generation.backends.protocols import ROLES
    from ..generation.backends.registry import available_backends, shipped_configs

    for role in ROLES:
        print(f"{role:16} {', '.join(available_backends(role))}")
    print(f"{'configs':16} {', '.join(shipped_configs())}")
    return 0
