"""Reading and writing Sparkle datasets: formats, where the bytes live, typed readers, selection, loading, writing.

Imports go one way, each layer using only those before it:
``layout/records/shards/display`` (formats) -> ``transport/sources`` (local, fsspec, Hub bytes) ->
``video/masks/artifacts/hub_folder/paired_shards`` (typed readers) -> ``catalog/hub`` (planning a selection) ->
``loading/collate`` (``load_sparkle``, batches) -> ``writer/export/preview/synthetic`` (writing, showing).

The names below resolve on first use, so ``import sparkle_video.data`` stays light (``datasets`` loads
only with the loaders).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module of this package that defines it
_EXPORTS: dict[str, str] = {
    # loading (the builders in ``sparkle_video_loaders`` do the reading)
    "load_sparkle": "loading",
    "load_sparkle_bench": "loading",
    "RowDecoder": "loading",
    "ref_to_video": "loading",
    "ref_to_image": "loading",
    "resolve_source": "loading",
    "hub_patterns": "loading",
    # training batches
    "SparkleCollator": "collate",
    "FitPlan": "collate",
    "fit_plan": "collate",
    "fit_frames": "collate",
    "RESIZE_POLICIES": "collate",
    # typed readers
    "VideoReader": "video",
    "VideoMetadata": "video",
    "write_video": "video",
    "load_mask": "masks",
    "save_mask": "masks",
    "pack_mask": "masks",
    "unpack_mask": "masks",
    "SparkleArtifacts": "artifacts",
    # where the bytes live
    "DataRoot": "sources",
    "open_root": "sources",
    # writing
    "SampleRecord": "writer",
    "write_sparkle": "writer",
    "write_sparkle_bench": "writer",
    "pack_shards": "writer",
    "export_kiwi_csv": "export",
    "export_hub_folder": "export",
    # showing
    "show": "preview",
    "write_preview": "preview",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
