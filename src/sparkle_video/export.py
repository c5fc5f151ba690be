"""Exports: Kiwi-Edit training CSVs, and Hub-ready folders that plain ``datasets.load_dataset`` loads.

The Hub folder stores each theme as Parquet with the mp4 bytes embedded, and a ``README.md`` whose YAML
``configs:`` name one config per theme, so ``load_dataset(folder_or_repo, "location")`` works with no
loading script and no video decoder installed; the bytes play anywhere (``VideoReader(row["source_video"])``).
"""

from __future__ import annotations

import csv
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm.auto import tqdm

from .catalog import LoadOptions, available_themes, read_entries
from .errors import SkipReport, SparkleDataError
from .sources import open_root

KIWI_CSV_COLUMNS = ("src_video", "tgt_video", "prompt")
HUB_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("theme", pa.string()),
        ("prompt", pa.string()),
        ("subtheme", pa.string()),
        ("scene", pa.string()),
        ("original_scene", pa.string()),
        ("edit_type", pa.string()),
        ("source_video", pa.binary()),
        ("edited_video", pa.binary()),
    ]
)


def _entries(root_path: str | os.PathLike, themes: Sequence[str] | None) -> dict[str, list]:
    root = open_root(root_path)
    chosen = list(themes) if themes else available_themes(root, bench=False)
    if not chosen:
        raise SparkleDataError("no prompts/{theme}_train.csv found", path=root.url)
    options = LoadOptions(themes=tuple(chosen))
    return {theme: read_entries(root, theme, options, SkipReport()) for theme in chosen}


def export_kiwi_csv(
    root: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    base_path: str | os.PathLike | None = None,
    themes: Sequence[str] | None = None,
) -> int:
    """Write a Kiwi-Edit training CSV (``src_video, tgt_video, prompt``) for a training-layout folder.

    Paths are relative to ``base_path`` (default: the dataset root, which is then Kiwi-Edit's base path).
    Returns the number of rows.
    """
    root_abs = os.path.abspath(os.fspath(root))
    base = os.path.abspath(os.fspath(base_path)) if base_path is not None else root_abs
    rows = []
    for entries in _entries(root_abs, themes).values():
        for e in entries:
            rel = [os.path.relpath(os.path.join(root_abs, p), base).replace(os.sep, "/") for p in (e.source_path, e.edited_path)]
            rows.append({"src_video": rel[0], "tgt_video": rel[1], "prompt": e.prompt})
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(KIWI_CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def hub_card_yaml(themes: Sequence[str], pretty_name: str = "Sparkle (export)") -> dict:
    """Card metadata whose ``configs`` make every theme (and ``all``) loadable with plain ``load_dataset``."""
    configs = [
        {"config_name": t, "data_files": [{"split": "train", "path": f"data/{t}/*.parquet"}]} for t in themes
    ]
    configs.append({"config_name": "all", "data_files": [{"split": "train", "path": "data/*/*.parquet"}], "default": True})
    return {
        "pretty_name": pretty_name,
        "license": "cc-by-4.0",
        "language": ["en"],
        "task_categories": ["video-to-video"],
        "tags": ["video-editing", "background-replacement", "sparkle"],
        "configs": configs,
    }


def export_hub_folder(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    themes: Sequence[str] | None = None,
    rows_per_file: int = 256,
    description: str | None = None,
) -> str:
    """A Hub-ready folder: ``data/{theme}/train-XXXXX.parquet`` (videos embedded) and a ``README.md`` card."""
    root_abs = os.path.abspath(os.fspath(root))
    fs, out_path = fsspec.core.url_to_fs(os.fspath(out_dir))
    by_theme = _entries(root_abs, themes)
    for theme, entries in by_theme.items():
        for part, start in enumerate(range(0, len(entries), rows_per_file)):
            chunk = entries[start : start + rows_per_file]
            columns: dict[str, list] = {name: [] for name in HUB_SCHEMA.names}
            for e in tqdm(chunk, desc=f"export {theme}", leave=False):
                for key, value in e.text_fields().items():
                    columns[key].append(value)
                columns["edit_type"].append(e.edit_type)
                for col, rel in (("source_video", e.source_path), ("edited_video", e.edited_path)):
                    path = posixpath.join(root_abs, rel)
                    if not os.path.exists(path):
                        raise SparkleDataError("video file is missing", path=path, sample_id=e.id)
                    with open(path, "rb") as f:
                        columns[col].append(f.read())
            target = posixpath.join(out_path, "data", theme, f"train-{part:05d}.parquet")
            fs.makedirs(posixpath.dirname(target), exist_ok=True)
            with fs.open(target, "wb") as f:
                pq.write_table(pa.table(columns, schema=HUB_SCHEMA), f)
    meta = yaml.safe_dump(hub_card_yaml(list(by_theme)), sort_keys=False)
    body = description or (
        "Sparkle samples exported by sparkle-video. Videos are embedded as mp4 bytes: "
        "`sparkle_video.VideoReader(row['source_video'])` decodes them lazily.\n"
    )
    with fs.open(posixpath.join(out_path, "README.md"), "w") as f:
        f.write(f"---\n{meta}---\n\n# Sparkle export\n\n{body}")
    return os.fspath(out_dir)
