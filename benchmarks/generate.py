"""Generation benchmark: stage 1 against decode-all, and the reference pipeline local against Ray.

Usage: python benchmarks/generate.py [--clips 8] [--workers 2] [--e2e-clips 2] [--e2e-size 1280x720]
                                     [--no-ray] [--json OUT]

1. Stage 1 (fixed-camera check) on 81-frame 1280x720 H.264 clips, ``--workers`` processes, in clips/s,
   against decoding every frame of the same clips to RGB with the same number of processes (the floor
   any per-clip check must pay, since Sparkle-style clips have one keyframe). Target: >= 5 clips/s on
   2 cores.
2. The reference pipeline end to end (all five stages + publishing) in seconds per clip with the local
   executor, then the same with ``--executor ray`` (a fresh local Ray; its start-up is reported apart),
   and the Ray/local ratio.
3. ``--backends NAME_OR_FILE`` (e.g. ``tiny``): instead of 1-2, the pipeline end to end with those
   backends, seconds per stage (summed from the run's ledger), against the reference backends on the
   same clips (``--e2e-clips`` clips of 21 frames at ``--stage-size``, default 192x112).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av

from sparkle_video.data.synthetic import make_pair
from sparkle_video.data.video import write_video


def make_clips(folder: Path, count: int, frames: int, height: int, width: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"clip_{n:03d}.mp4"
        write_video(make_pair(n, frames, height, width, speed=4.0).source, path, fps=16)
        paths.append(str(path))
    return paths


def decode_all(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for frame in container.decode(video=0) if frame.to_ndarray(format="rgb24") is not None)


def camera_check(path: str) -> bool:
    from sparkle_video.commands.generate import camera_record
    from sparkle_video.generation.settings import PipelineSettings

    return bool(camera_record(path, PipelineSettings())["static"])


def clips_per_second(fn, paths: list[str], workers: int) -> float:
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(fn, paths[:workers]))  # warm-up: imports, codec init, file cache
        start = time.perf_counter()
        results = list(pool.map(fn, paths))
        elapsed = time.perf_counter() - start
    assert all(results), "every clip must be processed (and, for stage 1, found static)"
    return len(paths) / elapsed


def end_to_end(sources: Path, out: Path, executor: str) -> tuple[float, list[str], float]:
    from sparkle_video.generation.runner import generate

    init_s = 0.0
    if executor == "ray":
        from sparkle_video.generation.executors import init_ray

        t0 = time.perf_counter()
        init_ray(num_cpus=os.cpu_count())
        init_s = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = generate(sources, out, executor=executor, progress=False)
    return time.perf_counter() - t0, result.published, init_s


# -- per-stage seconds for any backend config (``--backends``) ------------------------------------------
def per_stage_seconds(sources: Path, out: Path, backends: str) -> dict:
    """Run the pipeline with ``backends``; each stage's seconds summed over the samples from the ledger."""
    from sparkle_video.generation.ledger import STAGES
    from sparkle_video.generation.runner import generate

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = generate(sources, out, backends=backends, progress=False)
    total = time.perf_counter() - t0
    stages = {}
    for stage in STAGES:
        entries = (out / "_generation" / "ledger" / stage).glob("*.json")
        stages[stage] = round(sum(json.loads(p.read_text()).get("seconds", 0.0) for p in entries), 3)
    return {
        "backends": backends,
        "stage_s": stages,
        "total_s": round(total, 3),
        "published": len(result.published),
    }


def compare_backends(backends: str, clips: int, size: str, threads: int) -> dict:
    """``per_stage_seconds`` for ``backends`` and for the reference backends on the same clips; ratios."""
    import torch

    torch.set_num_threads(threads)  # tiny models: thread start-up dominates, one thread is fastest
    width, height = (int(v) for v in size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        sources = Path(tmp) / "sources"
        make_clips(sources, clips, 21, height, width)
        reference = per_stage_seconds(sources, Path(tmp) / "reference", "reference")
        chosen = per_stage_seconds(sources, Path(tmp) / "chosen", backends)
    ratios = {
        stage: round(chosen["stage_s"][stage] / reference["stage_s"][stage], 2)
        for stage in chosen["stage_s"]
        if reference["stage_s"][stage] > 0
    }
    for stage, seconds in chosen["stage_s"].items():
        print(
            f"{stage:11} {backends}: {seconds:7.2f} s   reference: {reference['stage_s'][stage]:7.2f} s"
            f"   ratio {ratios.get(stage, float('nan')):.2f}"
        )
    return {
        "clips": clips,
        "clip": f"21 frames {width}x{height}",
        "threads": threads,
        "chosen": chosen,
        "reference": reference,
        "chosen_over_reference": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--e2e-clips", type=int, default=2)
    parser.add_argument("--e2e-size", default="1280x720", help="WxH of the end-to-end clips")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--backends", default=None, help="per-stage seconds with this config (see 3.)")
    parser.add_argument("--stage-size", default="192x112", help="WxH of the --backends clips")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for --backends")
    args = parser.parse_args()
    if args.backends:
        stage_report = compare_backends(args.backends, args.e2e_clips, args.stage_size, args.threads)
        if args.json:
            Path(args.json).write_text(json.dumps(stage_report, indent=1) + "\n")
        print(json.dumps(stage_report, indent=1))
        return

    report: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_clips(tmp / "stage1", args.clips, 81, 720, 1280)
        decode_rate = clips_per_second(decode_all, paths, args.workers)
        stage1_rate = clips_per_second(camera_check, paths, args.workers)
        report["stage1"] = {
            "clips": args.clips,
            "clip": "81 frames 1280x720 H.264",
            "decode_all_clips_per_s": round(decode_rate, 2),
            "stage1_clips_per_s": round(stage1_rate, 2),
            "stage1_over_decode_all": round(stage1_rate / decode_rate, 2),
            "target_clips_per_s": 5.0,
        }
        print(
            f"stage 1: {stage1_rate:.2f} clips/s; decode-all baseline {decode_rate:.2f} clips/s "
            f"(ratio {stage1_rate / decode_rate:.2f}); {args.workers} processes, 81x1280x720 clips"
        )

        width, height = (int(v) for v in args.e2e_size.split("x"))
        e2e_src = tmp / "e2e"
        make_clips(e2e_src, args.e2e_clips, 81, height, width)
        local_s, local_ids, _ = end_to_end(e2e_src, tmp / "local", "local")
        report["e2e"] = {
            "clips": args.e2e_clips,
            "clip": f"81 frames {width}x{height}",
            "published": len(local_ids),
            "local_s_per_clip": round(local_s / args.e2e_clips, 2),
        }
        print(
            f"reference end to end, local: {local_s / args.e2e_clips:.2f} s/clip "
            f"({len(local_ids)}/{args.e2e_clips} published, {width}x{height}, 81 frames)"
        )
        if not args.no_ray:
            ray_s, ray_ids, init_s = end_to_end(e2e_src, tmp / "ray", "ray")
            assert ray_ids == local_ids, "Ray and local runs must publish the same ids"
            report["e2e"].update(
                ray_s_per_clip=round(ray_s / args.e2e_clips, 2),
                ray_init_s=round(init_s, 2),
                ray_over_local=round(ray_s / local_s, 2),
            )
            print(
                f"reference end to end, ray: {ray_s / args.e2e_clips:.2f} s/clip (+ {init_s:.1f} s Ray start-up); "
                f"ray/local = {ray_s / local_s:.2f}"
            )
            import ray

            ray.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
