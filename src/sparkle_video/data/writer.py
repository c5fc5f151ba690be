"""Writing datasets in the official Sparkle / Sparkle-Bench layouts, and packing official-style shards.

Used by the demo, the generation pipeline and the tests, so that everything the library reads it can
also write. Roots may be local folders or any fsspec URL.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import posixpath
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
import numpy as np
from tqdm.auto import tqdm

from .. import safe_write
from ..errors import SkipReport, SparkleDataError, check_error_mode, handle
from .layout import (
    BENCH_CSV_COLUMNS,
    BENCH_THEMES,
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
    parse_chosen_keyword,
    shard_name,
    train_csv_path,
    train_metadata_path,
    video_path,
)
from .masks import pack_mask
from .records import csv_quoting, jsonl_lines, parse_json_line
from .video import write_video

logger = logging.getLogger("sparkle_video")

#: Fixed tar header fields so that packing the same files twice gives the same bytes.
TAR_MTIME = 1_700_000_000

#: A video to write: (T, H, W, 3) uint8 frames, a path / fsspec URL of an mp4, or encoded mp4 bytes.
VideoLike = np.ndarray | str | os.PathLike | bytes
#: An image to write: (H, W, 3) uint8 array, a PIL image, a path / fsspec URL of a PNG, or PNG bytes.
ImageLike = Any


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
    ref_image: ImageLike = None  # bench only: the clean background image
    mask: np.ndarray | None = None
    background: VideoLike | None = None
    canny: VideoLike | None = None
    source_frame0: ImageLike = None
    edited_frame0: ImageLike = None
    edited_frame0_foreground_removed: ImageLike = None
    grounding_r1: dict | None = None
    grounding_r2: dict | None = None
    scores: dict[str, dict] = field(default_factory=dict)  # score file name -> record

    def __post_init__(self) -> None:
        match = SAMPLE_ID_RE.match(self.id)
        if not match:
            raise SparkleDataError(f"not a Sparkle id {self.id!r} (expected Sparkle_{{theme}}_{{number}})")
        if match["theme"] != self.theme:  # also keeps the theme a safe path component
            raise SparkleDataError(
                f"id {self.id!r} does not belong to theme {self.theme!r}", sample_id=self.id
            )
        if self.chosen_keyword is not None:
            try:
                parse_chosen_keyword(self.chosen_keyword)
            except ValueError as exc:
                raise SparkleDataError(str(exc), sample_id=self.id) from None
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

    @property
    def local(self) -> bool:
        """Whether the root is a local folder (where links can lead out and renames are atomic)."""
        return "file" in _protocols(self.fs)

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.local:  # whole or not at all, never through a link out of the root
            safe_write.write_bytes(self.full(rel), data, self.path)
            return
        self.fs.makedirs(posixpath.dirname(self.full(rel)), exist_ok=True)
        with safe_write.os_errors(self.full(rel)), self.fs.open(self.full(rel), "wb") as f:
            f.write(data)

    @contextlib.contextmanager
    def open_atomic(self, rel: str) -> Iterator[IO[bytes]]:
        """A file that appears at ``rel`` only once complete (local: fsync + rename; elsewhere: a
        ``.partial`` name moved into place)."""
        final = self.full(rel)
        if self.local:
            with safe_write.atomic_open(final, self.path) as f:
                yield f
            return
        tmp = final + ".partial"
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        with safe_write.os_errors(final):
            with self.fs.open(tmp, "wb") as f:
                yield f
            self.fs.mv(tmp, final)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def _video_bytes(video: VideoLike, fps: float) -> bytes:
    if isinstance(video, bytes):
        return video
    if isinstance(video, (str, os.PathLike)):
        with fsspec.open(os.fspath(video), "rb") as f:
            return f.read()
    buf = io.BytesIO()
    write_video(np.asarray(video), buf, fps=fps)
    return buf.getvalue()


def _image_bytes(image: ImageLike) -> bytes:
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
    rows = list(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", quoting=csv_quoting(rows))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


#: Line separators other than ``\n`` that JSON may hold raw; escaped so that any line splitter reads one record per line.
_LINE_SEPARATORS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"}


def json_line(record: dict) -> str:
    """One JSONL line: UTF-8 text kept readable, but every line separator besides the final ``\n`` escaped."""
    text = json.dumps(record, ensure_ascii=False)
    for raw, escaped in _LINE_SEPARATORS.items():
        text = text.replace(raw, escaped)
    return text + "\n"


def _jsonl_text(records: Iterable[dict]) -> str:
    return "".join(json_line(r) for r in records)


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
    for name, value in (
        ("foreground_grounding_r1", r.grounding_r1),
        ("foreground_grounding_r2", r.grounding_r2),
    ):
        if value is not None:
            jsonl.setdefault(name, []).append({"id": r.id, **{k: v for k, v in value.items() if k != "id"}})
    for name, value in r.scores.items():
        intermediate_jsonl_path(r.theme, name)  # validates the name
        jsonl.setdefault(name, []).append({"id": r.id, **{k: v for k, v in value.items() if k != "id"}})


def write_sparkle(
    records: Sequence[SampleRecord],
    root: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Write ``records`` in the official training layout (prompts, videos, intermediate artefacts).

    ``root`` is a local folder or fsspec URL; it must be empty unless ``overwrite``. Array videos are
    encoded as H.264 at the record's fps; paths and bytes are copied unchanged. Returns ``root``'s URL.
    """
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
    records: Sequence[SampleRecord],
    root: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Write ``records`` in the Sparkle-Bench layout (``{theme}_bench.csv``, metadata, source videos)."""
    out = _Root(root, overwrite)
    for theme, items in _by_theme(records).items():
        rows, metas = [], []
        for r in tqdm(items, desc=f"writing {theme}", disable=not progress):
            if r.chosen_keyword is None or theme not in BENCH_THEMES:
                raise SparkleDataError(
                    f"bench records need a chosen_keyword and one of the themes {BENCH_THEMES}",
                    sample_id=r.id,
                )
            rel = bench_video_path(theme, r.id)
            out.write_bytes(rel, _video_bytes(r.source, r.fps))
            if r.ref_image is not None:
                out.write_bytes(bench_ref_image_path(theme, r.id), _image_bytes(r.ref_image))
            rows.append({"edited_type": r.edit_type, "prompt": r.prompt, "original_video": rel})
            metas.append({"id": r.id, "prompt": r.prompt, "metadata": r.metadata()})
        out.write_text(bench_csv_path(theme), _csv_text(BENCH_CSV_COLUMNS, rows))
        out.write_text(bench_metadata_path(theme), _jsonl_text(metas))
    return out.url


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A member header with fixed owner, mode and time, so that shards are reproducible byte for byte."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _member_bytes(size: int) -> int:
    """Bytes a member takes in a tar: its 512-byte header and its data padded to 512."""
    return 512 + (size + 511) // 512 * 512


def plan_parts(sizes: Sequence[int], max_shard_bytes: float) -> list[int]:
    """Part number of each member (in order): a new part starts when the next member would overflow one."""
    parts, part, used = [], 0, 0
    for size in sizes:
        need = _member_bytes(size)
        if used and used + need > max_shard_bytes:
            part, used = part + 1, 0
        parts.append(part)
        used += need
    return parts


def _pack_members(
    fs: Any,
    src_root: str,
    names: Sequence[str],
    out: _Root,
    shard_for: Any,
    max_shard_bytes: float,
    bar: Any,
) -> list[str]:
    """Stream ``names`` (sorted) into shards; each shard is written under a temporary name, then renamed."""
    names = sorted(names)
    sizes = [fs.size(posixpath.join(src_root, n)) for n in names]
    parts = plan_parts(sizes, max_shard_bytes)
    written: list[str] = []
    for part in sorted(set(parts)):
        rel = shard_for(part)
        members = [(n, sz) for n, sz, p in zip(names, sizes, parts, strict=True) if p == part]
        with (
            out.open_atomic(rel) as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf,
        ):
            tf.copybufsize = 1 << 20  # 1 MiB copies instead of 16 KiB
            for name, size in members:
                with fs.open(posixpath.join(src_root, name), "rb") as f:
                    tf.addfile(_tar_info(name, size), f)
                bar.update(1)
        written.append(rel)
    return written


def _check_video(fs: Any, path: str, label: str, sid: str) -> None:
    """Header check of one mp4 (size, container, a video stream with frames): no pixel is decoded."""
    from .video import VideoReader

    if not fs.exists(path):
        raise SparkleDataError("video file is missing", path=label, sample_id=sid)
    if fs.size(path) == 0:
        raise SparkleDataError("video file is empty (0 bytes)", path=label, sample_id=sid)
    VideoReader(lambda: fs.open(path, "rb"), name=label).metadata  # noqa: B018 - opening the header is the check


def _kept_csv(text: str, keep: set[str]) -> str:
    """A prompt CSV holding only the rows whose ``task`` is in ``keep`` (columns unchanged)."""
    reader = csv.DictReader(io.StringIO(text))
    rows = [r for r in reader if (r.get("task") or "").strip() in keep]
    return _csv_text(list(reader.fieldnames or []), rows)


def _kept_jsonl(text: str, keep: set[str]) -> str:
    """JSONL lines that parse as an object whose id is in ``keep`` (bad lines were reported when read)."""
    out = []
    for line in jsonl_lines(text):
        if not line.strip():
            continue
        try:
            record = parse_json_line(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("id") in keep:
            out.append(line + "\n")
    return "".join(out)


def remove_stale_shards(
    out: Any, theme: str, written: Sequence[str], *, intermediates: bool = True, layout: str = "official"
) -> list[str]:
    """Delete shards of ``theme`` in ``out`` that this run did not write (an earlier, larger run's).

    Only shards of the kinds this run writes are touched (intermediate shards only when this run packs
    intermediates; paired shards only for the webdataset layout), and each removal is logged by name.
    """
    from .layout import INTERMEDIATE_SHARD_RE, SHARD_RE
    from .paired_shards import PAIRED_SHARD_RE

    keep = {posixpath.basename(w) for w in written}
    removed = []
    kinds = [("", PAIRED_SHARD_RE)] if layout == "webdataset" else [("", SHARD_RE)]
    if intermediates:
        kinds.append(("intermediate_data", INTERMEDIATE_SHARD_RE))
    for folder, pattern in kinds:
        base = out.full(folder) if folder else out.path
        if not out.fs.isdir(base):
            continue
        for path in out.fs.ls(base, detail=False):
            name = posixpath.basename(str(path).rstrip("/"))
            m = pattern.match(name)
            if m and m["theme"] == theme and name not in keep:
                out.fs.rm(path)
                removed.append(name)
                logger.warning("removed %s: a shard of an earlier pack that this run did not write", name)
    return removed


PACK_LAYOUTS = ("official", "webdataset")


def pack_shards(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    themes: Sequence[str] | None = None,
    max_shard_bytes: float = 5e9,
    include_intermediates: bool = False,
    overwrite: bool = True,
    errors: str = "raise",
    skip_report: SkipReport | None = None,
    progress: bool = True,
    layout: str = "official",
) -> list[str]:
    """Pack a training folder into uncompressed tar shards (deterministic bytes).

    ``layout="official"``: ``{theme}_{source|edited}_video_partXX.tar`` hold ``{theme}/{kind}_video/{id}.mp4``
    sorted by id, and ``prompts/`` is copied alongside. ``layout="webdataset"``: self-contained paired
    shards ``{theme}-NNNNN.tar`` holding ``{id}.json``, ``{id}.source.mp4`` and ``{id}.edited.mp4`` per
    sample (see :mod:`sparkle_video.data.paired_shards`), readable by ``datasets.load_dataset("webdataset")``
    as one row per pair, and by ``load_sparkle``. Returns the repo-relative paths written.

    Everything is checked before anything is written: each CSV/JSONL row (as the loader reads it) and
    each video's header (no decoding). A bad sample raises ``SparkleDataError``, or under
    ``errors="skip"`` is left out of the shards *and* of the copied prompt files and named in
    ``skip_report``. Shards of the same kinds left by an earlier, larger run in ``out_dir`` are removed
    (each named in a warning), so the folder holds exactly this run's parts; intermediate shards are only
    touched when this run packs intermediates.
    """
    from .catalog import LoadOptions, read_entries
    from .sources import open_root

    check_error_mode(errors)
    if layout not in PACK_LAYOUTS:
        raise ValueError(f"layout must be one of {PACK_LAYOUTS}, got {layout!r}")
    if layout == "webdataset" and include_intermediates:
        raise ValueError("webdataset shards hold pairs only; pack intermediates with layout='official'")
    if not max_shard_bytes > 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    report = skip_report if skip_report is not None else SkipReport()
    fs, src_root = fsspec.core.url_to_fs(os.fspath(root))
    data_root = open_root(os.fspath(root))
    out = _Root(out_dir, overwrite)
    written: list[str] = []
    prompt_files = sorted(fs.glob(posixpath.join(src_root, "prompts", "*")))
    present = sorted({posixpath.basename(p).split("_train")[0] for p in prompt_files if "_train" in p})
    missing = [t for t in themes or () if t not in present]
    if missing or not present:
        raise SparkleDataError(
            f"no prompts/{{theme}}_train.csv for {missing or 'any theme'}", path=os.fspath(root)
        )
    options = LoadOptions(themes=tuple(themes or present), errors=errors)
    indexed = [(theme, read_entries(data_root, theme, options, report)) for theme in themes or present]
    # one bar for the whole run: each sample's check, then each file packed
    bar = tqdm(total=sum(len(e) for _, e in indexed), desc="pack", unit="file", disable=not progress)
    checked: list[tuple[str, list, bool]] = []
    with bar:
        for theme, entries in indexed:  # every check first: a bad sample raises before anything is written
            reported_before = len(report)
            good = []
            for e in entries:
                try:
                    for rel in (e.source_path, e.edited_path):
                        assert rel is not None
                        _check_video(fs, posixpath.join(src_root, rel), data_root.uri(rel), e.id)
                except SparkleDataError as err:
                    handle(err, errors, report, key=e.id)
                    continue
                finally:
                    bar.update(1)
                good.append(e)
            checked.append((theme, good, len(report) > reported_before))
        bar.total += sum(2 * len(good) for _, good, _ in checked)
        bar.refresh()
        for theme, good, left_out in checked:
            if layout == "webdataset":
                written += _pack_paired(fs, src_root, data_root, theme, good, out, max_shard_bytes, bar)
                remove_stale_shards(out, theme, written, intermediates=False, layout=layout)
                continue
            keep = {e.id for e in good}  # after a skip, the prompt files list only what the shards hold
            for rel, kept in ((train_csv_path(theme), _kept_csv), (train_metadata_path(theme), _kept_jsonl)):
                src = posixpath.join(src_root, rel)
                if not fs.exists(src):
                    continue
                data = fs.cat_file(src)
                if left_out:
                    data = kept(data.decode("utf-8-sig"), keep).encode("utf-8")
                out.write_bytes(rel, data)
                written.append(rel)
            for kind in ("source", "edited"):
                names = sorted(e.source_path if kind == "source" else e.edited_path for e in good)  # type: ignore[misc]
                loose = {
                    f"{theme}/{kind}_video/{posixpath.basename(p)}"
                    for p in fs.glob(posixpath.join(src_root, theme, f"{kind}_video", "*.mp4"))
                }
                extra = sorted(loose - set(names))
                if extra:
                    logger.warning(
                        "not packed (no row in %s names them): %s", train_csv_path(theme), ", ".join(extra)
                    )
                written += _pack_members(
                    fs,
                    src_root,
                    names,
                    out,
                    lambda part, k=kind, t=theme: shard_name(t, k, part),
                    max_shard_bytes,
                    bar,
                )
            if include_intermediates:
                written += _pack_intermediates(
                    fs, src_root, theme, out, keep, max_shard_bytes, errors, report, bar
                )
            remove_stale_shards(out, theme, written, intermediates=include_intermediates)
    return written


def _pack_paired(
    fs: Any,
    src_root: str,
    data_root: Any,
    theme: str,
    good: Sequence[Any],
    out: _Root,
    max_shard_bytes: float,
    bar: Any,
) -> list[str]:
    """Write ``good`` samples (sorted by id) as paired shards; a sample never straddles two shards."""
    from .layout import SCORE_FILES
    from .paired_shards import paired_sample, paired_shard_name
    from .records import read_jsonl

    meta_rel = train_metadata_path(theme)
    metadata: dict[str, Any] = {}
    if fs.exists(posixpath.join(src_root, meta_rel)):
        # already checked when the entries were read (bad rows reported there)
        rows = read_jsonl(data_root.read_text(meta_rel), data_root.uri(meta_rel), "skip", SkipReport())
        metadata = {
            sid: row["metadata"] for sid, row in rows.items() if isinstance(row.get("metadata"), dict)
        }
    scores: dict[str, dict[str, Any]] = {}
    for name in SCORE_FILES:
        rel = intermediate_jsonl_path(theme, name)
        if fs.exists(posixpath.join(src_root, rel)):
            for sid, row in read_jsonl(
                data_root.read_text(rel), data_root.uri(rel), "skip", SkipReport()
            ).items():
                scores.setdefault(sid, {})[name] = row
    samples = []
    for e in sorted(good, key=lambda e: e.id):
        row = {"task": e.id, "prompt": e.prompt}
        blob = paired_sample(row, metadata.get(e.id), scores.get(e.id, {}))
        videos = [posixpath.join(src_root, e.source_path), posixpath.join(src_root, e.edited_path)]
        sizes = [len(blob), *(fs.size(v) for v in videos)]
        samples.append((e.id, blob, videos, sizes))
    parts = plan_parts([sum(_member_bytes(x) for x in s[3]) - 512 for s in samples], max_shard_bytes)
    written: list[str] = []
    for part in sorted(set(parts)):
        rel = paired_shard_name(theme, part)
        with (
            out.open_atomic(rel) as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf,
        ):
            tf.copybufsize = 1 << 20
            for (sid, blob, videos, sizes), p in zip(samples, parts, strict=True):
                if p != part:
                    continue
                tf.addfile(_tar_info(f"{sid}.json", sizes[0]), io.BytesIO(blob))
                for suffix, path, size in zip((".source.mp4", ".edited.mp4"), videos, sizes[1:], strict=True):
                    with fs.open(path, "rb") as f:
                        tf.addfile(_tar_info(f"{sid}{suffix}", size), f)
                    bar.update(1)
        written.append(rel)
    return written


def _pack_intermediates(
    fs: Any,
    src_root: str,
    theme: str,
    out: _Root,
    keep: set[str],
    max_shard_bytes: float,
    errors: str,
    report: SkipReport,
    bar: Any,
) -> list[str]:
    """Pack ``intermediate_data/{theme}/{subdir}/`` of the kept ids into shards; check and copy the JSONLs."""
    from .records import read_jsonl

    written: list[str] = []
    for subdir, ext in INTERMEDIATE_DIRS.items():
        folder = f"intermediate_data/{theme}/{subdir}"
        names = []
        for p in sorted(fs.glob(posixpath.join(src_root, folder, f"*{ext}"))):
            sid = posixpath.splitext(posixpath.basename(p))[0]
            if sid not in keep:
                continue
            rel = f"{folder}/{posixpath.basename(p)}"
            try:
                if ext == ".mp4":
                    _check_video(fs, p, rel, sid)
                elif fs.size(p) == 0:
                    raise SparkleDataError(f"{subdir} artefact is empty (0 bytes)", path=rel, sample_id=sid)
            except SparkleDataError as err:
                handle(err, errors, report, key=f"{sid} ({subdir})")
                continue
            names.append(rel)
        if names:
            bar.total += len(names)
            bar.refresh()
            written += _pack_members(
                fs,
                src_root,
                names,
                out,
                lambda part, s=subdir, t=theme: intermediate_shard_name(t, s, part),
                max_shard_bytes,
                bar,
            )
    for p in sorted(fs.glob(posixpath.join(src_root, "intermediate_data", theme, "*.jsonl"))):
        rel = f"intermediate_data/{theme}/{posixpath.basename(p)}"
        text = fs.cat_file(p).decode("utf-8-sig")
        read_jsonl(text, rel, errors, report)  # every row parses, or is named
        out.write_text(rel, _kept_jsonl(text, keep))
        written.append(rel)
    return written
