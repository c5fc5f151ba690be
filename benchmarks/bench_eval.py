"""Evaluation speed: judge-free scoring of one 81-frame 720p pair, and judge throughput with concurrency.

1. ``metrics``: per pair, the median seconds of ``compute_metrics`` on an 81-frame 720p pair, measured
   interleaved with its baseline in the same run: decoding both clips of *that pair* at the metrics'
   working size (the fair floor), with the full-size RGB decode for reference. Pairs: a synthetic 1280x720 source with a 1280x704 edit (the released model's output size),
   plus every real pair under ``--samples`` (default ``../shared/samples/sparkle`` beside the
   checkout, skipped when absent). Target: <= 1.0 s median per pair on an idle 2-core machine.
2. ``judge``: a loopback chat-completions server (in a child process, like a remote judge it does not
   share the client's CPU time) that answers every request after a fixed latency (200 ms); wall time of ``judge_results`` over the same pairs with ``concurrency=N`` vs
   ``concurrency=1``. Target: speed-up >= 0.8 * N for N = 8.

Run: ``python benchmarks/bench_eval.py [--repeats 5] [--pairs 48] [--latency 0.2] [--samples DIR]
[--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_fixtures import JudgeServer, edit_clip, source_clip
from timing import median_time

from sparkle_video.bench.judge import OpenAIJudge, judge_results
from sparkle_video.bench.metrics import MetricConfig, compute_metrics, working_size
from sparkle_video.data.video import VideoReader, write_video


def make_pair(folder: Path) -> tuple[Path, Path]:
    """An 81-frame 1280x720 source with a moving subject, and a lively 1280x704 edit of it."""
    src, mask = source_clip(seed=1, frames=81, height=720, width=1280, speed=8, box=240)
    edit = edit_clip(src, mask, "lively", speed=6)
    edit = np.stack([cv2.resize(f, (1280, 704), interpolation=cv2.INTER_AREA) for f in edit])
    s, e = folder / "source.mp4", folder / "edited.mp4"
    write_video(src, s, fps=16)
    write_video(edit, e, fps=15)
    return s, e


def bench_metrics(source: Path, edited: Path, repeats: int) -> dict[str, float]:
    """Median seconds of the metrics and of two decodes of the pair, interleaved repeat by repeat so that
    load from other processes slows all alike: at the metrics' working size (the fair floor: the metrics
    cannot cost less than reading their input) and at full size (what a metric that converts at full
    size would pay before any work)."""
    config = MetricConfig()

    def decode_small() -> None:
        for p in (source, edited):
            reader = VideoReader(str(p))
            reader.get_frames(None, size=working_size(reader.height, reader.width, config.work_height))

    compute_metrics(source, edited)  # warm-up (imports, OpenCV init, file cache)
    small, full, metrics = [], [], []
    for _ in range(repeats):
        small.append(median_time(decode_small, 1, warmup=False))
        full.append(
            median_time(
                lambda: (VideoReader(str(source)).get_frames(), VideoReader(str(edited)).get_frames()),
                1,
                warmup=False,
            )
        )
        metrics.append(median_time(lambda: compute_metrics(source, edited), 1, warmup=False))
    d, f, m = statistics.median(small), statistics.median(full), statistics.median(metrics)
    return {
        "decode_pair_working_size_s": d,
        "decode_pair_full_rgb_s": f,
        "metrics_s": m,
        "metrics_over_decode": m / d,
        "metrics_over_full_decode": m / f,
    }


def sample_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Real (source, edited) pairs in the Hub preview layout ``{theme}/{source,edited}_video/{id}.mp4``."""
    out = {}
    for src in sorted(folder.glob("*/source_video/*.mp4")):
        edited = src.parent.parent / "edited_video" / src.name
        if edited.is_file():
            out[src.stem] = (src, edited)
    return out


def _serve(latency: float, urls: Queue, stop: Event) -> None:
    """Child process: the loopback judge, so its JSON parsing does not share the client's GIL."""
    server = JudgeServer(latency=latency)
    urls.put(server.url)
    stop.wait()
    server.close()


def run_judge(rows: list[dict], save_dir: str, url: str, concurrency: int) -> float:
    judge = OpenAIJudge("bench-judge", base_url=url + "/v1", api_key_env="BENCH_JUDGE_KEY")
    t0 = time.perf_counter()
    run = judge_results(rows, save_dir, judge, concurrency=concurrency, progress=False)
    elapsed = time.perf_counter() - t0
    assert run.answered == len(rows), run.report()
    return elapsed


def bench_judge(
    source: Path, edited: Path, pairs: int, latency: float, concurrency: int, repeats: int = 3
) -> dict[str, float]:
    os.environ["BENCH_JUDGE_KEY"] = "local-benchmark-key"
    ctx = multiprocessing.get_context("spawn")
    urls, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_serve, args=(latency, urls, stop), daemon=True)
    child.start()
    try:
        url = urls.get(timeout=60)
        timings: dict[int, list[float]] = {1: [], concurrency: []}
        for n in [1, concurrency] * repeats:
            with tempfile.TemporaryDirectory() as tmp:
                rows = []
                for i in range(pairs):
                    sid = f"Sparkle_location_{i:06d}"
                    out = Path(tmp) / "location" / "urban---rooftop" / f"{sid}_edited.mp4"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    os.link(edited, out)
                    rows.append({"id": sid, "theme": "location", "prompt": f"Make it lively ({sid}).",
                                 "subtheme": "urban", "scene": "rooftop", "source_video": VideoReader(str(source))})  # fmt: skip
                timings[n].append(run_judge(rows, tmp, url, n))
        seq, conc = statistics.median(timings[1]), statistics.median(timings[concurrency])
        return {
            "pairs": pairs,
            "latency_s": latency,
            "repeats": repeats,
            "sequential_s": seq,
            f"concurrent_{concurrency}_s": conc,
            "speedup": seq / conc,
            "speedup_over_n": seq / conc / concurrency,
        }
    finally:
        stop.set()
        child.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--judge-repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--samples", default=str(Path(__file__).resolve().parents[2] / "shared" / "samples" / "sparkle")
    )
    parser.add_argument("--skip-judge", action="store_true", help="metrics only")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source, edited = make_pair(Path(tmp))
        pairs = {"synthetic": (source, edited), **sample_pairs(Path(args.samples))}
        per_pair = {name: bench_metrics(s, e, args.repeats) for name, (s, e) in pairs.items()}
        j = (
            None
            if args.skip_judge
            else bench_judge(source, edited, args.pairs, args.latency, args.concurrency, args.judge_repeats)
        )
    print(f"cpu cores: {os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.1f}")
    print(
        "metrics, per 81-frame 720p pair (median of the repeats; baseline = decoding that pair at the "
        "metrics' working size, the fair floor; full-size RGB decode for reference):"
    )
    for name, m in per_pair.items():
        print(
            f"  {name:28s} metrics {m['metrics_s']:.3f} s, working-size decode "
            f"{m['decode_pair_working_size_s']:.3f} s (ratio {m['metrics_over_decode']:.2f}x), full decode "
            f"{m['decode_pair_full_rgb_s']:.3f} s ({m['metrics_over_full_decode']:.2f}x)"
        )
    med = statistics.median(m["metrics_s"] for m in per_pair.values())
    ratio = statistics.median(m["metrics_over_decode"] for m in per_pair.values())
    print(
        f"  median over {len(per_pair)} pairs: {med:.3f} s per pair (target <= 1.0 s), "
        f"{ratio:.2f}x its working-size decode"
    )
    m = {"pairs": per_pair, "median_metrics_s": med, "median_metrics_over_decode": ratio}
    if j is None:
        if args.json:
            Path(args.json).write_text(json.dumps({"metrics": m}, indent=2) + "\n")
        return
    print(
        f"judge, {j['pairs']} pairs at {j['latency_s'] * 1000:.0f} ms latency (median of {j['repeats']}): sequential {j['sequential_s']:.2f} s, "
        f"concurrency {args.concurrency} {j[f'concurrent_{args.concurrency}_s']:.2f} s, speed-up {j['speedup']:.2f}x "
        f"= {j['speedup_over_n']:.2f} N (target >= 0.8 N)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"metrics": m, "judge": j}, indent=2) + "\n")


if __name__ == "__main__":
    main()
