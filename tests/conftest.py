"""Shared fixtures: tiny synthetic datasets in the official layouts, made fresh by each test."""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The suite runs two pytest workers on two cores, and its models are tiny: one math thread per process
# (inherited by the subprocesses tests start) avoids oversubscription, which slows tiny ops 10-100x.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from sparkle_video.data.video import write_video

SAMPLES = Path(
    os.environ.get("SPARKLE_SAMPLES", Path(__file__).resolve().parents[2] / "shared" / "samples" / "sparkle")
)
KEYWORDS = {
    "location": ["urban: rooftop overlooking skyline", "rural: vineyard rows"],
    "season": ["winter: snowy pine forest", "spring: blossoming orchard"],
    "time": ["dusk: harbour at sunset", "night: neon street"],
    "style": ["cinematic: film noir alley", "art: watercolour village"],
}


def clip(seed: int, frames: int = 9, height: int = 48, width: int = 64) -> np.ndarray:
    """A deterministic clip: a bright square moving over a seed-coloured gradient."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=3)
    yy, xx = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        img = np.stack([(base[c] + xx * (c + 1) // 2 + yy // 2) % 256 for c in range(3)], -1)
        x0 = (4 + 4 * t) % (width - 12)
        img[10:22, x0 : x0 + 12] = 250
        out[t] = img
    return out


def sid(theme: str, n: int) -> str:
    return f"Sparkle_{theme}_{n:06d}"


def write_train(root: Path, counts: dict[str, int], frames: int = 9, videos: bool = True) -> dict[str, dict]:
    """Write the training layout; return ``id -> {theme, prompt, keyword, source, edited}``."""
    info: dict[str, dict] = {}
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    for theme, count in counts.items():
        rows, metas = [], []
        for n in range(count):
            i = sid(theme, n)
            keyword = KEYWORDS.get(theme, [None])[n % 2] if theme != "openve3m" else None
            prompt = f"Replace the background of {i} with something lively."
            src_rel, tgt_rel = f"{theme}/source_video/{i}.mp4", f"{theme}/edited_video/{i}.mp4"
            seed = zlib.crc32(f"{theme}{n}".encode()) % 10_000
            info[i] = {
                "theme": theme,
                "prompt": prompt,
                "keyword": keyword,
                "seed": seed,
                "source": src_rel,
                "edited": tgt_rel,
            }
            if videos:
                write_video(clip(seed, frames), root / src_rel, fps=16)
                write_video(clip(seed + 1, frames), root / tgt_rel, fps=16)
            rows.append({"prompt": prompt, "src_video": src_rel, "tgt_video": tgt_rel, "task": i})
            meta = {
                "edit_type": theme if theme != "openve3m" else "openve3m_background_change",
                "original_scene": f"scene of {i}",
            }
            if keyword:
                meta["chosen_keyword"] = keyword
            metas.append({"id": i, "prompt": prompt, "metadata": meta})
        with open(root / "prompts" / f"{theme}_train.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["prompt", "src_video", "tgt_video", "task"])
            w.writeheader()
            w.writerows(rows)
        with open(root / "prompts" / f"{theme}_train_metadata.jsonl", "w") as f:
            for m in metas:
                f.write(json.dumps(m) + "\n")
    return info


def pack(folder: Path, out: Path, per_shard: int = 2) -> None:
    """Pack a training folder into official-style tar shards (sorted members) plus prompts/."""
    out.mkdir(parents=True, exist_ok=True)
    import shutil

    shutil.copytree(folder / "prompts", out / "prompts", dirs_exist_ok=True)
    for theme_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "prompts"):
        for kind in ("source", "edited"):
            files = sorted((theme_dir / f"{kind}_video").glob("*.mp4"))
            for part, start in enumerate(range(0, len(files), per_shard)):
                with tarfile.open(out / f"{theme_dir.name}_{kind}_video_part{part:02d}.tar", "w") as tf:
                    for f in files[start : start + per_shard]:
                        tf.add(f, arcname=f"{theme_dir.name}/{kind}_video/{f.name}")


def add_member(tar_path: Path, name: str, data: bytes) -> None:
    with tarfile.open(tar_path, "a") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def write_bench(
    root: Path, counts: dict[str, int], frames: int = 9, ref_images: bool = True
) -> dict[str, dict]:
    from PIL import Image

    info: dict[str, dict] = {}
    for theme, count in counts.items():
        rows, metas = [], []
        for n in range(count):
            i = sid(theme, 10_000 + n)
            keyword = KEYWORDS[theme][n % 2]
            prompt = f"Bench prompt for {i}."
            rel = f"source_videos/{theme}/{i}.mp4"
            seed = 500 + n + 50 * len(info)
            write_video(clip(seed, frames), root / rel, fps=16)
            if ref_images and n % 2 == 0:
                (root / "ref_images" / theme).mkdir(parents=True, exist_ok=True)
                Image.fromarray(clip(seed, 1)[0]).save(root / "ref_images" / theme / f"{i}.png")
            info[i] = {
                "theme": theme,
                "prompt": prompt,
                "keyword": keyword,
                "seed": seed,
                "ref": ref_images and n % 2 == 0,
            }
            rows.append({"edited_type": theme, "prompt": prompt, "original_video": rel})
            metas.append(
                {
                    "id": i,
                    "prompt": prompt,
                    "metadata": {"edit_type": theme, "chosen_keyword": keyword, "original_scene": ""},
                }
            )
        with open(root / f"{theme}_bench.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["edited_type", "prompt", "original_video"])
            w.writeheader()
            w.writerows(rows)
        with open(root / f"{theme}_metadata.jsonl", "w") as f:
            for m in metas:
                f.write(json.dumps(m) + "\n")
    return info


@pytest.fixture(scope="session")
def train_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("train")
    info = write_train(root, {"location": 3, "season": 2, "openve3m": 1})
    return root, info


@pytest.fixture(scope="session")
def train_shards(
    train_folder: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    root, info = train_folder
    out = tmp_path_factory.mktemp("shards")
    pack(root, out, per_shard=2)
    return out, info


@pytest.fixture
def fresh_train(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    """A small training folder a test may break."""
    return tmp_path, write_train(tmp_path, {"location": 2, "season": 1})


@pytest.fixture
def fresh_accelerator_state():
    """Reset accelerate's process-wide state around a test (bf16 runs must not leak into other tests')."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
