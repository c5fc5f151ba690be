"""Decode benchmark: VideoReader against the floor and the tools users would pick, like for like.

Usage: python benchmarks/decode.py [--rounds 5] [--clips 8] [--samples DIR] [--json OUT]

Clips: the real Sparkle samples under ``--samples`` (default ``../shared/samples/sparkle`` beside the
repository) when present, else a generated 1280x720, 81-frame H.264 clip with one keyframe (like the
real ones). Every contender produces the same output for a case (RGB uint8 frames of the same size, the
same area filter for resizes), and the cases are timed in interleaved rounds within one run, so a load
change hits all alike; each ratio is against the named baseline of its case, as min and median over
the rounds. Contenders (skipped by name when not installed): PyAV decode-only (the floor: frames are
decoded, never converted), PyAV writing into a preallocated array with ``thread_type="AUTO"``, plain
PyAV with ``np.stack``, decord, OpenCV (``pip install -e ".[peers]"`` adds decord and webdataset).
``ffmpeg -benchmark`` when the binary is on PATH.

Cases: full decode; 4 sampled frames; 81 frames at 832x480; 16 frames at <= 512x512 (the VLM input);
then DataLoader samples/s and worker peak RSS against ``datasets`` + PyAV and webdataset + PyAV, and the
bytes each path reads per sample (``/proc/self/io``), and the collator against the by-hand path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sparkle_video import VideoReader, frames_to_tensor, write_video
from sparkle_video.data import SparkleCollator
from sparkle_video.data.video import model_frame_size, uniform_indices

DEFAULT_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "sparkle"
RESIZED = (480, 832)
VLM_PIXELS = 512 * 512


def optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


cv2 = optional("cv2")
decord = optional("decord")


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


def find_clips(samples: Path, count: int, tmp: Path) -> tuple[list[Path], str]:
    real = sorted(samples.glob("*/*_video/*.mp4")) if samples.is_dir() else []
    if real:
        return real[:count], f"{min(count, len(real))} real Sparkle clips"
    clip = tmp / "clip.mp4"
    make_clip(clip)
    return [clip], "a generated 1280x720x81 H.264 clip (real samples not found)"


# -- contenders: each takes (path, indices or None, size or None) and returns (N, H, W, 3) uint8 ----
def pyav_floor(path: Path, indices: list[int] | None, size: tuple[int, int] | None) -> int:
    """Decode-only: every frame up to the last wanted one is decoded, none converted (the floor)."""
    last = max(indices) if indices else None
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        for _ in c.decode(stream):
            n += 1
            if last is not None and n > last:
                break
    return n


def _kwargs(size: tuple[int, int] | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"format": "rgb24"}
    if size is not None:
        kw.update(height=size[0], width=size[1], interpolation="AREA")
    return kw


def pyav_prealloc(path: Path, indices: list[int] | None, size: tuple[int, int] | None) -> np.ndarray:
    """PyAV as a careful user writes it: AUTO threads, a preallocated output, only wanted frames converted."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        n = stream.frames
        wanted = list(range(n)) if indices is None else sorted(set(indices))
        slot = {i: k for k, i in enumerate(wanted)}
        h, w = size or (stream.codec_context.height, stream.codec_context.width)
        out = np.empty((len(wanted), h, w, 3), np.uint8)
        kw = _kwargs(size)
        for i, frame in enumerate(c.decode(stream)):
            if i in slot:
                out[slot[i]] = frame.to_ndarray(**kw)
            if i >= wanted[-1]:
                break
    return out


def pyav_stack(path: Path, indices: list[int] | None, size: tuple[int, int] | None) -> np.ndarray:
    """Plain PyAV: default threading, a list of frames stacked at the end."""
    with av.open(str(path)) as c:
        wanted = None if indices is None else set(indices)
        last = None if indices is None else max(indices)
        frames = []
        kw = _kwargs(size)
        for i, frame in enumerate(c.decode(video=0)):
            if wanted is None or i in wanted:
                frames.append(frame.to_ndarray(**kw))
            if last is not None and i >= last:
                break
    return np.stack(frames)


def opencv(path: Path, indices: list[int] | None, size: tuple[int, int] | None) -> np.ndarray:
    """OpenCV: read every frame up to the last wanted (BGR), convert (and area-resize) the wanted ones."""
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = list(range(n)) if indices is None else sorted(set(indices))
    slot = {i: k for k, i in enumerate(wanted)}
    out = None
    i = 0
    while i <= wanted[-1]:
        ok = cap.grab()
        if not ok:
            break
        if i in slot:
            _, bgr = cap.retrieve()
            if size is not None:
                bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            if out is None:
                out = np.empty((len(wanted), *bgr.shape), np.uint8)
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[slot[i]])
        i += 1
    cap.release()
    return out


def decord_reader(path: Path, indices: list[int] | None, size: tuple[int, int] | None) -> np.ndarray:
    """decord: ``get_batch`` (its resize is bilinear inside FFmpeg; close to, not exactly, area)."""
    kw = {} if size is None else {"height": size[0], "width": size[1]}
    vr = decord.VideoReader(str(path), num_threads=2, **kw)
    idx = list(range(len(vr))) if indices is None else indices
    return vr.get_batch(idx).asnumpy()


def ours(path: Path, indices: list[int] | None, size: tuple[int, int] | None) -> np.ndarray:
    return VideoReader(path).get_frames(indices, size=size)


CONTENDERS: dict[str, Callable | None] = {
    "VideoReader.get_frames": ours,
    "PyAV decode-only (floor)": pyav_floor,
    "PyAV + preallocated + AUTO threads": pyav_prealloc,
    "plain PyAV + np.stack": pyav_stack,
    "decord": decord_reader if decord else None,
    "OpenCV": opencv if cv2 else None,
}


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each function per round; one warm-up each, then the functions in turn each round."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def decode_cases(clips: list[Path], rounds: int) -> dict[str, dict[str, list[float]]]:
    probe = VideoReader(clips[0])
    n, h, w = probe.num_frames, probe.height, probe.width
    vlm = model_frame_size(h, w, VLM_PIXELS, 2)
    cases = {
        f"full decode, {n} frames {w}x{h}": (None, None),
        "4 sampled frames, full size": ([int(i) for i in uniform_indices(n, 4)], None),
        f"{n} frames at {RESIZED[1]}x{RESIZED[0]}": (None, RESIZED),
        f"16 frames at {vlm[1]}x{vlm[0]} (VLM input)": ([int(i) for i in uniform_indices(n, 16)], vlm),
    }
    results = {}
    for case, (indices, size) in cases.items():
        fns = {}
        for name, fn in CONTENDERS.items():
            if fn is None:
                continue
            fns[name] = lambda fn=fn, i=indices, s=size: [fn(p, i, s) for p in clips]
        times = interleaved(fns, rounds)
        results[case] = {k: [t / len(clips) for t in v] for k, v in times.items()}
    return results


def bytes_read_cases(clips: list[Path]) -> dict[str, float]:
    """Bytes read (``rchar``) for a full decode, against the files' size, for the two usual call patterns."""

    def ratio(fn: Callable[[Path], object]) -> float:
        before = _read_bytes()
        for p in clips:
            fn(p)
        return (_read_bytes() - before) / sum(p.stat().st_size for p in clips)

    def header_then_decode(p: Path) -> None:
        reader = VideoReader(p)
        reader.get_frames(range(reader.num_frames), size=RESIZED)  # the collator's pattern

    return {
        "get_frames() on a fresh reader": ratio(lambda p: VideoReader(p).get_frames()),
        "num_frames, then get_frames(range(n), size)": ratio(header_then_decode),
    }


def ffmpeg_benchmark(clips: list[Path]) -> float | None:
    """``ffmpeg -threads 2 -benchmark`` decode-only seconds per clip, when the binary exists."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    t0 = time.perf_counter()
    for p in clips:
        subprocess.run(
            [exe, "-v", "error", "-threads", "2", "-benchmark", "-i", str(p), "-f", "null", "-"], check=True
        )
    return (time.perf_counter() - t0) / len(clips)


# -- DataLoader: samples/s, worker RSS, bytes read ---------------------------------------------------
def _read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def _peak_rss_kb() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])


def _worker_stats() -> tuple[int, int]:
    return _peak_rss_kb(), _read_bytes()


def loader_cases(clips: list[Path], tmp: Path, pairs: int, frames: int = 16) -> dict[str, dict[str, float]]:
    """Each path yields one pair per batch as (2, 3, frames, 480, 832) floats in [-1, 1]; 2 workers.

    Each worker writes its peak RSS and the bytes it read (``rchar``) when its share is done; bytes are
    reported per sample against the two files' size.
    """
    import torch
    from conftest import pack, write_train

    from sparkle_video import load_sparkle

    folder = tmp / "folder"
    write_train(folder, {"location": pairs}, videos=False)
    rows = []
    for n in range(pairs):
        pair = []
        for kind, clip in (("source", clips[n % len(clips)]), ("edited", clips[(n + 1) % len(clips)])):
            p = folder / "location" / f"{kind}_video" / f"Sparkle_location_{n:06d}.mp4"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(clip.read_bytes())
            pair.append(str(p))
        rows.append(tuple(pair))
    shards = tmp / "shards"
    pack(folder, shards, per_shard=max(1, pairs // 2))
    pair_bytes = sum(p.stat().st_size for p in folder.glob("location/*_video/*.mp4")) / pairs
    idx = list(range(frames))

    class Measured(torch.utils.data.IterableDataset):
        def __init__(self, inner: Any, out: Path):
            self.inner, self.out = inner, out

        def __iter__(self) -> Any:
            yield from self.inner
            info = torch.utils.data.get_worker_info()
            wid = info.id if info is not None else 0
            (self.out / f"{wid}.json").write_text(json.dumps([_peak_rss_kb(), _read_bytes()]))

    def by_hand_collate(src_key: str, edt_key: str) -> Callable[[list], Any]:
        def collate(batch: list) -> Any:
            return torch.stack(
                [
                    torch.stack(
                        [
                            frames_to_tensor(pyav_frames(r[k], idx, RESIZED), (-1, 1))
                            for k in (src_key, edt_key)
                        ]
                    )
                    for r in batch
                ]
            )

        return collate

    paths: dict[str, tuple[Any, Any]] = {}
    ours_collate = SparkleCollator(num_frames=frames, size=RESIZED, value_range=(-1, 1), resize="stretch")
    paths["load_sparkle folder + SparkleCollator"] = (load_sparkle(folder, streaming=True), ours_collate)
    paths["load_sparkle tar shards + SparkleCollator"] = (load_sparkle(shards, streaming=True), ours_collate)
    import datasets

    plain = datasets.Dataset.from_dict({"src": [r[0] for r in rows], "edt": [r[1] for r in rows]})
    paths["datasets + PyAV (by hand)"] = (
        plain.to_iterable_dataset(num_shards=2),
        by_hand_collate("src", "edt"),
    )
    wds = optional("webdataset")
    if wds is not None:
        tar = tmp / "wds-000000.tar"
        with wds.TarWriter(str(tar)) as sink:
            for n, (s_, e_) in enumerate(rows):
                sink.write(
                    {
                        "__key__": f"{n:06d}",
                        "src.mp4": Path(s_).read_bytes(),
                        "edt.mp4": Path(e_).read_bytes(),
                    }
                )
        paths["webdataset + PyAV (by hand)"] = (
            wds.WebDataset(
                str(tar), shardshuffle=False, workersplitter=wds.split_by_worker, empty_check=False
            ),
            by_hand_collate("src.mp4", "edt.mp4"),
        )
    else:
        print("webdataset: not installed, skipped")
    results: dict[str, dict[str, float]] = {}
    for name, (ds, collate) in paths.items():
        out = tmp / f"stats-{len(results)}"
        out.mkdir()
        loader = torch.utils.data.DataLoader(
            Measured(ds, out), batch_size=1, num_workers=2, collate_fn=collate
        )
        t0 = time.perf_counter()
        n = sum(1 for _ in loader)
        dt = time.perf_counter() - t0
        stats = [json.loads(f.read_text()) for f in out.glob("*.json")]
        results[name] = {
            "samples": n,
            "samples_per_s": n / dt,
            "worker_peak_rss_mb": max(r for r, _ in stats) / 1024,
            "bytes_read_per_sample_vs_files": sum(b for _, b in stats) / n / pair_bytes,
        }
    return results


def pyav_frames(data: Any, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    """What a user's PyAV loader does: open the file or bytes, AUTO threads, convert the wanted frames."""
    import io

    src = io.BytesIO(data) if isinstance(data, bytes) else data
    with av.open(src) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        out = np.empty((len(indices), size[0], size[1], 3), np.uint8)
        slot = {i: k for k, i in enumerate(indices)}
        kw = _kwargs(size)
        for i, frame in enumerate(c.decode(stream)):
            if i in slot:
                out[slot[i]] = frame.to_ndarray(**kw)
            if i >= indices[-1]:
                break
    return out


def collator_cases(clip: Path, rounds: int) -> dict[str, list[float]]:
    """One training row (source + edited, 81 frames at 480x832) through the collator vs by hand."""

    def row() -> dict:
        return {
            "id": "x",
            "prompt": "p",
            "source_video": VideoReader(clip),
            "edited_video": VideoReader(clip),
        }

    def by_hand() -> list:
        r = row()
        return [
            frames_to_tensor(r[k].get_frames(None, size=RESIZED), (-1, 1))
            for k in ("source_video", "edited_video")
        ]

    fns: dict[str, Callable[[], object]] = {
        "by hand: get_frames(size) + frames_to_tensor (baseline)": by_hand
    }
    for policy in ("stretch", "crop", "pad"):
        collate = SparkleCollator(num_frames=81, size=RESIZED, value_range=(-1, 1), resize=policy)
        fns[f"SparkleCollator resize={policy!r}"] = lambda c=collate: c([row()])
    return interleaved(fns, rounds)


def table(title: str, times: dict[str, list[float]], baseline: str, unit: str = "s") -> list[str]:
    lines = [title, f"  {'contender':<44}{'min ' + unit:>10}{'median':>10}{'x min':>8}{'x med':>8}"]
    b_min, b_med = min(times[baseline]), statistics.median(times[baseline])
    for name, ts in times.items():
        mark = "  (baseline)" if name == baseline else ""
        lines.append(
            f"  {name:<44}{min(ts):>10.4f}{statistics.median(ts):>10.4f}"
            f"{min(ts) / b_min:>8.2f}{statistics.median(ts) / b_med:>8.2f}{mark}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument(
        "--samples", type=Path, default=Path(os.environ.get("SPARKLE_SAMPLES", DEFAULT_SAMPLES))
    )
    parser.add_argument("--loader-pairs", type=int, default=8)
    parser.add_argument("--loader-frames", type=int, default=16, help="frames per video in a batch")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    machine = f"{platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    skipped = [name for name, fn in CONTENDERS.items() if fn is None]
    with tempfile.TemporaryDirectory() as tmp:
        clips, what = find_clips(args.samples, args.clips, Path(tmp))
        print(f"machine: {machine}; PyAV {av.__version__}; {what}; {args.rounds} interleaved rounds")
        if skipped:
            print(f"skipped (not installed): {', '.join(skipped)}")
        results: dict[str, Any] = {
            "machine": machine,
            "clips": what,
            "decode": decode_cases(clips, args.rounds),
        }
        for case, times in results["decode"].items():
            print("\n".join(table(f"{case} (seconds per clip)", times, "PyAV decode-only (floor)")))
        results["bytes_read"] = bytes_read_cases(clips)
        for name, r in results["bytes_read"].items():
            print(f"bytes read / file size, {name}: {r:.3f}")
        ff = ffmpeg_benchmark(clips)
        print(
            f"ffmpeg -threads 2 decode-only: {ff:.4f} s/clip"
            if ff is not None
            else "ffmpeg: not on PATH, skipped"
        )
        results["collator"] = collator_cases(clips[0], args.rounds)
        print(
            "\n".join(
                table(
                    "collation, one row of 2 x 81 frames at 480x832",
                    results["collator"],
                    next(iter(results["collator"])),
                )
            )
        )
        results["loader"] = loader_cases(clips, Path(tmp), args.loader_pairs, args.loader_frames)
        print(f"DataLoader, 2 workers, batch of one pair (2 x {args.loader_frames} frames at 480x832, float)")
        print(f"  {'path':<48}{'samples/s':>10}{'peak RSS MB':>13}{'read/file':>11}")
        for name, r in results["loader"].items():
            print(
                f"  {name:<48}{r['samples_per_s']:>10.2f}{r['worker_peak_rss_mb']:>13.0f}"
                f"{r['bytes_read_per_sample_vs_files']:>11.3f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
