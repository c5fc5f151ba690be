"""Where a dataset lives: a local folder, any fsspec URL, or a Hugging Face Hub repo.

Every read goes through one fsspec filesystem, so local folders, ``memory://``, ``file://``, ``s3://``
and ``hf://`` behave the same. Hub repos are either downloaded (only the files of the themes asked
for) or streamed through ``HfFileSystem``.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec

from .errors import SparkleDataError
from .layout import SHARD_RE

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class DataRoot:
    """A dataset root on some fsspec filesystem, addressed with repo-relative POSIX paths."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fs, self.path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.path = self.path.rstrip("/") or self.path

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol
        return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))

    def full(self, rel: str) -> str:
        return posixpath.join(self.path, rel) if self.path else rel

    def uri(self, rel: str) -> str:
        """A URL that ``fsspec.open`` (and so ``VideoReader``) can open from any process."""
        full = self.full(rel)
        if self.is_local:
            return full
        return self.fs.unstrip_protocol(full)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.full(rel))

    def isdir(self, rel: str) -> bool:
        return self.fs.isdir(self.full(rel))

    def open(self, rel: str, mode: str = "rb", **kwargs: Any) -> IO:
        return self.fs.open(self.full(rel), mode, **kwargs)

    def read_text(self, rel: str) -> str:
        with self.open(rel, "rb") as f:
            data = f.read()
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise SparkleDataError(f"not UTF-8 text ({e})", path=self.uri(rel)) from e

    def listdir(self, rel: str = "") -> list[str]:
        """Base names of the entries in a folder (empty when it does not exist)."""
        full = self.full(rel) if rel else self.path
        try:
            entries = self.fs.ls(full, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)

    def shards(self, theme: str, kind: str, folder: str = "") -> list[str]:
        """Repo-relative paths of ``{theme}_{kind}_video_partXX.tar``, in part order."""
        found = []
        for name in self.listdir(folder):
            m = SHARD_RE.match(name)
            if m and m["theme"] == theme and m["kind"] == kind:
                found.append((int(m["part"]), posixpath.join(folder, name) if folder else name))
        return [p for _, p in sorted(found)]


def looks_like_repo_id(source: str) -> bool:
    return bool(REPO_ID_RE.match(source)) and not os.path.exists(source)


def hub_stream_url(repo_id: str, revision: str | None = None) -> str:
    """``hf://datasets/{repo}[@rev]``: the ``HfFileSystem`` URL used for streaming from the Hub."""
    rev = f"@{revision}" if revision else ""
    return f"hf://datasets/{repo_id}{rev}"


def hub_download(
    repo_id: str,
    patterns: Sequence[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
) -> str:
    """Download only the files matching ``patterns`` of a dataset repo; return the local folder."""
    from huggingface_hub import snapshot_download

    return snapshot_download(
        repo_id,
        repo_type="dataset",
        allow_patterns=list(patterns),
        revision=revision,
        token=token,
        cache_dir=cache_dir,
    )


def hub_list_files(repo_id: str, *, revision: str | None = None, token: str | bool | None = None) -> list[str]:
    from huggingface_hub import HfApi

    return list(HfApi(token=token).list_repo_files(repo_id, repo_type="dataset", revision=revision))


def open_root(source: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> DataRoot:
    """A ``DataRoot`` for a local folder or URL, with a clear error when it does not exist."""
    src = os.fspath(source)
    if "://" not in src:
        if not os.path.isdir(src):
            raise SparkleDataError("dataset folder not found", path=src)
        src = os.path.abspath(src)
    root = DataRoot(src, dict(storage_options or {}))
    if "://" in src and not root.fs.exists(root.path):
        raise SparkleDataError("dataset location not found", path=src)
    return root
