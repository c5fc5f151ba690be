"""Exports: Kiwi-Edit training CSVs, and Hub-ready folders that plain ``datasets.load_dataset`` loads.

The Hub folder stores each theme as Parquet with the mp4 bytes embedded and a ``README.md`` whose YAML
``configs:`` name one config per theme (plus ``all``) and whose ``dataset_info`` declares the features, so
``load_dataset(folder_or_repo, "location")`` works with no loading script and no video decoder installed
(``datasets``' own ``Video`` feature needs torchcodec and a system FFmpeg); the bytes play anywhere:
``VideoReader(row["source_video"])``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.info import DatasetInfo, DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData
from tqdm.auto import tqdm

from .. import safe_write
from ..errors import SkipReport, SparkleDataError, check_error_mode, handle
from .catalog import LoadOptions, available_themes, read_entries
from .hub_folder import _VIDEO_COLUMNS, HUB_FEATURES, HUB_SCHEMA
from .layout import OPENVE_EDIT_TYPE, THEMES
from .loading import load_sparkle
from .records import csv_quoting
from .sources import open_root

KIWI_CSV_COLUMNS = ("src_video", "tgt_video", "prompt")

_TEXT_COLUMNS = [name for name in HUB_FEATURES if name not in _VIDEO_COLUMNS]
#: mp4 bytes are already compressed: no codec, dictionary or min/max statistics for them (all cost time).
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": {**{c: "snappy" for c in _TEXT_COLUMNS}, **{c: "none" for c in _VIDEO_COLUMNS}},
    "use_dictionary": _TEXT_COLUMNS,
    "write_statistics": _TEXT_COLUMNS,
}

DEFAULT_CARD_TEXT = """# Sparkle export

Sparkle video background-replacement pairs exported by `sparkle-video`: one config per theme (and `all`),
each row holding the instruction, its keyword fields and both videos as embedded mp4 bytes.

```python
import datasets
from sparkle_video import VideoReader

ds = datasets.load_dataset("path/or/repo", "location", split="train")
frames = VideoReader(ds[0]["edited_video"]).get_frames_uniform(4)  # (4, H, W, 3) uint8
```

Licence: CC BY 4.0, as the Sparkle dataset.
"""


# -- Kiwi-Edit CSV -------------------------------------------------------------------------------
def kiwi_rows(
    root_abs: str, entries: Iterable[Any], base: str, errors: str = "raise", report: SkipReport | None = None
) -> list[dict[str, str]]:
    """Kiwi-Edit rows for ``entries`` with paths relative to ``base``; missing or empty videos are errors."""
    from .video import VideoReader

    rows = []
    for e in entries:
        paths = [os.path.join(root_abs, *p.split("/")) for p in (e.source_path, e.edited_path)]
        try:
            for p in paths:
                if not os.path.isfile(p) or os.path.getsize(p) == 0:
                    raise SparkleDataError("video file is missing or empty", path=p, sample_id=e.id)
                VideoReader(p).metadata  # noqa: B018 - the header check: truncated and non-video files fail
        except SparkleDataError as err:
            handle(SparkleDataError(err.reason, path=err.path, sample_id=e.id), errors, report, key=e.id)
            continue
        rel = [os.path.relpath(p, base).replace(os.sep, "/") for p in paths]
        rows.append({"src_video": rel[0], "tgt_video": rel[1], "prompt": e.prompt})
    return rows


def export_kiwi_csv(
    root: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    base_path: str | os.PathLike | None = None,
    themes: Sequence[str] | None = None,
    errors: str = "raise",
    skip_report: SkipReport | None = None,
) -> int:
    """Write a Kiwi-Edit training CSV (``src_video, tgt_video, prompt``) for a local training-layout folder.

    Kiwi-Edit reads the videos from disk, so ``root`` is a local folder with loose mp4s (the preview
    layout, or shards after extraction). Paths are relative to ``base_path`` (default: ``root``, which is
    then Kiwi-Edit's base path). Returns the number of rows written; under ``errors="skip"`` each sample
    left out is named in ``skip_report``.
    """
    check_error_mode(errors)
    report = skip_report if skip_report is not None else SkipReport()
    root_abs = os.path.abspath(os.fspath(root))
    base = os.path.abspath(os.fspath(base_path)) if base_path is not None else root_abs
    data_root = open_root(root_abs)
    chosen = list(themes) if themes else available_themes(data_root, bench=False)
    options = LoadOptions(themes=tuple(chosen), errors=errors)
    rows: list[dict[str, str]] = []
    for theme in chosen:
        packed = data_root.shards(theme, "source") + data_root.shards(theme, "edited")
        if packed and not data_root.isdir(f"{theme}/source_video"):
            raise SparkleDataError(
                f"Kiwi-Edit reads loose mp4 files, but theme {theme!r} is packed in tar shards "
                f"({', '.join(packed[:2])}{', ...' if len(packed) > 2 else ''}): extract them in place first "
                "(each member is stored under its final path, e.g. `tar -xf SHARD -C SOURCE`)",
                path=root_abs,
            )
        rows += kiwi_rows(root_abs, read_entries(data_root, theme, options, report), base, errors, report)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(
        buf, fieldnames=list(KIWI_CSV_COLUMNS), lineterminator="\n", quoting=csv_quoting(rows)
    )
    writer.writeheader()
    writer.writerows(rows)
    safe_write.write_text(out_csv, buf.getvalue())  # whole or not at all: a full disk leaves no half CSV
    return len(rows)


# -- Hub-ready folder ----------------------------------------------------------------------------
def hub_card_data(
    counts: dict[str, int], pretty_name: str = "Sparkle (export)", num_bytes: dict[str, int] | None = None
) -> DatasetCardData:
    """Card metadata: one config per theme plus a default ``all``, each with its features and split size."""
    themes = sorted(counts, key=lambda t: (THEMES.index(t) if t in THEMES else len(THEMES), t))
    configs = [
        {"config_name": t, "data_files": [{"split": "train", "path": f"data/{t}/*.parquet"}]} for t in themes
    ]
    configs.append(
        {
            "config_name": "all",
            "data_files": [{"split": "train", "path": "data/*/*.parquet"}],
            "default": True,
        }
    )
    n = sum(counts.values())
    card = DatasetCardData(
        pretty_name=pretty_name,
        license="cc-by-4.0",
        language=["en"],
        task_categories=["video-to-video"],
        size_categories=[size_category(n)],
        tags=["video-editing", "background-replacement", "sparkle"],
        configs=configs,
    )
    sizes = dict(num_bytes or {})
    sizes["all"] = sum(sizes.get(t, 0) for t in themes)
    infos = {
        name: DatasetInfo(
            config_name=name,
            features=HUB_FEATURES,
            splits=datasets.SplitDict(
                {"train": datasets.SplitInfo("train", num_bytes=sizes.get(name, 0), num_examples=count)}
            ),
        )
        for name, count in [*((t, counts[t]) for t in themes), ("all", n)]
    }
    DatasetInfosDict(infos).to_dataset_card_data(card)
    return card


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` rows."""
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return label
    return "1M<n<10M"


@dataclass
class _ParquetParts:
    """Rolling Parquet files ``data/{theme}/train-XXXXX.parquet``: small row groups, bounded file size."""

    fs: Any
    folder: str
    rows_per_group: int
    max_file_bytes: float
    part: int = 0
    file_bytes: int = 0
    total_bytes: int = 0
    rows: list[dict] = field(default_factory=list)
    writer: pq.ParquetWriter | None = None
    handle: Any = None
    written: list[str] = field(default_factory=list)
    #: The export root: local part files must stay inside it (a linked-out ``data/THEME`` is refused).
    root: str | None = None
    tmp: str | None = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        if self.writer is None:
            path = posixpath.join(self.folder, f"train-{self.part:05d}.parquet")
            if self.root is not None and _is_local(self.fs):
                safe_write.inside(self.root, path)
            self.tmp = posixpath.join(self.folder, safe_write.temp_sibling(path).name)
            self.written.append(path)
            with self._aborting(), safe_write.os_errors(path):  # a temporary name, renamed when complete
                self.fs.makedirs(self.folder, exist_ok=True)
                self.handle = self.fs.open(self.tmp, "wb")
                self.writer = pq.ParquetWriter(self.handle, HUB_SCHEMA, **PARQUET_OPTIONS)
        table = pa.Table.from_pylist(self.rows, schema=HUB_SCHEMA)
        with self._aborting(), safe_write.os_errors(self.written[-1]):
            self.writer.write_table(table)
        self.file_bytes += table.nbytes
        self.total_bytes += table.nbytes
        self.rows = []
        if self.file_bytes >= self.max_file_bytes:
            self._close_file()
            self.part, self.file_bytes = self.part + 1, 0

    def close(self) -> None:
        self.flush()
        self._close_file()

    def _close_file(self) -> None:
        if self.writer is not None:
            with self._aborting(), safe_write.os_errors(self.written[-1]):
                self.writer.close()
                if _is_local(self.fs):
                    self.handle.flush()
                    os.fsync(self.handle.fileno())
                self.handle.close()
                self.fs.mv(self.tmp, self.written[-1])
            self.writer = self.handle = self.tmp = None

    @contextlib.contextmanager
    def _aborting(self) -> Iterator[None]:
        """On a write error (a full disk), drop the unfinished part file: no temporary is left behind."""
        try:
            yield
        except OSError:
            with contextlib.suppress(Exception):
                if self.handle is not None:
                    self.handle.close()
            with contextlib.suppress(Exception):
                if self.tmp is not None and self.fs.exists(self.tmp):
                    self.fs.rm(self.tmp)
            self.writer = self.handle = self.tmp = None
            raise


def _is_local(fs: Any) -> bool:
    proto = fs.protocol
    return "file" in ((proto,) if isinstance(proto, str) else tuple(proto))


def hub_row(row: dict[str, Any]) -> dict[str, Any]:
    """A loader row (lazy ``VideoReader``s) -> an export row with the encoded mp4 bytes."""
    out = {k: row[k] for k in ("id", "theme", "prompt", "subtheme", "scene", "original_scene")}
    out["edit_type"] = OPENVE_EDIT_TYPE if row["theme"] == "openve3m" else row["theme"]
    for key in ("source_video", "edited_video"):
        data = row[key].read_bytes()
        if not data:
            raise SparkleDataError(f"{key} is empty", sample_id=row["id"])
        kind = key.split("_")[0]
        out[key] = {"bytes": data, "path": f"{row['theme']}/{kind}_video/{row['id']}.mp4"}
    return out


def export_hub_folder(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    themes: Sequence[str] | None = None,
    rows_per_group: int = 16,
    max_file_bytes: float = 500e6,
    pretty_name: str = "Sparkle (export)",
    card_text: str | None = None,
    errors: str = "raise",
    skip_report: SkipReport | None = None,
    storage_options: dict | None = None,
    progress: bool = True,
) -> str:
    """Write a Hub-ready folder: ``data/{theme}/train-XXXXX.parquet`` (mp4 bytes embedded) and ``README.md``.

    ``source`` is anything ``load_sparkle`` reads (folder, tar shards in place, fsspec URL, Hub repo);
    ``out_dir`` a local folder or fsspec URL. Small row groups keep the Hub viewer responsive with
    video-sized cells. Under ``errors="skip"`` bad samples are left out and named in ``skip_report``.
    """
    check_error_mode(errors)
    report = skip_report if skip_report is not None else SkipReport()
    ds = load_sparkle(  # verify="metadata": every video's header is opened before anything is written
        source,
        themes=themes,
        errors=errors,
        verify="metadata",
        skip_report=report,
        storage_options=storage_options,
    )  # ``datasets``' bars follow the logging level; this export's own bar follows ``progress``
    fs, out_path = fsspec.core.url_to_fs(os.fspath(out_dir))
    parts: dict[str, _ParquetParts] = {}
    counts: dict[str, int] = {}
    for row in tqdm(ds, total=len(ds), desc="export", disable=not progress):
        try:
            exported = hub_row(row)
        except SparkleDataError as err:
            handle(err, errors, report, key=row["id"])
            continue
        theme = row["theme"]
        if theme not in parts:
            folder = posixpath.join(out_path, "data", theme)
            parts[theme] = _ParquetParts(fs, folder, rows_per_group, max_file_bytes, root=out_path)
        parts[theme].add(exported)
        counts[theme] = counts.get(theme, 0) + 1
    for p in parts.values():
        p.close()
    if not counts:
        raise SparkleDataError("nothing to export: no sample survived loading", path=os.fspath(source))
    data = hub_card_data(counts, pretty_name, {t: p.total_bytes for t, p in parts.items()})
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{card_text or DEFAULT_CARD_TEXT}")
    readme = posixpath.join(out_path, "README.md")
    if _is_local(fs):
        safe_write.write_text(readme, str(card), out_path)
    else:
        with safe_write.os_errors(readme), fs.open(readme, "wb") as f:
            f.write(str(card).encode("utf-8"))
    return os.fspath(out_dir)
