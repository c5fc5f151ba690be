"""Per-id access to the pipeline's intermediate artefacts (masks, background videos, frame-0 edits...).

Artefacts live under ``intermediate_data/{theme}/`` either as loose files or inside
``intermediate_data/{theme}_{subdir}_partXX.tar`` shards; both are read without extraction.
"""

from __future__ import annotations

import io
import os
import posixpath
from typing import Any

from ..errors import SparkleDataError
from .layout import (
    INTERMEDIATE_DIRS,
    INTERMEDIATE_JSONL,
    INTERMEDIATE_SHARD_RE,
    SAMPLE_ID_RE,
    intermediate_jsonl_path,
    intermediate_path,
)
from .masks import load_mask
from .records import read_jsonl
from .shards import TarMember, index_tar
from .sources import DataRoot, FileCheck, open_root
from .video import VideoReader

ARTIFACT_NAMES: tuple[str, ...] = (*INTERMEDIATE_DIRS, *INTERMEDIATE_JSONL)


class CheckedVideoReader(VideoReader):
    """A ``VideoReader`` of an indexed file that refuses to open it once it changed (see ``FileCheck``).

    ``source`` stays the path, so callers see the same reader; only opening gains the check.
    """

    def __init__(self, source: str, *, check: FileCheck, **kwargs: Any):
        super().__init__(source, **kwargs)
        self.check = check

    def _open_file(self) -> Any:
        self.check.verify()
        return super()._open_file()


def theme_of(sample_id: str) -> str:
    m = SAMPLE_ID_RE.match(sample_id)
    if not m:
        raise SparkleDataError(f"not a Sparkle id {sample_id!r} (expected Sparkle_{{theme}}_{{number}})")
    return m["theme"]


class SparkleArtifacts:
    """Read intermediate artefacts of a Sparkle dataset by sample id.

    ``get(id, "source_video_mask")`` -> boolean ``(T, H, W)`` array; ``*_video`` -> lazy
    ``VideoReader``; ``*frame0*`` -> ``PIL.Image``; JSONL names -> that id's record (``dict``).
    """

    def __init__(self, source: str | os.PathLike | DataRoot, storage_options: dict | None = None):
        self.root = source if isinstance(source, DataRoot) else open_root(source, storage_options)
        self._jsonl: dict[tuple[str, str], dict[str, dict]] = {}
        self._shard_index: dict[tuple[str, str], dict[str, tuple[str, TarMember]]] = {}
        self._stamps: dict[str, str] = {}  # shard -> what it was when indexed

    def available(self, sample_id: str) -> list[str]:
        """Names of the artefacts present for ``sample_id``."""
        return [name for name in ARTIFACT_NAMES if self._locate(sample_id, name, must=False) is not None]

    def get(self, sample_id: str, name: str) -> Any:
        if name not in ARTIFACT_NAMES:
            raise ValueError(f"unknown artefact {name!r}; known: {list(ARTIFACT_NAMES)}")
        theme = theme_of(sample_id)
        if name in INTERMEDIATE_JSONL:
            records = self._records(theme, name)
            if sample_id not in records:
                raise SparkleDataError(
                    f"no {name} record for this id",
                    path=self.root.uri(intermediate_jsonl_path(theme, name)),
                    sample_id=sample_id,
                )
            return records[sample_id]
        found = self._locate(sample_id, name, must=True)
        assert found is not None
        return self._decode(name, found, sample_id)

    # -- internals ----------------------------------------------------------------------------------
    def _records(self, theme: str, name: str) -> dict[str, dict]:
        key = (theme, name)
        if key not in self._jsonl:
            rel = intermediate_jsonl_path(theme, name)
            if not self.root.exists(rel):
                raise SparkleDataError(f"{name}.jsonl is absent", path=self.root.uri(rel))
            self._jsonl[key] = read_jsonl(self.root.read_text(rel), self.root.uri(rel))
        return self._jsonl[key]

    def _shards(self, theme: str, subdir: str) -> dict[str, tuple[str, TarMember]]:
        key = (theme, subdir)
        if key not in self._shard_index:
            found: dict[str, tuple[str, TarMember]] = {}
            for name in self.root.listdir("intermediate_data"):
                m = INTERMEDIATE_SHARD_RE.match(name)
                if not (m and name.startswith(f"{theme}_{subdir}_part")):
                    continue
                rel = f"intermediate_data/{name}"
                self._stamps[rel] = self.root.stamp(rel)
                with self.root.open(rel, "rb") as f:
                    for member, info in index_tar(f, self.root.uri(rel)).items():
                        found[member] = (rel, info)
            self._shard_index[key] = found
        return self._shard_index[key]

    def _locate(self, sample_id: str, name: str, must: bool) -> dict | None:
        theme = theme_of(sample_id)
        if name in INTERMEDIATE_JSONL:
            try:
                return {} if sample_id in self._records(theme, name) else None
            except SparkleDataError:
                return None
        rel = intermediate_path(theme, name, sample_id)
        if self.root.exists(rel):
            return {"path": self.root.uri(rel), "offset": 0, "size": None}
        members = self._shards(theme, name)
        # shard members are named like the loose files, relative to intermediate_data/ or the root
        for candidate in (rel, posixpath.relpath(rel, "intermediate_data")):
            if candidate in members:
                shard, info = members[candidate]
                check = None
                if self.root.is_local:
                    check = FileCheck(self.root.full(shard), self._stamps.get(shard, ""), info)
                return {
                    "path": self.root.uri(shard),
                    "offset": info.offset,
                    "size": info.size,
                    "check": check,
                }
        if must:
            raise SparkleDataError(
                f"no {name} artefact for this id", path=self.root.uri(rel), sample_id=sample_id
            )
        return None

    def _reader(self, ref: dict, name: str | None = None) -> VideoReader:
        """A reader of a located artefact; a shard member's reader re-checks the shard on every open."""
        kwargs: dict[str, Any] = {"offset": ref["offset"], "size": ref["size"], "name": name}
        if ref.get("check") is not None:
            return CheckedVideoReader(ref["path"], check=ref["check"], **kwargs)
        return VideoReader(ref["path"], storage_options=self.root.storage_options, **kwargs)

    def _read(self, ref: dict) -> bytes:
        return self._reader(ref).read_bytes()

    def _decode(self, name: str, ref: dict, sample_id: str) -> Any:
        ext = INTERMEDIATE_DIRS[name]
        if ext == ".mp4":
            return self._reader(ref, f"{ref['path']} ({name}/{sample_id})")
        data = self._read(ref)
        if ext == ".npz":
            return load_mask(data, name=f"{ref['path']} ({sample_id})")
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except OSError as e:
            raise SparkleDataError(f"unreadable image ({e})", path=ref["path"], sample_id=sample_id) from e
        return image
