"""Writing datasets in the official Sparkle / Sparkle-Bench layouts, and packing official-style shards.

Used by the demo, the generation pipeline and the tests, so that everything the library reads it can
also write. Roots may be local folders or any fsspec URL.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
from tqdm.auto import tqdm

from .errors import SparkleDataError
from .layout import (
    BENCH_CSV_COLUMNS,
    INTERMEDIATE_DIRS,
    OPENVE_EDIT_TYPE,
    SAMPLE_ID_RE,
    TRAIN_CSV_COLUMNS,
    bench_csv_path,
    bench_metadata_path,
    bench_ref_image_path,
    bench_video_path,
    intermediate_jsonl_path,
    intermediate_path,
    intermediate_shard_name,
    shard_name,
    train_csv_path,
    train_metadata_path,
    video_path,
)
from .masks import pack_mask
from .video import write_video

#: Fixed tar header fields so that packing the same files twice gives the same bytes.
TAR_MTIME = 1_700_000_000

VideoLike = Any  # (T, H, W, 3) uint8 array, a path, or encoded mp4 bytes


@dataclass
class SampleRecord:
    """One sample to write: text fields, videos, and optional pipeline artefacts."""

    id: str
    theme: str
    prompt: str
    source: VideoLike
    edited: VideoLike | None = None
    chosen_keyword: str | None = None
    original_scene: str = ""
    edit_type: str | None = None
    fps: float = 16
    ref_image: Any = None  # bench only: (H, W, 3) array, PIL image, path or PNG bytes
    mask: np.ndarray | None = None
    background: VideoLike | None = None
    canny: VideoLike | None = None
    source_frame0: Any = None
    edited_frame0: Any = None
    edited_frame0_foreground_removed: Any = None
    grounding_r1: dict | None = None
    grounding_r2: dict | None = None
    scores: dict[str, dict] = field(default_factory=dict)  # score file name -> record

    def __post_init__(self) -> None:
        if not SAMPLE_ID_RE.match(self.id) or "/" in self.id:
            raise SparkleDataError(f"not a Sparkle id {self.id!r} (expected Sparkle_{{theme}}_{{number}})")
        if self.edit_type is None:
            self.edit_type = OPENVE_EDIT_TYPE if self.theme == "openve3m" else self.theme

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"edit_type": self.edit_type, "original_scene": self.original_scene}
        if self.chosen_keyword is not None and self.theme != "openve3m":
            meta["chosen_keyword"] = self.chosen_keyword
        return meta


class _Root:
    def __init__(self, root: str | os.PathLike, overwrite: bool):
        self.url = os.fspath(root)
        self.fs, self.path = fsspec.core.url_to_fs(self.url)
        if self.fs.exists(self.path) and self.fs.ls(self.path) and not overwrite:
            raise FileExistsError(f"{self.url} is not empty (pass overwrite=True)")
        self.fs.makedirs(self.path, exist_ok=True)

    def full(self, rel: str) -> str:
        return posixpath.join(self.path, rel)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.fs.makedirs(posixpath.dirname(self.full(rel)), exist_ok=True)
        with self.fs.open(self.full(rel), "wb") as f:
            f.write(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))


def _video_bytes(video: VideoLike, fps: float) -> bytes:
    if isinstance(video, bytes):
        return video
    if isinstance(video, (str, os.PathLike)):
        with fsspec.open(os.fspath(video), "rb") as f:
            return f.read()
    buf = io.BytesIO()
    write_video(np.asarray(video), buf, fps=fps)
    return buf.getvalue()


def _image_bytes(image: Any) -> bytes:
    from PIL import Image

    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, os.PathLike)):
        with fsspec.open(os.fspath(image), "rb") as f:
            return f.read()
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _csv_text(columns: Sequence[str], rows: Iterable[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _jsonl_text(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _by_theme(records: Sequence[SampleRecord]) -> dict[str, list[SampleRecord]]:
    grouped: dict[str, list[SampleRecord]] = {}
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise SparkleDataError("duplicate id among records", sample_id=r.id)
        seen.add(r.id)
        grouped.setdefault(r.theme, []).append(r)
    return grouped


def _write_intermediates(root: _Root, r: SampleRecord, jsonl: dict[str, list[dict]]) -> None:
    if r.mask is not None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **pack_mask(r.mask))
        root.write_bytes(intermediate_path(r.theme, "source_video_mask", r.id), buf.getvalue())
    for name, value in (("edited_background_video", r.background), ("edited_video_canny", r.canny)):
        if value is not None:
            root.write_bytes(intermediate_path(r.theme, name, r.id), _video_bytes(value, r.fps))
    for name in ("source_frame0", "edited_frame0", "edited_frame0_foreground_removed"):
        value = getattr(r, name)
        if value is not None:
            root.write_bytes(intermediate_path(r.theme, name, r.id), _image_bytes(value))
    for name, value in (("foreground_grounding_r1", r.grounding_r1), ("foreground_grounding_r2", r.grounding_r2)):
        if value is not None:
            jsonl.setdefault(name, []).append({"id": r.id, **{k: v for k, v in value.items() if k != "id"}})
    for name, value in r.scores.items():
        intermediate_jsonl_path(r.theme, name)  # validates the name
        jsonl.setdefault(name, []).append({"id": r.id, **{k: v for k, v in value.items() if k != "id"}})


def write_sparkle(
    records: Sequence[SampleRecord], root: str | os.PathLike, *, overwrite: bool = False, progress: bool = True
) -> str:
    """Write ``records`` in the official training layout (prompts, videos, intermediate artefacts)."""
    out = _Root(root, overwrite)
    for theme, items in _by_theme(records).items():
        rows, metas, jsonl = [], [], {}
        for r in tqdm(items, desc=f"writing {theme}", disable=not progress):
            if r.edited is None:
                raise SparkleDataError("training records need an edited video", sample_id=r.id)
            src, tgt = video_path(theme, "source", r.id), video_path(theme, "edited", r.id)
            out.write_bytes(src, _video_bytes(r.source, r.fps))
            out.write_bytes(tgt, _video_bytes(r.edited, r.fps))
            rows.append({"prompt": r.prompt, "src_video": src, "tgt_video": tgt, "task": r.id})
            metas.append({"id": r.id, "prompt": r.prompt, "metadata": r.metadata()})
            _write_intermediates(out, r, jsonl)
        out.write_text(train_csv_path(theme), _csv_text(TRAIN_CSV_COLUMNS, rows))
        out.write_text(train_metadata_path(theme), _jsonl_text(metas))
        for name, recs in jsonl.items():
            out.write_text(intermediate_jsonl_path(theme, name), _jsonl_text(recs))
    return out.url


def write_sparkle_bench(
    records: Sequence[SampleRecord], root: str | os.PathLike, *, overwrite: bool = False, progress: bool = True
) -> str:
    """Write ``records`` in the Sparkle-Bench layout (``{theme}_bench.csv``, metadata, source videos)."""
    out = _Root(root, overwrite)
    for theme, items in _by_theme(records).items():
        rows, metas = [], []
        for r in tqdm(items, desc=f"writing {theme}", disable=not progress):
            rel = bench_video_path(theme, r.id)
            out.write_bytes(rel, _video_bytes(r.source, r.fps))
            if r.ref_image is not None:
                out.write_bytes(bench_ref_image_path(theme, r.id), _image_bytes(r.ref_image))
            rows.append({"edited_type": r.edit_type, "prompt": r.prompt, "original_video": rel})
            metas.append({"id": r.id, "prompt": r.prompt, "metadata": r.metadata()})
        out.write_text(bench_csv_path(theme), _csv_text(BENCH_CSV_COLUMNS, rows))
        out.write_text(bench_metadata_path(theme), _jsonl_text(metas))
    return out.url


def _add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tf.addfile(info, io.BytesIO(data))


def _pack_members(
    fs: Any, src_root: str, names: Sequence[str], out: _Root, shard_for: Any, max_shard_bytes: float
) -> list[str]:
    """Pack ``names`` (sorted) into shards, starting a new part when the next member would overflow one."""
    written: list[str] = []
    part, size, tf, buf = 0, 0, None, None

    def close() -> None:
        if tf is not None and buf is not None:
            tf.close()
            rel = shard_for(part)
            out.write_bytes(rel, buf.getvalue())
            written.append(rel)

    for name in sorted(names):
        with fs.open(posixpath.join(src_root, name), "rb") as f:
            data = f.read()
        member_bytes = 512 + (len(data) + 511) // 512 * 512
        if tf is not None and size + member_bytes > max_shard_bytes:
            close()
            part, size, tf = part + 1, 0, None
        if tf is None:
            buf = io.BytesIO()
            tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 - closed in close()
        _add_member(tf, name, data)
        size += member_bytes
    close()
    return written


def pack_shards(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    themes: Sequence[str] | None = None,
    max_shard_bytes: float = 5e9,
    include_intermediates: bool = False,
    overwrite: bool = True,
) -> list[str]:
    """Pack a training folder into official-style uncompressed tar shards (deterministic bytes).

    ``{theme}_{source|edited}_video_partXX.tar`` hold ``{theme}/{kind}_video/{id}.mp4`` sorted by id;
    ``prompts/`` is copied alongside. Returns the repo-relative paths written.
    """
    fs, src_root = fsspec.core.url_to_fs(os.fspath(root))
    out = _Root(out_dir, overwrite)
    written: list[str] = []
    prompt_files = sorted(fs.glob(posixpath.join(src_root, "prompts", "*")))
    present = sorted({posixpath.basename(p).split("_train")[0] for p in prompt_files if "_train" in p})
    for theme in themes or present:
        for rel in (train_csv_path(theme), train_metadata_path(theme)):
            if fs.exists(posixpath.join(src_root, rel)):
                out.write_bytes(rel, fs.cat_file(posixpath.join(src_root, rel)))
                written.append(rel)
        for kind in ("source", "edited"):
            folder = f"{theme}/{kind}_video"
            names = [f"{folder}/{posixpath.basename(p)}" for p in fs.glob(posixpath.join(src_root, folder, "*.mp4"))]
            written += _pack_members(fs, src_root, names, out, lambda part, k=kind, t=theme: shard_name(t, k, part), max_shard_bytes)
        if include_intermediates:
            for subdir in INTERMEDIATE_DIRS:
                folder = f"intermediate_data/{theme}/{subdir}"
                names = [f"{folder}/{posixpath.basename(p)}" for p in fs.glob(posixpath.join(src_root, folder, "*"))]
                if names:
                    written += _pack_members(
                        fs, src_root, names, out, lambda part, s=subdir, t=theme: intermediate_shard_name(t, s, part),
                        max_shard_bytes,
                    )
            for p in fs.glob(posixpath.join(src_root, "intermediate_data", theme, "*.jsonl")):
                rel = f"intermediate_data/{theme}/{posixpath.basename(p)}"
                out.write_bytes(rel, fs.cat_file(p))
                written.append(rel)
    return written
