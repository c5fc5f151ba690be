"""Decode benchmark: VideoReader against plain PyAV decode-all-to-RGB, in one run.

Usage: python benchmarks/decode.py [--repeats 7] [--pairs 16] [--json OUT]

Makes an 81-frame 1280x720 H.264 clip with one keyframe (like the real Sparkle clips), then reports
the median seconds of each case and its ratio to the baseline (plain PyAV, full size, RGB):
metadata-only open, 4 uniformly sampled frames, all 81 frames resized to 832x480, and samples/s of
tar-shard streaming against the extracted folder. Then ``SparkleCollator`` on one row (source + edited,
81 frames at 480x832) against the same ``get_frames`` + ``frames_to_tensor`` done by hand (target <= 1.1x).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from timing import median_time

from sparkle_video import VideoReader, frames_to_tensor, load_sparkle, write_video
from sparkle_video.data import SparkleCollator


def make_clip(path: Path, frames: int = 81, height: int = 720, width: int = 1280) -> None:
    """Textured, moving content so the encoder produces realistic P/B frames."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(height // 8, width // 8, 3), dtype=np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    out = []
    for t in range(frames):
        f = np.roll(base, shift=3 * t, axis=1).copy()
        y = 200 + int(80 * np.sin(t / 9))
        f[y : y + 200, 300 + 4 * t : 500 + 4 * t] = (230, 180, 140)
        out.append(f)
    write_video(np.stack(out), path, fps=16, crf=20)


def plain_decode_all_rgb(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def plain_decode_all_rgb_threaded(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        c.streams.video[0].thread_type = "AUTO"
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def build_dataset(clip: Path, root: Path, pairs: int) -> tuple[Path, Path]:
    from conftest import pack, write_train

    folder = root / "folder"
    write_train(folder, {"location": pairs}, videos=False)
    data = clip.read_bytes()
    for n in range(pairs):
        for kind in ("source", "edited"):
            p = folder / "location" / f"{kind}_video" / f"Sparkle_location_{n:06d}.mp4"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    shards = root / "shards"
    pack(folder, shards, per_shard=max(1, pairs // 2))
    return folder, shards


def samples_per_second(ds_factory: Callable[[], object], repeats: int) -> tuple[float, int]:
    def run() -> int:
        n = 0
        for row in ds_factory():
            row["source_video"].get_frames_uniform(4, size=(240, 416))
            row["edited_video"].get_frames_uniform(4, size=(240, 416))
            n += 1
        return n

    count = run()
    return count / median_time(run, repeats), count


def collator_cases(clip: Path, repeats: int) -> dict[str, float]:
    """One training row (source + edited) through the collator, against the by-hand path (the baseline).

    The cases are timed in turn within each repeat (not one after the other), so that a load change on a
    shared machine hits every case alike; each number is the median over the repeats.
    """
    size = (480, 832)

    def row() -> dict:
        return {
            "id": "x",
            "prompt": "p",
            "source_video": VideoReader(clip),
            "edited_video": VideoReader(clip),
        }

    def by_hand() -> list:
        r = row()
        idx = np.arange(81)
        return [
            frames_to_tensor(r[k].get_frames(idx, size=size), (-1, 1))
            for k in ("source_video", "edited_video")
        ]

    fns = {"by hand: get_frames(size) + frames_to_tensor, 2 videos (baseline)": by_hand}
    for policy in ("stretch", "crop", "pad"):
        collate = SparkleCollator(num_frames=81, size=size, value_range=(-1, 1), resize=policy)
        fns[f"SparkleCollator resize={policy!r}"] = lambda c=collate: c([row()])
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(median_time(fn, 1, warmup=False))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip)
        meta = VideoReader(clip).metadata
        assert (meta.width, meta.height, meta.num_frames) == (1280, 720, 81)

        base = median_time(lambda: plain_decode_all_rgb(clip), args.repeats)
        cases = {
            "plain PyAV decode-all-to-RGB 1280x720 (baseline)": base,
            "plain PyAV decode-all-to-RGB, threaded decoder": median_time(
                lambda: plain_decode_all_rgb_threaded(clip), args.repeats
            ),
            "VideoReader metadata-only open": median_time(lambda: VideoReader(clip).metadata, args.repeats),
            "VideoReader 4 uniform frames": median_time(
                lambda: VideoReader(clip).get_frames_uniform(4), args.repeats
            ),
            "VideoReader all 81 frames resized to 832x480": median_time(
                lambda: VideoReader(clip).get_frames(None, size=(480, 832)), args.repeats
            ),
            "VideoReader all 81 frames 1280x720": median_time(
                lambda: VideoReader(clip).get_frames(None), args.repeats
            ),
        }
        collation = collator_cases(clip, args.repeats)
        folder, shards = build_dataset(clip, Path(tmp), args.pairs)
        local_sps, n_local = samples_per_second(lambda: load_sparkle(folder, streaming=True), 3)
        stream_sps, n_stream = samples_per_second(lambda: load_sparkle(shards, streaming=True), 3)
        assert n_local == n_stream == args.pairs

    results = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {__import__('os').cpu_count()} cores".strip(),
        "pyav": av.__version__,
        "median_seconds": cases,
        "ratio_to_baseline": {k: v / base for k, v in cases.items()},
        "samples_per_second": {"extracted folder": local_sps, "tar-shard streaming": stream_sps},
        "streaming_vs_local": stream_sps / local_sps,
        "collator_seconds": collation,
    }
    hand = next(iter(collation.values()))
    results["collator_ratio_to_by_hand"] = {k: v / hand for k, v in collation.items()}
    print(f"machine: {results['machine']}, PyAV {av.__version__}, {args.repeats} repeats")
    print(f"{'case':<52}{'median s':>10}{'ratio':>8}")
    for name, t in cases.items():
        print(f"{name:<52}{t:>10.4f}{t / base:>8.2f}")
    print(
        f"samples/s (4 frames of each video, {args.pairs} pairs): folder {local_sps:.1f}, "
        f"tar streaming {stream_sps:.1f}, ratio {stream_sps / local_sps:.2f}"
    )
    print(f"{'collation, one row of 2 x 81 frames at 480x832':<52}{'median s':>10}{'ratio':>8}")
    for name, t in collation.items():
        print(f"{name:<52}{t:>10.4f}{t / hand:>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
