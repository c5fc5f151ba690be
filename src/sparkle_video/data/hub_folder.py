"""The folder ``export --format hub`` writes: its row schema, and reading it back as ``load_sparkle`` rows.

The format sits below both the exporter (which writes it) and the loader (which reads it back), so neither
needs the other.
"""

from __future__ import annotations

import posixpath
import tempfile
from typing import Any

import datasets
import pyarrow as pa

from ..errors import SparkleDataError
from .catalog import LoadOptions
from .layout import THEMES
from .video import VideoReader

#: The exported rows: the loader's text fields, the edit type, and both videos as encoded mp4 bytes.
HUB_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "theme": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "subtheme": datasets.Value("string"),
        "scene": datasets.Value("string"),
        "original_scene": datasets.Value("string"),
        "edit_type": datasets.Value("string"),
        # the mp4 bytes as ``datasets``' Video feature (Arrow ``struct<bytes, path>``): plain ``load_dataset``
        # decodes them where torchcodec is installed; ``Video(decode=False)`` gives the bytes anywhere
        "source_video": datasets.Video(),
        "edited_video": datasets.Video(),
    }
)
HUB_SCHEMA: pa.Schema = HUB_FEATURES.arrow_schema
_VIDEO_COLUMNS = ("source_video", "edited_video")


# -- reading an export back ----------------------------------------------------------------------
def is_hub_export(root: Any) -> bool:
    """Whether a ``DataRoot`` holds what :func:`export_hub_folder` writes (and no prompt CSVs)."""
    return not root.exists("prompts") and bool(root.fs.glob(root.full("data/*/*.parquet")))


class _ExportRowDecoder:
    """Export rows -> loader rows: the mp4 bytes become lazy ``VideoReader``s; ``edit_type`` is dropped."""

    def __init__(self, label: str):
        self.label = label

    def _reader(self, data: bytes | dict | None, sid: str, key: str) -> Any:
        if isinstance(data, dict):  # the Video feature's undecoded cell; older exports stored bare bytes
            data = data.get("bytes")
        return None if data is None else VideoReader(data, name=f"{self.label}::{key} of {sid}")

    def row(self, row: dict) -> dict:
        out = {k: v for k, v in row.items() if k != "edit_type"}
        for key in _VIDEO_COLUMNS:
            out[key] = self._reader(row[key], row["id"], key)
        return out

    def batch(self, batch: dict[str, list]) -> dict[str, list]:
        out = {k: v for k, v in batch.items() if k != "edit_type"}
        for key in _VIDEO_COLUMNS:
            if key in batch:
                out[key] = [self._reader(d, i, key) for d, i in zip(batch[key], batch["id"], strict=True)]
        return out


def load_hub_export(
    root: Any,
    options: LoadOptions,
    *,
    streaming: bool = False,
    limit: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Read a folder written by :func:`export_hub_folder` as ``load_sparkle`` rows (same columns, lazy videos).

    ``themes``, ``subthemes``, ``ids`` and ``limit`` select as usual; ``min_scores`` needs the stage score
    files, which an export does not carry, so it is refused.
    """
    if options.min_scores:
        raise ValueError("min_scores needs the stage score files; a Hub export folder has none")
    found = {posixpath.basename(p.rstrip("/")) for p in root.fs.glob(root.full("data/*"))}
    present = sorted(
        found, key=lambda t: (THEMES.index(t) if t in THEMES else len(THEMES), t)
    )  # loader order
    themes = list(options.themes) if options.themes else present
    missing = [t for t in themes if t not in present]
    if missing:
        raise SparkleDataError(f"theme {missing[0]!r} is not in this export", path=root.uri("data"))
    files = [
        root.uri(f"data/{t}/{posixpath.basename(p)}")
        for t in themes
        for p in sorted(root.fs.glob(root.full(f"data/{t}/*.parquet")))
    ]
    storage = dict(root.storage_options) or None
    if streaming:
        ds = datasets.load_dataset(
            "parquet", data_files={"train": files}, split="train", streaming=True, storage_options=storage
        )
    else:
        with tempfile.TemporaryDirectory(prefix="sparkle-video-") as tmp:  # nothing left in the user's cache
            ds = datasets.load_dataset(
                "parquet",
                data_files={"train": files},
                split="train",
                cache_dir=tmp,
                keep_in_memory=True,
                storage_options=storage,
            )
    for key in _VIDEO_COLUMNS:  # our rows hold lazy readers over the bytes, never torchcodec decoders
        ds = ds.cast_column(key, datasets.Video(decode=False))
    wanted_ids = set(options.ids) if options.ids else None
    wanted_subthemes = set(options.subthemes) if options.subthemes else None
    if wanted_ids is not None or wanted_subthemes is not None:
        ds = ds.filter(
            lambda i, s: (
                (wanted_ids is None or i in wanted_ids)
                and (wanted_subthemes is None or s in wanted_subthemes)
            ),
            input_columns=["id", "subtheme"],
        )
    if limit is not None:
        ds = ds.take(limit) if streaming else ds.select(range(min(limit, len(ds))))
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError("rank and world_size go together")
        if streaming:
            from datasets.distributed import split_dataset_by_node

            ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
        else:
            ds = ds.shard(num_shards=world_size, index=rank, contiguous=True)
    decoder = _ExportRowDecoder(root.url)
    if streaming:
        return ds.map(decoder.row, remove_columns=["edit_type"])
    ds = ds.remove_columns(["edit_type"])
    ds.set_transform(decoder.batch)
    return ds
