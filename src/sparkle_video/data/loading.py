"""Loading Sparkle and Sparkle-Bench as ``datasets`` objects with lazily decoded videos.

``load_sparkle`` / ``load_sparkle_bench`` resolve the source (local folder, fsspec URL, Hub repo), run
the builders in ``sparkle_video_loaders`` and attach a transform that turns each row's file references
into ``VideoReader``s (and PIL images for reference images) only when the row is read.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import datasets

from ..errors import SkipReport, SparkleDataError, SparkleHubError
from .artifacts import CheckedVideoReader
from .catalog import LoadOptions
from .hub_folder import is_hub_export, load_hub_export
from .layout import SPARKLE_BENCH_REPO, SPARKLE_REPO
from .shards import TarMember
from .sources import DataRoot, FileCheck, looks_like_repo_id, open_root
from .video import VideoReader

logger = logging.getLogger("sparkle_video")

Source = str | os.PathLike


# -- references -> objects -----------------------------------------------------------------------
def ref_to_video(ref: dict | None, storage_options: dict | None = None) -> VideoReader | None:
    """A file reference row field -> a lazy ``VideoReader`` (nothing is opened yet)."""
    if ref is None or (ref.get("bytes") is None and not ref.get("path")):
        return None
    member = ref.get("member")
    name = (
        f"{ref.get('path')}::{member}" if member else ref.get("path")
    )  # a tar member names itself (and its id)
    if ref.get("bytes") is not None:
        return VideoReader(ref["bytes"], name=name or "<stream>")
    size = ref.get("size", -1)
    stamp = ref.get("stamp")
    if stamp and "://" not in ref["path"]:  # a local file: every open checks it is still what was indexed
        return CheckedVideoReader(
            ref["path"],
            check=file_check(ref["path"], stamp, ref.get("offset") or 0, size, member),
            offset=ref.get("offset") or 0,
            size=None if size is None or size < 0 else size,
            name=name,
        )
    return VideoReader(
        ref["path"],
        offset=ref.get("offset") or 0,
        size=None if size is None or size < 0 else size,
        name=name,
        storage_options=storage_options,
    )


def file_check(path: str, stamp: str, offset: int, size: int | None, member: str | None) -> FileCheck:
    """The check for a stamped reference: the file's stamp, plus the member header checksum for a shard."""
    file_part, _, chksum = stamp.partition("|chksum=")
    tar_member = None
    if chksum and member:
        tar_member = TarMember(member, offset, size if size is not None else -1, int(chksum))
    return FileCheck(path, file_part, tar_member)


def ref_to_image(ref: dict | None, storage_options: dict | None = None) -> Any:
    """A file reference -> a ``PIL.Image`` (PIL reads only the header until pixels are used)."""
    from PIL import Image

    if ref is None or (ref.get("bytes") is None and not ref.get("path")):
        return None
    if ref.get("bytes") is not None:
        return Image.open(io.BytesIO(ref["bytes"]))
    path = ref["path"]
    if "://" in path:
        import fsspec

        with fsspec.open(path, "rb", **(storage_options or {})) as f:
            return Image.open(io.BytesIO(f.read()))
    return Image.open(path)


class RowDecoder:
    """Turns file-reference columns into lazy objects; picklable, so DataLoader workers can use it."""

    def __init__(
        self,
        video_fields: Sequence[str],
        image_fields: Sequence[str] = (),
        storage_options: dict | None = None,
    ):
        self.video_fields = tuple(video_fields)
        self.image_fields = tuple(image_fields)
        self.storage_options = storage_options or {}

    def row(self, row: dict) -> dict:
        out = dict(row)
        for name in self.video_fields:
            if name in out:
                out[name] = ref_to_video(out[name], self.storage_options)
        for name in self.image_fields:
            if name in out:
                out[name] = ref_to_image(out[name], self.storage_options)
        return out

    def batch(self, batch: dict[str, list]) -> dict[str, list]:
        out = dict(batch)
        for name in self.video_fields:
            if name in out:
                out[name] = [ref_to_video(r, self.storage_options) for r in out[name]]
        for name in self.image_fields:
            if name in out:
                out[name] = [ref_to_image(r, self.storage_options) for r in out[name]]
        return out


# -- source resolution ----------------------------------------------------------------------------
def hub_patterns(bench: bool, themes: Sequence[str], repo_files: Sequence[str], layout: str) -> list[str]:
    """``allow_patterns`` that download only the files of ``themes``.

    For the training set, ``layout="auto"`` picks the tar shards when the repo has them for a theme
    (the full corpus) and the uncompressed preview folder otherwise.
    """
    patterns: list[str] = []
    files = set(repo_files)
    for t in themes:
        if bench:
            patterns += [f"{t}_bench.csv", f"{t}_metadata.jsonl", f"source_videos/{t}/*", f"ref_images/{t}/*"]
            continue
        patterns.append(f"prompts/{t}_*")
        has_shards = any(f.startswith(f"{t}_source_video_part") and f.endswith(".tar") for f in files)
        if layout == "shards" or (layout == "auto" and has_shards):
            patterns += [f"{t}_source_video_part*.tar", f"{t}_edited_video_part*.tar"]
        else:
            patterns += [f"{t}/source_video/*", f"{t}/edited_video/*"]
    return patterns


def resolve_source(
    source: Source | None,
    *,
    bench: bool,
    themes: Sequence[str] | None,
    streaming: bool,
    layout: str = "auto",
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
    storage_options: dict | None = None,
    options: LoadOptions | None = None,
    limit: int | None = None,
) -> DataRoot:
    """Turn ``source`` into a ``DataRoot``: download only what is needed from a Hub repo, or stream it.

    A repo id is pinned to one commit first. Without streaming, the prompt files are fetched, the
    selection (themes, ``options.ids``/``subthemes``/``min_scores``, ``limit``) is computed from them and
    only its videos or shards are downloaded; when ``limit`` narrowed it, ``root.selected_ids`` says
    which ids. Streaming reads ``hf://datasets/{repo}@{commit}``. Offline, or with the Hub unreachable,
    both use the local cache.
    """
    src = os.fspath(source) if source is not None else (SPARKLE_BENCH_REPO if bench else SPARKLE_REPO)
    if "://" in src or os.path.isdir(src):
        return open_root(src, storage_options)
    if looks_like_repo_id(src):
        from .hub import prepare_snapshot, select_ids
        from .transport import resolve_repo

        if options is None:
            options = LoadOptions(bench=bench, themes=tuple(themes) if themes else None, layout=layout)
        repo = resolve_repo(src, revision, token, cache_dir)
        if streaming and not repo.offline:
            stream_options = dict(storage_options or {})
            if token is not None:
                stream_options.setdefault("token", token)
            root = DataRoot(repo.stream_url, stream_options)
            if limit is not None:  # so that streaming reads no shard past the last sample wanted
                root.selected_ids = tuple(select_ids(root, options, limit))
            return root
        folder, ids = prepare_snapshot(repo, options, limit)
        root = open_root(folder)
        root.selected_ids = tuple(ids) if ids is not None else None
        return root
    raise SparkleDataError("source is neither an existing folder, a URL, nor a Hub repo id", path=src)


# -- the two loaders ------------------------------------------------------------------------------
def progress_default() -> bool:
    """Whether ``datasets``' own bars show when the caller did not say: only with debug logging (``-v``)."""
    return logger.isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Silence ``datasets``' own bars ("Generating train split") when ``enabled`` is False."""
    was_enabled = datasets.utils.is_progress_bar_enabled()
    if not enabled and was_enabled:
        datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and was_enabled:
            datasets.utils.enable_progress_bars()


def _load(
    builder_cls: type,
    decoder: RowDecoder,
    split: str,
    source: Source | None,
    *,
    bench: bool,
    themes: str | Sequence[str] | None,
    streaming: bool,
    subthemes: Sequence[str] | None,
    ids: Sequence[str] | None,
    limit: int | None,
    min_scores: dict[str, float] | None,
    layout: str,
    errors: str,
    verify: str | None,
    rank: int | None,
    world_size: int | None,
    skip_report: SkipReport | None,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | None,
    storage_options: dict | None,
    progress: bool | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    if progress is None:
        progress = progress_default()
    if isinstance(themes, str):
        themes = [themes]
    if verify is None:
        verify = "metadata" if errors == "skip" else "size"
    options = LoadOptions(
        bench=bench,
        themes=tuple(themes) if themes else None,
        layout=layout,
        subthemes=tuple(subthemes) if subthemes else None,
        ids=tuple(ids) if ids else None,
        min_scores=dict(min_scores or {}),
        errors=errors,
        verify=verify,
    )
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    root = resolve_source(
        source,
        bench=bench,
        themes=options.themes,
        streaming=streaming,
        layout=layout,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        storage_options=storage_options,
        options=options,
        limit=limit,
    )
    if root.selected_ids is not None:  # a Hub download fetched only the first ``limit`` samples
        options.ids = root.selected_ids
    decoder.storage_options = dict(root.storage_options)
    if not bench and is_hub_export(root):  # the folder ``export --format hub`` writes: the same rows
        with _progress_bars(progress):
            return load_hub_export(
                root, options, streaming=streaming, limit=limit, rank=rank, world_size=world_size
            )
    option_fields = {k: v for k, v in vars(options).items() if k != "bench"}
    config_name = options.themes[0] if options.themes and len(options.themes) == 1 else "all"
    spool = None
    if streaming and skip_report is not None:  # skips made in any process reach the caller's report
        spool = tempfile.mkdtemp(prefix="sparkle-video-skips-")
        skip_report.spool_to(spool)
        weakref.finalize(skip_report, shutil.rmtree, spool, True)
    with tempfile.TemporaryDirectory(prefix="sparkle-video-") as tmp, _progress_bars(progress):
        builder = builder_cls(
            cache_dir=tmp,
            config_name=config_name,
            root_url=root.url,
            storage_options=dict(root.storage_options),
            options=option_fields,
            streaming=streaming,
            skip_spool=spool,
        )
        if streaming:
            ds = builder.as_streaming_dataset(split=split)
            planned = getattr(builder, "skip_report", None)  # skips found while reading the CSV/JSONL index
            if skip_report is not None and planned is not None:
                skip_report.skipped.extend(planned.skipped)
            if limit is not None:
                ds = ds.take(limit)
            if rank is not None or world_size is not None:
                from datasets.distributed import split_dataset_by_node

                if rank is None or world_size is None:
                    raise ValueError("rank and world_size go together")
                ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
            return ds.map(decoder.row)
        try:
            builder.download_and_prepare(download_mode="force_redownload", verification_mode="no_checks")
        except datasets.exceptions.DatasetGenerationError as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, (SparkleDataError, SparkleHubError)):  # surface our error, not the wrapper
                raise cause from None
            raise
        ds = builder.as_dataset(split=split, in_memory=True)
    report = getattr(builder, "skip_report", SkipReport())
    if skip_report is not None:
        skip_report.skipped.extend(report.skipped)
    if len(report):
        logger.warning("%s", report.summary())
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError("rank and world_size go together")
        ds = ds.shard(num_shards=world_size, index=rank, contiguous=True)
    ds.set_transform(decoder.batch)
    return ds


def load_sparkle(
    source: Source | None = None,
    themes: str | Sequence[str] | None = None,
    split: str = "train",
    streaming: bool = False,
    *,
    subthemes: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    min_scores: dict[str, float] | None = None,
    layout: str = "auto",
    errors: str = "raise",
    verify: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    skip_report: SkipReport | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
    storage_options: dict | None = None,
    progress: bool | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load Sparkle training pairs as a ``datasets.Dataset`` (or ``IterableDataset`` when streaming).

    Args:
        source: local folder (preview layout or extracted shards), folder or fsspec URL holding the
            official ``{theme}_{source|edited}_video_partXX.tar`` shards (read without extracting), a
            folder written by ``export_hub_folder`` (Parquet with embedded mp4s), or a
            Hub repo id (default ``stdKonjac/Sparkle``; only the themes asked for are downloaded, or
            streamed through ``HfFileSystem`` with ``streaming=True``).
        themes: a theme or list of themes (default: every theme present).
        split: only ``"train"`` exists upstream.
        streaming: read lazily, members in shard order, splitting deterministically over ranks
            (``rank``/``world_size``) and DataLoader workers.
        subthemes, ids: keep only these.
        limit: at most this many samples (the first in index order).
        min_scores: ``{score_file: threshold}`` over the stage score JSONLs, e.g.
            ``{"edited_video_score": 8.5}`` (mean ``O_score``), ``{"edited_frame0_score": 9}``.
        layout: ``"auto"`` (shards if present), ``"folder"`` or ``"shards"``.
        errors: ``"raise"`` (default) raises ``SparkleDataError`` naming the file and id; ``"skip"``
            skips bad samples, logs each one and fills ``skip_report``.
        verify: ``"size"`` (files exist and are not empty), ``"metadata"`` (also open each video
            header: catches truncated and non-video files up front) or ``"none"``. Defaults to
            ``"metadata"`` with ``errors="skip"`` and ``"size"`` otherwise.
        skip_report: filled with every sample skipped under ``errors="skip"``. When streaming, samples
            are skipped while iterating, possibly in DataLoader worker processes: the report collects
            them from every process and is complete once iteration ends.
        progress: show ``datasets``' "Generating train split" bar. Default: only when the
            ``sparkle_video`` logger is at DEBUG (``sparkle-video -v``), so notebooks and commands stay quiet.

    Rows: ``id, theme, prompt, subtheme, scene, original_scene, source_video, edited_video``; the
    videos are lazy ``VideoReader``s and nothing is decoded before frames are asked for.
    """
    if split != "train":
        raise ValueError(f"Sparkle has only the 'train' split, got {split!r}")
    from sparkle_video_loaders import Sparkle

    return _load(
        Sparkle,
        RowDecoder(("source_video", "edited_video")),
        split,
        source,
        bench=False,
        themes=themes,
        streaming=streaming,
        subthemes=subthemes,
        ids=ids,
        limit=limit,
        min_scores=min_scores,
        layout=layout,
        errors=errors,
        verify=verify,
        rank=rank,
        world_size=world_size,
        skip_report=skip_report,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        storage_options=storage_options,
        progress=progress,
    )


def load_sparkle_bench(
    source: Source | None = None,
    themes: str | Sequence[str] | None = None,
    streaming: bool = False,
    *,
    subthemes: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    errors: str = "raise",
    verify: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    skip_report: SkipReport | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
    storage_options: dict | None = None,
    progress: bool | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load Sparkle-Bench (default repo ``stdKonjac/Sparkle-Bench``) as a ``datasets`` object.

    Rows: ``id, theme, prompt, subtheme, scene, original_scene, source_video`` (lazy ``VideoReader``)
    and ``ref_image`` (``PIL.Image`` or ``None``). Arguments as in :func:`load_sparkle`.
    """
    from sparkle_video_loaders import SparkleBench

    return _load(
        SparkleBench,
        RowDecoder(("source_video",), ("ref_image",)),
        "test",
        source,
        bench=True,
        themes=themes,
        streaming=streaming,
        subthemes=subthemes,
        ids=ids,
        limit=limit,
        min_scores=None,
        layout="folder",
        errors=errors,
        verify=verify,
        rank=rank,
        world_size=world_size,
        skip_report=skip_report,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        storage_options=storage_options,
        progress=progress,
    )
